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
    # Chains fetched only at these New York times ("15:45"), each with all its pages; empty:
    # continuous polling as fast as the plan allows. Suits plans with few calls (free: 5 a minute).
    snapshot_times: list[str] = []
    # GET /v3/snapshot/indices for these tickers beside the chains (empty: none)
    index_tickers: list[str] = msgspec.field(default_factory=lambda: ["I:SPX", "I:NDX", "I:VIX"])
    indices_poll_s: float | None = None  # None: a share of the plan's budget (see poller)
    # WebSocket streams (plans with WebSockets, e.g. Advanced): every option trade of the
    # underlyings' roots (SPX/SPXW, NDX/NDXP), quotes of the `stream_quotes` contracts nearest the
    # money on the `stream_quote_expiries` nearest expiries, and index values; one connection per
    # cluster. `mia record --polygon-ws-url ws://HOST:PORT` turns them on too.
    stream: bool = False
    stream_url: str = "wss://socket.polygon.io"  # delayed plans: "wss://delayed.polygon.io"
    stream_quotes: int = 500  # at most 1,000: Polygon's quoted contracts per connection
    stream_quote_expiries: int = 2
    stream_index_tickers: list[str] = msgspec.field(default_factory=lambda: ["I:SPX", "I:NDX", "I:VIX"])

    def __post_init__(self) -> None:
        for t in self.snapshot_times:
            parse_hhmm(t)
        if not 0 <= self.stream_quotes <= 1000:
            raise ValueError(f"stream_quotes = {self.stream_quotes}: Polygon quotes at most 1,000 contracts "
                             "per connection (0 for none)")
        if not self.stream_url.startswith(("ws://", "wss://")):
            raise ValueError(f"stream_url = {self.stream_url!r} is not a ws:// or wss:// URL")


def parse_hhmm(text: str) -> tuple[int, int]:
    """ "15:45" -> (15, 45); anything else raises ValueError naming it."""
    hh, sep, mm = text.partition(":")
    if not (sep and hh.isdigit() and mm.isdigit() and len(mm) == 2 and 0 <= int(hh) < 24 and 0 <= int(mm) < 60):
        raise ValueError(f"snapshot time {text!r} is not HH:MM (New York time, e.g. \"15:45\")")
    return int(hh), int(mm)


def polygon_api_key(cfg: PolygonConfig) -> str | None:
    """The key: the config's, else the environment's, else None."""
    return cfg.api_key or os.environ.get(API_KEY_ENV) or None
