"""The ``[bus]`` table and its ``[bus.curve]`` keys."""

from __future__ import annotations

import struct

from ..config import ConfigBase
from ..errors import ConfigError
from .wire import DEFAULT_ADDR

_KEY_FIELDS = ("server_public", "server_secret", "client_public", "client_secret")


class CurveConfig(ConfigBase):
    """ZeroMQ CURVE keys as z85 text (40 characters each). With them set, only holders of the
    client key can subscribe.

    The publisher needs the server pair and admits `client_public`; a subscriber needs
    `server_public` and the client pair. A side may leave the other side's secret empty; with
    no key at all (an empty ``[bus.curve]`` table) the bus runs without CURVE. The repr never
    shows a secret.
    """

    server_public: str = ""
    server_secret: str = ""  # secret
    client_public: str = ""
    client_secret: str = ""  # secret

    def __post_init__(self) -> None:
        for name in _KEY_FIELDS:
            _check_z85_key(name, getattr(self, name))

    def __repr__(self) -> str:
        return (f"CurveConfig(server_public={self.server_public!r}, "
                f"client_public={self.client_public!r}, secrets=<hidden>)")

    __str__ = __repr__

    @property
    def enabled(self) -> bool:
        """Whether any key is set: an empty table means no CURVE."""
        return any(getattr(self, name) for name in _KEY_FIELDS)


class BusConfig(ConfigBase):
    """The ``[bus]`` table: where `mia record` publishes, and with which keys."""

    enabled: bool = True
    address: str = DEFAULT_ADDR
    curve: CurveConfig | None = None


def curve_in_use(curve: CurveConfig | None) -> CurveConfig | None:
    """The keys a socket should use: None for no CURVE (none given, or an empty table);
    ConfigError when keys are given without the server's public key."""
    if curve is None or not curve.enabled:
        return None
    if not curve.server_public:
        raise ConfigError("bus curve key server_public is missing")
    return curve


def _check_z85_key(name: str, key: str) -> None:
    if not key:
        return
    from zmq.utils import z85  # pyzmq only once a key is configured

    # Never echo the key: it may be a secret.
    try:
        ok = len(key) == 40 and len(z85.decode(key.encode("ascii"))) == 32
    except (ValueError, UnicodeEncodeError, KeyError, struct.error):
        ok = False
    if not ok:
        raise ConfigError(f"bus curve key {name} is not a 40-character z85 CURVE key")


def generate_curve_keys() -> CurveConfig:
    """A fresh server key pair and client key pair."""
    import zmq

    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    return CurveConfig(
        server_public=server_public.decode("ascii"),
        server_secret=server_secret.decode("ascii"),
        client_public=client_public.decode("ascii"),
        client_secret=client_secret.decode("ascii"),
    )
