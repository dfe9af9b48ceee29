"""`[polygon]` in mia.toml: the options-chain source, its plan and its key."""

from __future__ import annotations

import os
from typing import Literal

import msgspec

from mia.engine.config import ConfigBase

API_KEY_ENV = "POLYGON_API_KEY"


class PolygonConfig(ConfigBase):
    enabled: bool = True
    base_url: str = "https://api.polygon.io"
    api_key: str = ""  # secret; or POLYGON_API_KEY
    plan: Literal["free", "starter", "developer", "advanced", "business"] = "starter"
    calls_per_minute: float | None = None  # overrides the plan's limit
    underlyings: list[str] = msgspec.field(default_factory=lambda: ["SPX", "NDX"])
    poll_s: float | None = None  # None: the fastest schedule the plan allows
    expiry_days: int = 45
    strike_window: float = 0.2
    timeout_s: float = 10.0


def polygon_api_key(cfg: PolygonConfig) -> str | None:
    """The key: the config's, else the environment's, else None."""
    return cfg.api_key or os.environ.get(API_KEY_ENV) or None
