"""`[[dtc]]` in mia.toml: one DTC connection (one Sierra Chart instance), and its credentials."""

from __future__ import annotations

import datetime as dt
import os
from typing import Literal

from mia.data.cfe import vx_symbols
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
    # The broker's name of the VIX index ("VIX", "$VIX"; empty: none). Subscribed beside
    # `symbols`; when it sends nothing for `vix_backup_after_s` while Polygon's I:VIX is there,
    # the recorder switches to Polygon (a SourceError says so, and another when DTC is back).
    vix_symbol: str = ""
    vix_backup_after_s: float = 30.0
    # Subscribe the front N monthly VX futures too: symbols from mia.data.cfe.vx_symbols(today, N)
    vx_months: int = 0

    def all_symbols(self, day: dt.date) -> list[str]:
        """`symbols`, then the VIX index and the front `vx_months` VX contracts on `day`, once each."""
        out = list(self.symbols)
        extra = ([self.vix_symbol] if self.vix_symbol else []) + vx_symbols(day, self.vx_months)
        out += [s for s in extra if s not in out]
        return out


def dtc_credentials(cfg: DtcConfig) -> tuple[str | None, str | None]:
    """Username and password: the config's, else the environment's, else None."""
    user = cfg.username or os.environ.get(USERNAME_ENV) or None
    password = cfg.password or os.environ.get(PASSWORD_ENV) or None
    return user, password
