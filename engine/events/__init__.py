"""The event catalogue: every fact mia records or derives, as one tagged union.

The events live in base (constants, the Event base), market, plumbing and derived; this module
is the union, its tables and the codec. See base for the schema rules and conventions.
"""

from __future__ import annotations

from typing import Final, Union

import msgspec

from .base import *
from .derived import *
from .market import *
from .plumbing import *

AnyEvent = Union[
    RecordingStarted,
    RecordingEnded,
    Instrument,
    Trade,
    Quote,
    BookLevel,
    SessionStat,
    DtcRaw,
    PolygonResponse,
    FeedStatus,
    Gap,
    SourceError,
    Heartbeat,
    GammaLevels,
    OrderflowBar,
    Alert,
    TermStructure,
    IvSurface,
    ChainSnapshot,
    OptionTrade,
    OptionQuote,
    IndexValue,
    PolygonStreamFrame,
    OptionFlow,
    UnusualTrade,
]

EVENT_TYPES: Final[tuple[type[Event], ...]] = AnyEvent.__args__  # type: ignore[attr-defined]
KIND_OF: Final[dict[type[Event], int]] = {t: t.__struct_config__.tag for t in EVENT_TYPES}
TYPE_OF_KIND: Final[dict[int, type[Event]]] = {k: t for t, k in KIND_OF.items()}
KIND_NAMES: Final[dict[int, str]] = {k: t.__name__ for t, k in KIND_OF.items()}
KIND_BY_NAME: Final[dict[str, int]] = {t.__name__: k for t, k in KIND_OF.items()}
MARKET_KINDS: Final = frozenset({K_TRADE, K_QUOTE, K_BOOK_LEVEL, K_SESSION_STAT})
# what every recording before RecordingStarted.derived_kinds could emit
LEGACY_DERIVED_KINDS: Final = frozenset({K_GAMMA_LEVELS, K_ORDERFLOW_BAR, K_ALERT})
DERIVED_KINDS: Final = frozenset({K_GAMMA_LEVELS, K_ORDERFLOW_BAR, K_ALERT, K_TERM_STRUCTURE,
                                  K_IV_SURFACE, K_OPTION_FLOW, K_UNUSUAL_TRADE})


def kind_of(event: Event) -> int:
    """The kind (tag) of an event."""
    return KIND_OF[type(event)]


def instrument_of(event: Event) -> int:
    """The event's instrument id, or -1 for events that have none."""
    return getattr(event, "instrument", -1)


class EventCodec:
    """The one reused msgpack encoder/decoder for events and lists of events.

    Not thread-safe (msgspec encoders keep a buffer); make one per thread.
    """

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._one = msgspec.msgpack.Decoder(AnyEvent)
        self._many = msgspec.msgpack.Decoder(list[AnyEvent])
        # the encoder's own C method: hot paths (the writer, the publisher) call it per event,
        # without the ~80 ns of a Python wrapper frame
        self.encode_fast = self._encoder.encode

    def encode(self, event: Event) -> bytes:
        return self._encoder.encode(event)

    def encode_many(self, events: list[Event]) -> bytes:
        """Encode a list of events as one msgpack array (one log frame's payload)."""
        return self._encoder.encode(events)

    def encode_many_into(self, events: list[Event], buf: bytearray) -> None:
        self._encoder.encode_into(events, buf)

    def decode(self, data: bytes | memoryview) -> Event:
        return self._one.decode(data)

    def decode_many(self, data: bytes | memoryview) -> list[Event]:
        return self._many.decode(data)


# Upcasts run on read when a segment's schema version is older than SCHEMA_VERSION:
# {old_version: function(raw msgpack payload bytes) -> bytes at old_version + 1}. Empty while
# the schema has only grown compatibly.
UPCASTS: Final[dict[int, object]] = {}


def to_builtins(event: Event) -> dict:
    """The event as a plain dict with its kind name, for JSON output and the bus."""
    out = {"kind": type(event).__name__}
    for name in event.__struct_fields__:
        value = getattr(event, name)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        out[name] = value
    return out
