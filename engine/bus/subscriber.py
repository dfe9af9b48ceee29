"""The subscribing end: a SUB socket with gap detection, and `tail` for `mia tail`."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Final, NamedTuple

import msgspec
import zmq

from ..errors import ConfigError
from ..events import EventCodec, to_builtins
from ..jsonenc import to_json
from .config import CurveConfig, curve_in_use
from .wire import DEFAULT_ADDR, TOPIC_SEQ_MOD, BusError, BusMessage, unpack_seq

logger = logging.getLogger(__name__)

DEFAULT_RCVHWM: Final = 100_000


class RawMessage(NamedTuple):
    """A message as it came off the socket: payload still encoded."""

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
        curve: CurveConfig | None = None,
        rcvhwm: int = DEFAULT_RCVHWM,
        context: zmq.Context | None = None,
    ) -> None:
        if isinstance(topics, str):
            topics = (topics,)
        curve = curve_in_use(curve)
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

    def _open(self, curve: CurveConfig | None, rcvhwm: int) -> zmq.Socket:
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

    def recv_raw(self, timeout_s: float | None) -> RawMessage | None:
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
            raw = RawMessage(frames[0], *unpack_seq(frames[1]), frames[2])
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

    def _check_gap(self, raw: RawMessage) -> None:
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


# --- tail -------------------------------------------------------------------------------------


def tail(
    addr: str = DEFAULT_ADDR,
    topic_prefix: str = "",
    *,
    count: int | None = None,
    timeout_s: float | None = None,
    curve: CurveConfig | None = None,
) -> Iterator[BusMessage]:
    """Messages from the publisher at `addr` for `mia tail`: stops after `count` messages or
    `timeout_s` seconds without one (None: never). Print each with `tail_line`."""
    with Subscriber(addr, (topic_prefix,), curve=curve) as sub:
        yield from sub.messages(timeout_s=timeout_s, count=count)


def tail_line(msg: BusMessage) -> str:
    """One JSON line: ``{"topic", "stream", "seq", "event": to_builtins(event)}`` (NaN -> null)."""
    return to_json({"topic": msg.topic, "stream": msg.stream, "seq": msg.seq,
                    "event": to_builtins(msg.event)})
