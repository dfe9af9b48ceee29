"""What travels on the bus: three frames per event, and the names both ends agree on.

``[topic, seq, payload]``

- ``topic``: ``b"<KindName>.<symbol>"`` (``Trade.ESZ5``, ``GammaLevels.SPX``), or just
  ``b"<KindName>"`` when the event names no instrument or underlying. ZeroMQ filters by byte
  prefix, so ``"Trade.ES"`` receives every ES trade and ``"Trade"`` every trade.
- ``seq``: 8 bytes, one big-endian uint64 ``stream_id << 56 | seq << 16 | topic_seq``:
  byte 0 is the stream (1 ``live``, 2 ``derived``, 0 any other stream, received as ``other``),
  bytes 1-5 the event's log sequence number in that stream and UTC day (40 bits), bytes 6-7
  a per-topic counter modulo 65536 kept by the publisher since it started, so a subscriber that
  filters topics can still see what it lost (its stream seqs are not contiguous).
- ``payload``: the event encoded by ``EventCodec`` (msgpack; never pickle).
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from ..errors import MiaError
from ..events import KIND_OF, Event, Instrument

DEFAULT_ADDR: Final = "tcp://127.0.0.1:5556"  # loopback: never all interfaces unless asked

STREAM_IDS: Final[dict[str, int]] = {"live": 1, "derived": 2}
STREAM_NAMES: Final[dict[int, str]] = {v: k for k, v in STREAM_IDS.items()}
OTHER_STREAM: Final = "other"  # any stream without an id of its own travels as id 0

SEQ_BITS: Final = 40
MAX_SEQ: Final = (1 << SEQ_BITS) - 1
TOPIC_SEQ_MOD: Final = 1 << 16
_SEQ_FRAME = struct.Struct(">Q")
_pack_u64 = _SEQ_FRAME.pack
_STREAM_BITS: Final[dict[str, int]] = {name: sid << 56 for name, sid in STREAM_IDS.items()}


class BusError(MiaError):
    """The bus could not bind, connect or deliver; names the address."""


class BusAddressInUseError(BusError):
    """Another socket already holds the address the publisher was asked to bind."""

    def __init__(self, addr: str) -> None:
        self.addr = addr
        super().__init__(f"bus address {addr} is already in use (is another mia publishing?)")


class BusMessage(NamedTuple):
    """One event off the bus (or, in a catch-up, out of the log), with where it sits."""

    topic: str
    stream: str
    seq: int
    event: Event


def pack_seq(stream: str, seq: int, topic_seq: int = 0) -> bytes:
    """The 8-byte seq frame (module docstring); BusError when `seq` does not fit 40 bits."""
    # every published event comes through here: module names bound, one dict lookup
    if not 0 <= seq <= MAX_SEQ:
        raise BusError(f"bus seq {seq} of stream {stream!r} is outside 0..{MAX_SEQ}")
    return _pack_u64(_STREAM_BITS.get(stream, 0) | seq << 16 | (topic_seq & 0xFFFF))


def unpack_seq(frame: bytes) -> tuple[str, int, int]:
    """(stream, seq, topic_seq) from an 8-byte seq frame."""
    (value,) = _SEQ_FRAME.unpack(frame)
    return STREAM_NAMES.get(value >> 56, OTHER_STREAM), (value >> 16) & MAX_SEQ, value & 0xFFFF


class TopicNamer:
    """Names each event's topic: ``KindName.symbol``, symbols learnt from `Instrument` events.

    The publisher and the catch-up's log side share this code so they filter alike.
    """

    def __init__(self) -> None:
        self._symbols: dict[int, str] = {}
        self._cache: dict[tuple[type, int], bytes] = {}
        self._kind_names = {t: t.__name__ for t in KIND_OF}

    def topic(self, event: Event) -> bytes:
        etype = type(event)
        if etype is Instrument:
            self._learn(event)
        instrument = getattr(event, "instrument", -1)
        if instrument >= 0:
            key = (etype, instrument)
            topic = self._cache.get(key)
            if topic is None:
                topic = self._name(etype, self._symbols.get(instrument, ""))
                self._cache[key] = topic
            return topic
        return self._name(etype, getattr(event, "underlying", ""))

    def _learn(self, event: Instrument) -> None:
        if self._symbols.get(event.instrument) != event.symbol:
            self._symbols[event.instrument] = event.symbol
            self._cache.clear()

    def _name(self, etype: type, suffix: str) -> bytes:
        name = self._kind_names[etype]
        return f"{name}.{suffix}".encode() if suffix else name.encode()
