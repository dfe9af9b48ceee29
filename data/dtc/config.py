"""`[[dtc]]` in mia.toml: one DTC connection (one Sierra Chart instance), and its credentials."""

from __future__ import annotations

import os
from typing import Literal

from mia.engine.config import ConfigBase

USERNAME_ENV = "MIA_DTC_USERNAME"
PASSWORD_ENV = "MIA_DTC_PASSWORD"


class DtcConfig(ConfigBase):
    """One DTC connection (one Sierra Chart instance)."""

    host: str = "127.0.0.1"
    port: int = 11099
    symbols: list[str] = []
    encoding: Literal["binary", "json", "compact_json"] = "binary"
    depth: int = 10
    heartbeat_s: float = 5.0
    username: str = ""  # secret; or MIA_DTC_USERNAME
    password: str = ""  # secret; or MIA_DTC_PASSWORD
    client_name: str = "mia"


def dtc_credentials(cfg: DtcConfig) -> tuple[str | None, str | None]:
    """Username and password: the config's, else the environment's, else None."""
    user = cfg.username or os.environ.get(USERNAME_ENV) or None
    password = cfg.password or os.environ.get(PASSWORD_ENV) or None
    return user, password
