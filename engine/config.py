"""Typed, frozen configuration loaded from TOML (`mia.toml`); unknown keys are errors.

Precedence: command-line flags, then the config file, then environment variables for secrets
(POLYGON_API_KEY, MIA_DTC_USERNAME, MIA_DTC_PASSWORD). Secrets never reach the log: the
config fingerprint recorded in `RecordingStarted` is a hash of the config without them.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from pathlib import Path
from typing import Literal

import msgspec

from .errors import ConfigError

SECRET_FIELDS = frozenset({"api_key", "username", "password", "server_secret", "client_secret"})


class _Base(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class DtcConfig(_Base):
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


class PolygonConfig(_Base):
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


class CurveConfig(_Base):
    """ZeroMQ CURVE keys (z85). With them set, only holders of the client key can subscribe."""

    server_public: str = ""
    server_secret: str = ""  # secret
    client_public: str = ""
    client_secret: str = ""  # secret


class BusConfig(_Base):
    enabled: bool = True
    address: str = "tcp://127.0.0.1:5556"
    curve: CurveConfig | None = None


class LogConfig(_Base):
    fsync: Literal["always", "interval", "never"] = "interval"
    fsync_interval_s: float = 1.0
    frame_max_events: int = 4096
    frame_max_ms: float = 100.0


class OrderflowSettings(_Base):
    bar_interval_s: float = 60.0
    imbalance_ratio: float = 3.0
    imbalance_min_volume: float = 10.0
    stacked_min: int = 3
    large_trade_min_size: float = 20.0
    large_trade_window_ms: float = 5.0
    book_levels: int = 5


class GammaSettings(_Base):
    dealer_convention: Literal["long_calls_short_puts", "short_calls_long_puts", "all_short"] = (
        "long_calls_short_puts"
    )
    grid_points: int = 400
    grid_width: float = 0.10


class MonitorSettings(_Base):
    """Data-quality thresholds (the trader's defaults) and the alert hook."""

    dtc_latency_ms: float = 10.0
    dtc_uptime: float = 0.999
    dtc_max_gap_fraction: float = 0.001
    polygon_latency_ms: float = 50.0
    polygon_uptime: float = 0.995
    polygon_max_error_rate: float = 0.01
    min_completeness: float = 0.998
    max_sync_ms: float = 100.0
    min_quality: float = 0.95
    disconnect_alert_s: float = 30.0
    window_s: float = 60.0
    on_alert: str = ""  # a command run with the alert as JSON on stdin
    quality_span_s: float = 600.0  # the quality alert looks at the windows of this trailing span


class Config(_Base):
    data_dir: str = ""  # empty: $MIA_DATA_DIR or ./mia-data
    dtc: list[DtcConfig] = []
    polygon: PolygonConfig = PolygonConfig()
    bus: BusConfig = BusConfig()
    log: LogConfig = LogConfig()
    orderflow: OrderflowSettings = OrderflowSettings()
    gamma: GammaSettings = GammaSettings()
    monitor: MonitorSettings = MonitorSettings()
    levels_file: str = ""  # Sierra Chart levels file to keep up to date while recording
    status_interval_s: float = 1.0


def default_data_dir() -> str:
    return os.environ.get("MIA_DATA_DIR") or "./mia-data"


def load_config(path: str | os.PathLike | None) -> Config:
    """Load and validate a TOML config; None gives the defaults. Errors name the file and key."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return config_from_dict(raw, source=str(p))


def config_from_dict(raw: dict, *, source: str = "config") -> Config:
    try:
        return msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        # msgspec names the key and its path ("Object contains unknown field `x` - at `$.dtc[0]`");
        # values are not echoed, so a secret in a wrong place never reaches the message.
        raise ConfigError(f"{source}: {exc}") from None


def redacted(config: Config) -> dict:
    """The config as plain data with every secret blanked."""

    def scrub(value):
        if isinstance(value, dict):
            return {k: ("<redacted>" if k in SECRET_FIELDS and v else scrub(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    return scrub(msgspec.to_builtins(config))


def fingerprint(config: Config) -> str:
    """A short stable hash of the config without secrets, recorded in RecordingStarted."""
    body = msgspec.json.encode(redacted(config), order="sorted")
    return hashlib.sha256(body).hexdigest()[:16]


def dtc_credentials(cfg: DtcConfig) -> tuple[str | None, str | None]:
    """Username and password: the config's, else the environment's, else None."""
    user = cfg.username or os.environ.get("MIA_DTC_USERNAME") or None
    password = cfg.password or os.environ.get("MIA_DTC_PASSWORD") or None
    return user, password


def polygon_api_key(cfg: PolygonConfig) -> str | None:
    return cfg.api_key or os.environ.get("POLYGON_API_KEY") or None


EXAMPLE_TOML = """\
# mia.toml: every key is optional; unknown keys are errors.
data_dir = "./mia-data"          # or $MIA_DATA_DIR
levels_file = "C:/SierraChart/Data/mia-levels.txt"

[log]
fsync = "interval"               # always | interval | never
fsync_interval_s = 1.0

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

[polygon]
underlyings = ["SPX", "NDX"]
plan = "starter"                 # free/starter: 5 calls a minute
# api_key: prefer POLYGON_API_KEY in the environment

[bus]
address = "tcp://127.0.0.1:5556"

[orderflow]
bar_interval_s = 60
imbalance_ratio = 3.0

[gamma]
dealer_convention = "long_calls_short_puts"
"""
