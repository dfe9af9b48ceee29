"""The event bus: ZeroMQ PUB/SUB downstream of the log, and the log-then-live catch-up join.

The log is the truth; the socket is a view. Every message is three frames:

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

`catch_up` joins the day's log and the live stream without a gap or a duplicate, the way kdb+'s
replay-then-subscribe and Aeron's replay merge do: subscribe first (the socket buffers), read the
log, then switch to live, and whenever the live stream jumps ahead of what was delivered, read the
missing seqs from the log (following it until the writer has closed the frame that holds them).
"""

from __future__ import annotations

import datetime as dt
import heapq
import logging
import struct
import time
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final, NamedTuple

import msgspec
import zmq
import zmq.auth.thread
from zmq.utils import z85

from mia.engine.errors import ConfigError, MiaError, NoDataError
from mia.engine.events import (
    KIND_OF,
    Event,
    EventCodec,
    Instrument,
    to_builtins,
)

logger = logging.getLogger(__name__)

DEFAULT_ADDR: Final = "tcp://127.0.0.1:5556"

STREAM_IDS: Final[dict[str, int]] = {"live": 1, "derived": 2}
STREAM_NAMES: Final[dict[int, str]] = {v: k for k, v in STREAM_IDS.items()}
OTHER_STREAM: Final = "other"  # any stream without an id of its own travels as id 0

SEQ_BITS: Final = 40
MAX_SEQ: Final = (1 << SEQ_BITS) - 1
TOPIC_SEQ_MOD: Final = 1 << 16
_SEQ_MASK: Final = MAX_SEQ
_PACK_SEQ = struct.Struct(">Q")

DEFAULT_SNDHWM: Final = 100_000
DEFAULT_RCVHWM: Final = 100_000
CATCH_UP_RCVHWM: Final = 1_000_000  # the socket buffers live messages while the log is read
DEFAULT_LINGER_MS: Final = 1_000
LOG_POLL_S: Final = 0.01  # the writer closes frames within ~100 ms; poll well inside that
LOG_IDLE_CHECK_S: Final = 0.25  # a socket quiet this long: look in the log for lost tails
HINT_SLACK_NS: Final = 5_000_000_000  # re-read the log from a little before the last event seen
_ALL_INTERFACES: Final = ("tcp://*", "tcp://0.0.0.0", "tcp://[::]", "tcp://::")


class BusError(MiaError):
    """The bus could not bind, connect or deliver; names the address."""


class BusAddressInUseError(BusError):
    """Another socket already holds the address the publisher was asked to bind."""

    def __init__(self, addr: str) -> None:
        self.addr = addr
        super().__init__(f"bus address {addr} is already in use (is another mia publishing?)")


# --- CURVE keys -------------------------------------------------------------------------------


class CurveKeys(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """ZeroMQ CURVE keys as z85 text (40 characters each), as they sit in the config.

    The publisher needs the server pair and admits `client_public` plus `allowed_clients`; a
    subscriber needs `server_public` and the client pair. A side may leave the other side's secret
    empty. The repr never shows a secret.
    """

    server_public: str
    server_secret: str = ""
    client_public: str = ""
    client_secret: str = ""
    allowed_clients: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("server_public", "server_secret", "client_public", "client_secret"):
            _check_z85_key(name, getattr(self, name), required=name == "server_public")
        for i, key in enumerate(self.allowed_clients):
            _check_z85_key(f"allowed_clients[{i}]", key, required=True)

    def __repr__(self) -> str:
        return (f"CurveKeys(server_public={self.server_public!r}, "
                f"client_public={self.client_public!r}, secrets=<hidden>)")

    __str__ = __repr__

    @classmethod
    def from_config(cls, config: Any) -> CurveKeys | None:
        """Keys from the config's ``[bus.curve]`` table (`engine.config.CurveConfig`); None when
        the table is absent or names no server key (the bus then runs without CURVE)."""
        if config is None or not getattr(config, "server_public", ""):
            return None
        return cls(
            server_public=config.server_public,
            server_secret=getattr(config, "server_secret", ""),
            client_public=getattr(config, "client_public", ""),
            client_secret=getattr(config, "client_secret", ""),
            allowed_clients=tuple(getattr(config, "allowed_clients", ())),
        )

    def admitted_clients(self) -> frozenset[bytes]:
        """The z85 client public keys the publisher lets in."""
        keys = set(self.allowed_clients)
        if self.client_public:
            keys.add(self.client_public)
        return frozenset(k.encode("ascii") for k in keys)


def _check_z85_key(name: str, key: str, *, required: bool) -> None:
    if not key:
        if required:
            raise ConfigError(f"bus curve key {name} is missing")
        return
    # Never echo the key: it may be a secret.
    try:
        ok = len(key) == 40 and len(z85.decode(key.encode("ascii"))) == 32
    except (ValueError, UnicodeEncodeError, KeyError, struct.error):
        ok = False
    if not ok:
        raise ConfigError(f"bus curve key {name} is not a 40-character z85 CURVE key")


def generate_curve_keys() -> CurveKeys:
    """A fresh server key pair and client key pair."""
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    return CurveKeys(
        server_public=server_public.decode("ascii"),
        server_secret=server_secret.decode("ascii"),
        client_public=client_public.decode("ascii"),
        client_secret=client_secret.decode("ascii"),
    )


class _AdmitKeys:
    """ZAP credentials provider: admits exactly the configured client public keys."""

    def __init__(self, keys: frozenset[bytes]) -> None:
        self._keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        allowed = key in self._keys
        if not allowed:
            logger.warning("bus curve client refused domain=%s", domain or "*")
        return allowed


# --- topics and sequence frames ---------------------------------------------------------------


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


def pack_seq(stream: str, seq: int, topic_seq: int = 0) -> bytes:
    """The 8-byte seq frame (module docstring)."""
    if not 0 <= seq <= MAX_SEQ:
        raise BusError(f"bus seq {seq} of stream {stream!r} is outside 0..{MAX_SEQ}")
    sid = STREAM_IDS.get(stream, 0)
    return _PACK_SEQ.pack(sid << 56 | seq << 16 | (topic_seq % TOPIC_SEQ_MOD))


def unpack_seq(frame: bytes) -> tuple[str, int, int]:
    """(stream, seq, topic_seq) from an 8-byte seq frame."""
    (value,) = _PACK_SEQ.unpack(frame)
    return STREAM_NAMES.get(value >> 56, OTHER_STREAM), (value >> 16) & _SEQ_MASK, value & 0xFFFF


_SNDMORE: Final = int(zmq.SNDMORE)


def _frame_sender(sock: zmq.Socket) -> Callable[[bytes, int], Any]:
    """`sock.send(frame, flags)` as directly as pyzmq allows: the Cython base method when the
    socket has it (the Python-level wrapper adds ~1 µs per frame), else the socket's own."""
    base = getattr(zmq.backend, "Socket", None)
    if base is not None and isinstance(sock, base) and hasattr(base, "send"):
        return types.MethodType(base.send, sock)
    return sock.send


def _bind_address(addr: str) -> str:
    # ZeroMQ spells "any free port" as "*"; accept the usual ":0" too.
    return addr[:-2] + ":*" if addr.startswith("tcp://") and addr.endswith(":0") else addr


# --- publisher --------------------------------------------------------------------------------


class Publisher:
    """A PUB socket that sends events downstream of the log. Use from one thread.

    Binds `addr` (loopback by default; all interfaces only when the address says so). A slow
    subscriber past `sndhwm` queued messages loses messages (ZeroMQ drops, never blocks); it sees
    the loss by seq.
    """

    def __init__(
        self,
        addr: str = DEFAULT_ADDR,
        *,
        curve: CurveKeys | None = None,
        sndhwm: int = DEFAULT_SNDHWM,
        context: zmq.Context | None = None,
        linger_ms: int = DEFAULT_LINGER_MS,
    ) -> None:
        self._own_context = context is None
        self._context = zmq.Context() if context is None else context
        self._auth: zmq.auth.thread.ThreadAuthenticator | None = None
        self._socket: zmq.Socket | None = None
        self._codec = EventCodec()
        self._namer = TopicNamer()
        self._topic_seqs: dict[bytes, int] = {}
        self._subscribed: set[bytes] = set()
        self.subscriptions = 0  # subscriptions seen by wait_for_subscriber
        self.sent = 0
        try:
            self._socket = self._open(addr, curve, sndhwm, linger_ms)
        except BaseException:
            self.close()
            raise
        self.addr = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._send = self._socket.send_multipart
        self._send_frame = _frame_sender(self._socket)
        self._encode = self._codec.encode
        logger.info("bus publishing addr=%s curve=%s", self.addr, curve is not None)

    def _open(self, addr: str, curve: CurveKeys | None, sndhwm: int, linger_ms: int) -> zmq.Socket:
        if addr.startswith(_ALL_INTERFACES) and curve is None:
            logger.warning("bus binds all interfaces without CURVE addr=%s", addr)
        # XPUB sends like PUB and also hands us subscriptions, so a caller can wait for a
        # subscriber before publishing (ZeroMQ's slow-joiner problem).
        sock = self._context.socket(zmq.XPUB)
        sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        sock.setsockopt(zmq.SNDHWM, sndhwm)
        sock.setsockopt(zmq.LINGER, linger_ms)
        if curve is not None:
            if not curve.server_secret:
                sock.close(linger=0)
                raise ConfigError("bus curve: the publisher needs server_secret")
            self._start_authenticator(curve)
            sock.curve_server = True
            sock.curve_publickey = curve.server_public.encode("ascii")
            sock.curve_secretkey = curve.server_secret.encode("ascii")
        try:
            sock.bind(_bind_address(addr))
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            if exc.errno == zmq.EADDRINUSE:
                raise BusAddressInUseError(addr) from None
            raise BusError(f"bus cannot bind {addr}: {exc.strerror}") from None
        return sock

    def _start_authenticator(self, curve: CurveKeys) -> None:
        auth = zmq.auth.thread.ThreadAuthenticator(self._context, log=logger)
        try:
            auth.start()
        except zmq.ZMQError as exc:
            raise BusError(
                f"bus curve: cannot start the ZAP authenticator ({exc.strerror}); "
                "one CURVE publisher per ZeroMQ context") from None
        self._auth = auth
        auth.configure_curve_callback("*", credentials_provider=_AdmitKeys(curve.admitted_clients()))

    def wait_for_subscriber(self, topic_prefix: str | None = None, timeout_s: float = 5.0) -> bool:
        """Wait until a subscription (to `topic_prefix`, if given) reaches this publisher.

        True when one came within `timeout_s`. Subscriptions made before the call count too.
        """
        want = None if topic_prefix is None else topic_prefix.encode()
        if want is None and self.subscriptions:
            return True
        if want is not None and want in self._subscribed:
            return True
        deadline = time.monotonic() + timeout_s
        while True:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0 or not self._socket.poll(remaining_ms):  # type: ignore[union-attr]
                return False
            frame = self._socket.recv()  # type: ignore[union-attr]
            if frame[:1] == b"\x01":
                self.subscriptions += 1
                self._subscribed.add(frame[1:])
                if want is None or frame[1:] == want:
                    return True

    def publish(self, stream: str, seq: int, event: Event) -> None:
        """Send one event with its log seq in `stream`."""
        self.publish_rows(stream, ((seq, event),))

    def publish_many(self, stream: str, first_seq: int, events: Iterable[Event]) -> None:
        """Send events whose seqs run from `first_seq` upwards."""
        self.publish_rows(stream, enumerate(events, first_seq))

    def publish_rows(self, stream: str, rows: Iterable[tuple[int, Event]]) -> None:
        """Send `(seq, event)` rows in order, one message each (the live path: a writer's rows,
        whose seqs restart at a UTC-day rollover)."""
        # Hot path (every recorded event): names bound once, frames sent one by one with plain
        # int flags (send_multipart's per-frame flag enums cost more than the send itself).
        stream_bits = STREAM_IDS.get(stream, 0) << 56
        topic_of = self._namer.topic
        topic_seqs = self._topic_seqs
        pack, encode, send = _PACK_SEQ.pack, self._encode, self._send_frame
        sent = 0
        try:
            for seq, event in rows:
                if not 0 <= seq <= MAX_SEQ:
                    raise BusError(f"bus seq {seq} of stream {stream!r} is outside 0..{MAX_SEQ}")
                topic = topic_of(event)
                topic_seq = topic_seqs.get(topic, 0)
                topic_seqs[topic] = topic_seq + 1
                payload = encode(event)
                send(topic, _SNDMORE)
                send(pack(stream_bits | seq << 16 | (topic_seq & 0xFFFF)), _SNDMORE)
                send(payload, 0)
                sent += 1
        finally:
            self.sent += sent

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._own_context and self._context is not None:
            self._context.term()
            self._context = None

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- subscriber -------------------------------------------------------------------------------


class BusMessage(NamedTuple):
    """One event off the bus (or, in a catch-up, out of the log), with where it sits."""

    topic: str
    stream: str
    seq: int
    event: Event


class _RawMessage(NamedTuple):
    topic: bytes
    stream: str
    seq: int
    topic_seq: int
    payload: bytes


class Subscriber:
    """A SUB socket connected to a publisher, with gap detection. Use from one thread.

    `gaps` lists ``(stream, expected_seq, got_seq)``. Subscribed to everything, the seqs missed are
    exactly ``range(expected, got)``. Subscribed to some topics only, a gap is reported when a
    topic's counter jumps; its seqs were then lost somewhere in ``range(expected, got)``, where
    `expected` follows the last seq received on that topic. A seq going backwards (a new UTC day,
    a publisher restarted from seq 0) is a reset, counted in `resets`, not a gap.
    """

    def __init__(
        self,
        addr: str = DEFAULT_ADDR,
        topics: Sequence[str] = ("",),
        *,
        curve: CurveKeys | None = None,
        rcvhwm: int = DEFAULT_RCVHWM,
        context: zmq.Context | None = None,
    ) -> None:
        if isinstance(topics, str):
            topics = (topics,)
        self.addr = addr
        self.topics = tuple(topics)
        self.gaps: list[tuple[str, int, int]] = []
        self.lost = 0  # messages known lost (exact when subscribed to everything)
        self.resets = 0
        self.received = 0
        self.malformed = 0
        self._all_topics = "" in self.topics
        self._next_seq: dict[str, int] = {}
        self._topic_last: dict[tuple[str, bytes], tuple[int, int]] = {}
        self._codec = EventCodec()
        self._own_context = context is None
        self._context = zmq.Context() if context is None else context
        self._socket: zmq.Socket | None = None
        try:
            self._socket = self._open(curve, rcvhwm)
        except BaseException:
            self.close()
            raise
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)

    def _open(self, curve: CurveKeys | None, rcvhwm: int) -> zmq.Socket:
        sock = self._context.socket(zmq.SUB)
        sock.setsockopt(zmq.RCVHWM, rcvhwm)
        sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            if not (curve.client_public and curve.client_secret):
                sock.close()
                raise ConfigError("bus curve: the subscriber needs client_public and client_secret")
            sock.curve_serverkey = curve.server_public.encode("ascii")
            sock.curve_publickey = curve.client_public.encode("ascii")
            sock.curve_secretkey = curve.client_secret.encode("ascii")
        for topic in self.topics:
            sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        try:
            sock.connect(self.addr)
        except zmq.ZMQError as exc:
            sock.close()
            raise BusError(f"bus cannot connect to {self.addr}: {exc.strerror}") from None
        return sock

    def recv_raw(self, timeout_s: float | None) -> _RawMessage | None:
        """The next well-formed message, undecoded, gap-checked; None after `timeout_s`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        sock = self._socket
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)  # type: ignore[union-attr]
            except zmq.Again:
                wait_ms = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
                if not self._poller.poll(wait_ms):
                    return None
                continue
            if len(frames) != 3 or len(frames[1]) != 8:
                self._malformed(f"{len(frames)} frames")
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                continue
            (value,) = _PACK_SEQ.unpack(frames[1])
            raw = _RawMessage(frames[0], STREAM_NAMES.get(value >> 56, OTHER_STREAM),
                              (value >> 16) & _SEQ_MASK, value & 0xFFFF, frames[2])
            self.received += 1
            self._check_gap(raw)
            return raw

    def recv(self, timeout_s: float | None = None) -> BusMessage | None:
        """The next message, or None when none arrives within `timeout_s` (None: wait forever)."""
        while True:
            raw = self.recv_raw(timeout_s)
            if raw is None:
                return None
            try:
                event = self._codec.decode(raw.payload)
            except msgspec.DecodeError as exc:
                self._malformed(f"payload of {raw.topic!r} seq {raw.seq}: {exc}")
                continue
            return BusMessage(raw.topic.decode(errors="replace"), raw.stream, raw.seq, event)

    def messages(self, timeout_s: float | None = 1.0, count: int | None = None) -> Iterator[BusMessage]:
        """Messages until `count` have come or none arrives for `timeout_s` seconds."""
        n = 0
        while count is None or n < count:
            msg = self.recv(timeout_s)
            if msg is None:
                return
            n += 1
            yield msg

    def __iter__(self) -> Iterator[BusMessage]:
        return self.messages()

    def _check_gap(self, raw: _RawMessage) -> None:
        if self._all_topics:
            expected = self._next_seq.get(raw.stream)
            self._next_seq[raw.stream] = raw.seq + 1
            if expected is None or raw.seq == expected:
                return
            if raw.seq > expected:
                self._gap(raw.stream, expected, raw.seq, raw.seq - expected)
            else:
                self._reset(raw.stream, expected, raw.seq)
            return
        key = (raw.stream, raw.topic)
        last = self._topic_last.get(key)
        self._topic_last[key] = (raw.seq, raw.topic_seq)
        if last is None:
            return
        last_seq, last_topic_seq = last
        if raw.seq <= last_seq:
            self._reset(raw.stream, last_seq + 1, raw.seq)
            return
        missed = (raw.topic_seq - last_topic_seq - 1) % TOPIC_SEQ_MOD
        # topic_seq 0 after a non-zero one: the publisher restarted; its counters began again.
        if missed and raw.topic_seq != 0:
            self._gap(raw.stream, last_seq + 1, raw.seq, missed)

    def _gap(self, stream: str, expected: int, got: int, missed: int) -> None:
        self.gaps.append((stream, expected, got))
        self.lost += missed
        logger.warning("bus gap addr=%s stream=%s expected=%d got=%d", self.addr, stream, expected, got)

    def _reset(self, stream: str, expected: int, got: int) -> None:
        self.resets += 1
        logger.info("bus seq reset addr=%s stream=%s expected=%d got=%d", self.addr, stream, expected, got)

    def _malformed(self, what: str) -> None:
        self.malformed += 1
        if self.malformed <= 10 or self.malformed % 10_000 == 0:
            logger.warning("bus malformed message addr=%s count=%d %s", self.addr, self.malformed, what)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._own_context and self._context is not None:
            self._context.term()
            self._context = None

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- catch-up: the log, then live, by seq -----------------------------------------------------


class _Stamp(msgspec.Struct, array_like=True):
    """The head of any encoded event (msgspec ignores the rest of the array)."""

    kind: int
    ts_event: int
    ts_recv: int


def _utc_date(ts_ns: int) -> dt.date:
    return dt.datetime.fromtimestamp(ts_ns / 1e9, dt.timezone.utc).date()


class CatchUp:
    """Iterates a day's events from the log, then live off the bus: no gap, no duplicate.

    Built by `catch_up`. Per stream, messages come in seq order. The log part of all streams is
    merged by ``ts_recv``; live messages come as they arrive. Counters: `from_log`, `from_bus`,
    `duplicates` (live messages the log had already given), `fills` (times the log supplied seqs
    the live stream skipped); `gaps` lists ``(stream, expected,
    got)`` ranges that neither the bus nor the log could supply within `timeout_s`.
    """

    def __init__(
        self,
        log: Any,
        date: dt.date | str,
        addr: str,
        *,
        topics: Sequence[str] = ("",),
        streams: Sequence[str] = ("live", "derived"),
        timeout_s: float = 5.0,
        idle_timeout_s: float | None = None,
        curve: CurveKeys | None = None,
        rcvhwm: int = CATCH_UP_RCVHWM,
        context: zmq.Context | None = None,
    ) -> None:
        if isinstance(topics, str):
            topics = (topics,)
        if isinstance(streams, str):
            streams = (streams,)
        self.log = log
        day = dt.date.fromisoformat(date) if isinstance(date, str) else date
        self.addr = addr
        self.topics = tuple(topics)
        self.streams = tuple(streams)
        self.timeout_s = timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.gaps: list[tuple[str, int, int]] = []
        self.from_log = 0
        self.from_bus = 0
        self.duplicates = 0
        self.fills = 0  # times the live stream ran ahead and the log supplied the seqs between
        self._prefixes = tuple(t.encode() for t in self.topics)
        self._wanted: dict[bytes, str] = {}  # topic -> its text if subscribed, else ""
        self._namer = TopicNamer()
        self._codec = EventCodec()
        self._next: dict[str, int] = {s: 0 for s in self.streams}  # next seq to deliver
        self._last_ts: dict[str, int] = {}  # ts_recv of the last log event seen: a seek hint
        self._last_payload: dict[str, bytes] = {}  # the last live message, stamped on demand
        self._live_seen: dict[str, int] = {}
        self._dates: dict[str, dt.date] = {s: day for s in self.streams}  # each rolls on its own
        # Subscribe before reading the log: from here on the socket keeps what is published.
        # Everything is received and filtered here, so stream seqs stay contiguous.
        self._sub = Subscriber(addr, ("",), curve=curve, rcvhwm=rcvhwm, context=context)

    # The log side: `EventLog.read(date, start, end, kinds, instruments, *, streams, follow,
    # poll_s, idle_timeout_s, stop)` yields (seq, event) of one stream in seq order when given
    # one stream. Reads are never filtered by kind: every seq must be seen to know where the log
    # stands.

    def _read(self, stream: str, start_ns: int | None, **follow: Any) -> Iterator[tuple[int, Event]]:
        try:
            yield from self.log.read(self._dates[stream], start_ns, None, None, None,
                                     streams=[stream], **follow)
        except NoDataError:
            return  # the day has no segment yet: an empty log so far

    def _start_hint(self, stream: str) -> int | None:
        """Where a re-read of `stream` may start: a little before the last event seen of it."""
        stamps = [self._last_ts[stream]] if stream in self._last_ts else []
        payload = self._last_payload.get(stream)
        if payload is not None:
            stamps.append(msgspec.msgpack.decode(payload, type=_Stamp).ts_recv)
        return max(stamps) - HINT_SLACK_NS if stamps else None

    def _topic_text(self, topic: bytes) -> str:
        """The topic as text when it is subscribed (prefix match, as the socket does), else ""."""
        name = self._wanted.get(topic)
        if name is None:
            name = topic.decode(errors="replace") if topic.startswith(self._prefixes) else ""
            self._wanted[topic] = name
        return name

    def _from_log(self, stream: str, seq: int, event: Event) -> BusMessage | None:
        """Advance the stream past a log event; the message if its topic is wanted."""
        topic = self._namer.topic(event)  # every event: it may teach a symbol
        self._next[stream] = seq + 1
        self._last_ts[stream] = event.ts_recv
        name = self._topic_text(topic)
        if not name:
            return None
        self.from_log += 1
        return BusMessage(name, stream, seq, event)

    def _tagged(self, stream: str) -> Iterator[tuple[int, int, str, Event]]:
        for seq, event in self._read(stream, None):
            yield event.ts_recv, seq, stream, event

    def _initial(self) -> Iterator[BusMessage]:
        """The log as it stands now, all streams merged by ts_recv."""
        if len(self.streams) == 1:
            stream = self.streams[0]
            merged: Iterable = ((0, seq, stream, event) for seq, event in self._read(stream, None))
        else:
            merged = heapq.merge(*(self._tagged(s) for s in self.streams),
                                 key=lambda t: (t[0], t[1]))
        for _, seq, stream, event in merged:
            if seq < self._next[stream]:
                continue
            if seq > self._next[stream]:
                self._log_gap(stream, self._next[stream], seq)
            msg = self._from_log(stream, seq, event)
            if msg is not None:
                yield msg

    def _fill(self, stream: str, end_seq: int) -> Iterator[BusMessage]:
        """Log events of `stream` from the next undelivered seq up to `end_seq` (excluded),
        following the segment being written until the writer has closed the frame holding them."""
        self.fills += 1
        deadline = time.monotonic() + self.timeout_s
        start = self._start_hint(stream)

        def done() -> bool:
            return self._next[stream] >= end_seq or time.monotonic() >= deadline

        while True:
            for seq, event in self._read(stream, start, follow=True, poll_s=LOG_POLL_S,
                                         idle_timeout_s=self.timeout_s, stop=done):
                if seq < self._next[stream]:
                    continue
                if seq >= end_seq:
                    break
                if seq > self._next[stream]:
                    self._log_gap(stream, self._next[stream], seq)
                msg = self._from_log(stream, seq, event)
                if msg is not None:
                    yield msg
                if self._next[stream] >= end_seq or time.monotonic() >= deadline:
                    break
            if self._next[stream] >= end_seq:
                return
            if time.monotonic() >= deadline:
                self.gaps.append((stream, self._next[stream], end_seq))
                logger.warning("bus catch-up gap addr=%s stream=%s from=%d to=%d: not in the log "
                               "after %.1fs", self.addr, stream, self._next[stream], end_seq,
                               self.timeout_s)
                self._next[stream] = end_seq
                return
            # The segment ended (or none is there yet) short of end_seq: look again, a new
            # segment may be starting.
            time.sleep(LOG_POLL_S)

    def _log_gap(self, stream: str, expected: int, got: int) -> None:
        self.gaps.append((stream, expected, got))
        logger.warning("bus catch-up: log seqs missing date=%s stream=%s expected=%d got=%d",
                       self._dates[stream], stream, expected, got)

    @property
    def date(self) -> dt.date:
        """The newest UTC day being read (streams move to a new day when their seqs restart)."""
        return max(self._dates.values())

    def __iter__(self) -> Iterator[BusMessage]:
        try:
            yield from self._initial()
            yield from self._live()
        finally:
            self.close()

    def _live(self) -> Iterator[BusMessage]:
        idle_since = time.monotonic()
        while True:
            wait_s = LOG_IDLE_CHECK_S
            if self.idle_timeout_s is not None:
                wait_s = min(wait_s, max(0.0, idle_since + self.idle_timeout_s - time.monotonic()))
            raw = self._sub.recv_raw(wait_s)
            if raw is None:
                # A quiet socket may mean the last messages were lost (nothing later shows the
                # gap): the log is the truth, so deliver what it holds beyond what was delivered.
                for stream in self.streams:
                    yield from self._drain_log(stream)
                if self.idle_timeout_s is not None and (
                        time.monotonic() - idle_since >= self.idle_timeout_s):
                    return
                continue
            idle_since = time.monotonic()
            stream = raw.stream
            if stream not in self._next:
                continue
            seen = self._live_seen.get(stream)
            self._live_seen[stream] = raw.seq
            if seen is not None and raw.seq <= seen:
                # Seqs restart each UTC day: finish the old day from the log (its segment closed
                # with the rollover), then follow the new day.
                yield from self._drain_log(stream)
                event = self._codec.decode(raw.payload)
                self._dates[stream] = _utc_date(event.ts_recv)
                self._next[stream] = 0
                self._last_ts.pop(stream, None)
                self._last_payload.pop(stream, None)
                logger.info("bus catch-up seq reset stream=%s seq=%d date=%s", stream, raw.seq,
                            self._dates[stream])
            if raw.seq < self._next[stream]:
                self.duplicates += 1
                continue
            if raw.seq > self._next[stream]:
                yield from self._fill(stream, raw.seq)
            self._next[stream] = raw.seq + 1
            self._last_payload[stream] = raw.payload
            if not self._topic_text(raw.topic):
                continue
            event = self._codec.decode(raw.payload)
            self.from_bus += 1
            yield BusMessage(self._topic_text(raw.topic), stream, raw.seq, event)

    def _drain_log(self, stream: str) -> Iterator[BusMessage]:
        """Whatever the log holds past the next undelivered seq of `stream`, without waiting."""
        for seq, event in self._read(stream, self._start_hint(stream)):
            if seq < self._next[stream]:
                continue
            if seq > self._next[stream]:
                self._log_gap(stream, self._next[stream], seq)
            msg = self._from_log(stream, seq, event)
            if msg is not None:
                yield msg

    def close(self) -> None:
        self._sub.close()

    def __enter__(self) -> CatchUp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def catch_up(
    log: Any,
    date: dt.date | str,
    addr: str = DEFAULT_ADDR,
    *,
    topics: Sequence[str] = ("",),
    streams: Sequence[str] = ("live", "derived"),
    timeout_s: float = 5.0,
    idle_timeout_s: float | None = None,
    curve: CurveKeys | None = None,
) -> CatchUp:
    """Replay `date` from `log` (an `EventLog`), then continue live from the publisher at `addr`.

    Subscribes first, so nothing published meanwhile is lost; reads the log; then delivers live
    messages, dropping those the log already gave and reading from the log any seqs the live
    stream skipped (the slow-joiner window, a full high-water mark), waiting at most `timeout_s`
    for the writer to close the frame holding them. Stops after `idle_timeout_s` without a live
    message (None: never). Iterate the result; it is also a context manager.
    """
    return CatchUp(log, date, addr, topics=topics, streams=streams, timeout_s=timeout_s,
                   idle_timeout_s=idle_timeout_s, curve=curve)


# --- tail -------------------------------------------------------------------------------------


def tail(
    addr: str = DEFAULT_ADDR,
    topic_prefix: str = "",
    *,
    count: int | None = None,
    timeout_s: float | None = None,
    curve: CurveKeys | None = None,
) -> Iterator[BusMessage]:
    """Messages from the publisher at `addr` for `mia tail`: stops after `count` messages or
    `timeout_s` seconds without one (None: never). Print each with `tail_line`."""
    with Subscriber(addr, (topic_prefix,), curve=curve) as sub:
        yield from sub.messages(timeout_s=timeout_s, count=count)


_json_encoder = msgspec.json.Encoder()


def tail_line(msg: BusMessage) -> str:
    """One JSON line: ``{"topic", "stream", "seq", "event": to_builtins(event)}`` (NaN -> null)."""
    return _json_encoder.encode(
        {"topic": msg.topic, "stream": msg.stream, "seq": msg.seq, "event": to_builtins(msg.event)}
    ).decode()
