"""The machinery of typed, frozen configuration: the base of every config table, TOML loading,
validation with errors that name the key, secret redaction and the fingerprint.

Each table lives beside what it configures (`LogConfig` in engine/log, `BusConfig` in
engine/bus, each source's in data/, each reducer's in analytics/) and builds on `ConfigBase`
from here; `mia.config` composes them into `mia.toml`.
Secrets never reach the log: the fingerprint recorded in `RecordingStarted` is a hash of the
config without them.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from pathlib import Path
from typing import TypeVar

import msgspec

from .errors import ConfigError

T = TypeVar("T")

SECRET_FIELDS = frozenset({"api_key", "username", "password", "server_secret", "client_secret"})


class ConfigBase(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every config table: frozen, typed, unknown keys are errors."""


def default_data_dir() -> str:
    return os.environ.get("MIA_DATA_DIR") or "./mia-data"


def load_toml(path: str | os.PathLike) -> dict:
    """The tables of a TOML file; errors name the file."""
    p = Path(path)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None


def convert(raw: dict, type_: type[T], *, source: str = "config") -> T:
    """Validate plain data into a config struct; errors name the source and the key's path."""
    try:
        return msgspec.convert(raw, type_)
    except msgspec.ValidationError as exc:
        # msgspec names the key and its path ("Object contains unknown field `x` - at `$.dtc[0]`");
        # values are not echoed, so a secret in a wrong place never reaches the message.
        raise ConfigError(f"{source}: {exc}") from None


def redacted(config: ConfigBase) -> dict:
    """The config as plain data with every secret blanked."""

    def scrub(value):
        if isinstance(value, dict):
            return {k: ("<redacted>" if k in SECRET_FIELDS and v else scrub(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    return scrub(msgspec.to_builtins(config))


def fingerprint(config: ConfigBase) -> str:
    """A short stable hash of the config without secrets, recorded in RecordingStarted."""
    body = msgspec.json.encode(redacted(config), order="sorted")
    return hashlib.sha256(body).hexdigest()[:16]
