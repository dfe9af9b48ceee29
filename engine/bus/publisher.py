"""The publishing end: an XPUB socket that sends events downstream of the log."""

from __future__ import annotations

import logging
import time
import types
from collections.abc import Callable, Iterable
from typing import Any, Final

import zmq
import zmq.auth.thread

from ..errors import ConfigError
from ..events import Event, EventCodec
from .config import CurveConfig, curve_in_use
from .wire import DEFAULT_ADDR, BusAddressInUseError, BusError, TopicNamer, pack_seq

logger = logging.getLogger(__name__)

DEFAULT_SNDHWM: Final = 100_000
DEFAULT_LINGER_MS: Final = 1_000
_ALL_INTERFACES: Final = ("tcp://*", "tcp://0.0.0.0", "tcp://[::]", "tcp://::")
_SNDMORE: Final = int(zmq.SNDMORE)


class _AdmitKeys:
    """ZAP credentials provider: admits exactly the configured client public keys."""

    def __init__(self, keys: frozenset[bytes]) -> None:
        self._keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        allowed = key in self._keys
        if not allowed:
            logger.warning("bus curve client refused domain=%s", domain or "*")
        return allowed


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
        curve: CurveConfig | None = None,
        sndhwm: int = DEFAULT_SNDHWM,
        context: zmq.Context | None = None,
        linger_ms: int = DEFAULT_LINGER_MS,
    ) -> None:
        curve = curve_in_use(curve)
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
        self._send_frame = _frame_sender(self._socket)
        self._encode = self._codec.encode_fast  # the C method: see LogWriter
        logger.info("bus publishing addr=%s curve=%s", self.addr, curve is not None)

    def _open(self, addr: str, curve: CurveConfig | None, sndhwm: int,
              linger_ms: int) -> zmq.Socket:
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

    def _start_authenticator(self, curve: CurveConfig) -> None:
        auth = zmq.auth.thread.ThreadAuthenticator(self._context, log=logger)
        try:
            auth.start()
        except zmq.ZMQError as exc:
            raise BusError(
                f"bus curve: cannot start the ZAP authenticator ({exc.strerror}); "
                "one CURVE publisher per ZeroMQ context") from None
        self._auth = auth
        admitted = frozenset([curve.client_public.encode("ascii")] if curve.client_public else [])
        auth.configure_curve_callback("*", credentials_provider=_AdmitKeys(admitted))

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
        """Send `(seq, event)` rows in order, one message each."""
        encode = self._encode
        self.publish_encoded(stream, ((seq, event, encode(event)) for seq, event in rows))

    def publish_encoded(self, stream: str, rows: Iterable[tuple[int, Event, bytes]]) -> None:
        """Send `(seq, event, payload)` rows in order, `payload` being the event's `EventCodec`
        bytes (the live path: a log writer's rows, already encoded for the log, whose seqs
        restart at a UTC-day rollover)."""
        # Hot path (every recorded event): names bound once, frames sent one by one with plain
        # int flags (send_multipart's per-frame flag enums cost more than the send itself).
        topic_of = self._namer.topic
        topic_seqs = self._topic_seqs
        send = self._send_frame
        sent = 0
        try:
            for seq, event, payload in rows:
                topic = topic_of(event)
                topic_seq = topic_seqs.get(topic, 0)
                seq_frame = pack_seq(stream, seq, topic_seq)
                topic_seqs[topic] = topic_seq + 1
                send(topic, _SNDMORE)
                send(seq_frame, _SNDMORE)
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
