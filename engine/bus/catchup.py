"""Joining a running recording: the day's log, then the live bus, without a gap or a duplicate.

The way kdb+'s replay-then-subscribe and Aeron's replay merge do: subscribe first (the socket
buffers), read the log, then switch to live, and whenever the live stream jumps ahead of what was
delivered, read the missing seqs from the log (following it until the writer has closed the
frame that holds them).
"""

from __future__ import annotations

import datetime as dt
import heapq
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

import msgspec
import zmq

from ..clock import NS_PER_S, utc_day
from ..errors import NoDataError
from ..events import Event, EventCodec
from .config import CurveConfig
from .subscriber import Subscriber
from .wire import DEFAULT_ADDR, BusMessage, TopicNamer

logger = logging.getLogger(__name__)

CATCH_UP_RCVHWM: Final = 1_000_000  # the socket buffers live messages while the log is read
LOG_POLL_S: Final = 0.01  # the writer closes frames within ~100 ms; poll well inside that
LOG_IDLE_CHECK_S: Final = 0.25  # a socket quiet this long: look in the log for lost tails
HINT_SLACK_NS: Final = 5 * NS_PER_S  # re-read the log from a little before the last event seen


class _Stamp(msgspec.Struct, array_like=True):
    """The head of any encoded event (msgspec ignores the rest of the array)."""

    kind: int
    ts_event: int
    ts_recv: int


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
        curve: CurveConfig | None = None,
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
                self._dates[stream] = dt.date.fromisoformat(utc_day(event.ts_recv))
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
    curve: CurveConfig | None = None,
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
