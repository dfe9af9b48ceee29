"""`mia.toml`, composed: each table is owned by what it configures and gathered here, at the top.

    [log]        mia.engine.log        (fsync policy, frame sizes)
    [storage]    mia.engine.storage    (S3-compatible endpoint for s3:// data dirs)
    [bus]        mia.engine.bus        (address, CURVE keys)
    [[dtc]]      mia.data.dtc          (one table per Sierra Chart instance)
    [[sierra]]   mia.data.sierra       (Sierra Chart's own files, followed while recording)
    [polygon]    mia.data.polygon      (plan, underlyings, key)
    [orderflow]  mia.analytics.orderflow
    [gamma]      mia.analytics.gamma
    [monitor]    mia.analytics.monitor
    [volatility] mia.analytics.volatility
    [flow]       mia.analytics.flow    (option flow bars, unusual-trade thresholds)

Precedence: command-line flags, then the config file, then environment variables for secrets
(POLYGON_API_KEY, MIA_DTC_USERNAME, MIA_DTC_PASSWORD). Unknown keys are errors.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from mia.analytics.flow import FlowConfig
from mia.analytics.gamma import GammaConfig
from mia.analytics.monitor import MonitorConfig
from mia.analytics.orderflow import OrderflowConfig
from mia.analytics.volatility import VolatilityConfig
from mia.data.dtc.config import DtcConfig
from mia.data.polygon.config import PolygonConfig
from mia.data.sierra.config import SierraConfig
from mia.engine.bus import BusConfig
from mia.engine.config import ConfigBase, convert, load_toml
from mia.engine.log import LogConfig
from mia.engine.storage import StorageConfig

DEFAULT_CONFIG_FILE = "mia.toml"
DATA_DIR_ENV = "MIA_DATA_DIR"
DEFAULT_DATA_DIR = "./mia-data"


class AnalyticsConfig(ConfigBase):
    """The reducer tables alone: what the fold needs, and what `--check` must match."""

    orderflow: OrderflowConfig = OrderflowConfig()
    gamma: GammaConfig = GammaConfig()
    monitor: MonitorConfig = MonitorConfig()
    volatility: VolatilityConfig = VolatilityConfig()
    flow: FlowConfig = FlowConfig()


class Config(ConfigBase):
    data_dir: str = ""  # empty: $MIA_DATA_DIR or ./mia-data
    dtc: list[DtcConfig] = []
    sierra: list[SierraConfig] = []  # Sierra Chart data folders to follow (.scid, .depth)
    polygon: PolygonConfig = PolygonConfig()
    bus: BusConfig = BusConfig()
    log: LogConfig = LogConfig()
    storage: StorageConfig = StorageConfig()
    orderflow: OrderflowConfig = OrderflowConfig()
    gamma: GammaConfig = GammaConfig()
    monitor: MonitorConfig = MonitorConfig()
    volatility: VolatilityConfig = VolatilityConfig()
    flow: FlowConfig = FlowConfig()
    levels_file: str = ""  # Sierra Chart levels file to keep up to date while recording
    status_interval_s: float = 1.0

    @property
    def analytics(self) -> AnalyticsConfig:
        vol = self.volatility  # the DTC name of the VIX index ([[dtc]] vix_symbol) is a VIX too
        extra = [d.vix_symbol for d in self.dtc if d.vix_symbol and d.vix_symbol not in vol.vix_symbols]
        if extra:
            vol = msgspec.structs.replace(vol, vix_symbols=[*vol.vix_symbols, *extra])
        return AnalyticsConfig(orderflow=self.orderflow, gamma=self.gamma, monitor=self.monitor,
                               volatility=vol, flow=self.flow)

    def replace(self, **changes) -> "Config":
        return msgspec.structs.replace(self, **changes)


def default_data_dir() -> str:
    return os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR


def config_path(path: str | os.PathLike | None) -> Path | None:
    """The config file a command reads: the one named, else ./mia.toml when it exists."""
    if path is not None:
        return Path(path)
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def load_config(path: str | os.PathLike | None = None, *, find: bool = False) -> Config:
    """Load and validate a TOML config; None gives the defaults (or ./mia.toml with `find`).
    Errors name the file and key."""
    p = config_path(path) if find else (Path(path) if path is not None else None)
    if p is None:
        return Config()
    return config_from_dict(load_toml(p), source=str(p))


def config_from_dict(raw: dict, *, source: str = "config") -> Config:
    return convert(raw, Config, source=source)


EXAMPLE_TOML = """\
# mia.toml: every key is optional; unknown keys are errors.
data_dir = "./mia-data"          # or $MIA_DATA_DIR
levels_file = "C:/SierraChart/Data/mia-levels.txt"

[log]
fsync = "interval"               # always | interval | never
fsync_interval_s = 1.0

[storage]                        # reading s3:// data dirs and `mia push` (S3-compatible stores)
endpoint_url = ""                # e.g. "http://127.0.0.1:9000" (MinIO); AWS_ENDPOINT_URL wins

[[dtc]]                          # one block per Sierra Chart instance
host = "127.0.0.1"
port = 11099
symbols = ["ESZ6"]
depth = 10
# username/password: prefer MIA_DTC_USERNAME / MIA_DTC_PASSWORD in the environment

[[dtc]]
host = "127.0.0.1"
port = 11100
symbols = ["NQZ6"]

[[sierra]]                       # follow Sierra's own files (when DTC will not relay CME data)
data_dir = "C:/SierraChart/Data"
symbols = ["ESZ6", "NQZ6"]       # <data_dir>/<symbol>.scid and MarketDepthData/<symbol>.<date>.depth

[polygon]
underlyings = ["SPX", "NDX"]
plan = "starter"                 # free: 5 calls a minute; paid plans: unlimited (mia caps them)
# api_key: prefer POLYGON_API_KEY in the environment

[bus]
address = "tcp://127.0.0.1:5556"

[orderflow]
bar_interval_s = 60
imbalance_ratio = 3.0

[gamma]
dealer_convention = "long_calls_short_puts"

[flow]                           # option flow from the Polygon streams (OptionFlow, UnusualTrade)
bar_interval_s = 60
unusual_premium = 100000.0       # dollars
unusual_size = 1000.0            # contracts
sweep_conditions = [219]         # Polygon's options condition "Intermarket Sweep Order"
"""
