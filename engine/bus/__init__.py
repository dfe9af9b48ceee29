"""The event bus: ZeroMQ PUB/SUB downstream of the log, and the log-then-live catch-up join.

The log is the truth; the socket is a view. Every message is ``[topic, seq, payload]``
(`wire`). `Publisher` sends (`publisher`), `Subscriber` receives and detects gaps
(`subscriber`), `catch_up` joins a running recording from its log (`catchup`). `BusConfig` and
`CurveConfig` are the ``[bus]`` table (`config`).

The socket modules load on first use: the config and the wire names are imported by commands
that never open a socket, and pyzmq costs ~30 ms to import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import BusConfig, CurveConfig, generate_curve_keys
from .wire import (
    DEFAULT_ADDR,
    MAX_SEQ,
    OTHER_STREAM,
    SEQ_BITS,
    STREAM_IDS,
    STREAM_NAMES,
    TOPIC_SEQ_MOD,
    BusAddressInUseError,
    BusError,
    BusMessage,
    TopicNamer,
    pack_seq,
    unpack_seq,
)

if TYPE_CHECKING:
    from .catchup import CatchUp, catch_up
    from .publisher import Publisher
    from .subscriber import RawMessage, Subscriber, tail, tail_line

_SOCKET_NAMES = {
    "Publisher": ".publisher",
    "Subscriber": ".subscriber",
    "RawMessage": ".subscriber",
    "tail": ".subscriber",
    "tail_line": ".subscriber",
    "CatchUp": ".catchup",
    "catch_up": ".catchup",
}


def __getattr__(name: str) -> Any:
    module = _SOCKET_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # found directly from now on
    return value


__all__ = [
    "DEFAULT_ADDR",
    "MAX_SEQ",
    "OTHER_STREAM",
    "SEQ_BITS",
    "STREAM_IDS",
    "STREAM_NAMES",
    "TOPIC_SEQ_MOD",
    "BusAddressInUseError",
    "BusConfig",
    "BusError",
    "BusMessage",
    "CatchUp",
    "CurveConfig",
    "Publisher",
    "RawMessage",
    "Subscriber",
    "TopicNamer",
    "catch_up",
    "generate_curve_keys",
    "pack_seq",
    "tail",
    "tail_line",
    "unpack_seq",
]
