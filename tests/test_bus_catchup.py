"""The catch-up join: the day's log, then live off the bus, with no gap and no duplicate.

A writer thread does what the recorder does: append each event to the log, then publish it with
the seq the log gave it. The log shows events only when the writer closes a frame, as the real
log does, so the newest seqs reach the bus before the log.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import defaultdict

from mia.engine.bus import CatchUp, Publisher, catch_up
from mia.engine.events import KIND_OF, EventCodec, GammaLevels, Instrument, Trade

ANY_PORT = "tcp://127.0.0.1:*"
DAY = dt.date(2025, 12, 1)
T0 = int(dt.datetime(2025, 12, 1, 14, 30, tzinfo=dt.timezone.utc).timestamp() * 1e9)


class FramedMemoryLog:
    """An in-memory stand-in for EventLog: per-stream seqs from 0, visible frame by frame."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._visible: dict[str, list] = defaultdict(list)
        self._open: dict[str, list] = defaultdict(list)
        self._next: dict[str, int] = defaultdict(int)
        self.reads = 0

    def append(self, stream: str, event) -> int:
        with self._lock:
            seq = self._next[stream]
            self._next[stream] += 1
            self._open[stream].append((seq, event))
            return seq

    def close_frames(self) -> None:
        with self._lock:
            for stream, frame in self._open.items():
                self._visible[stream].extend(frame)
                frame.clear()

    def read(self, date, start=None, end=None, kinds=None, instruments=None, *, streams=None,
             follow=False):
        assert date == DAY and streams is not None and len(streams) == 1
        self.reads += 1
        with self._lock:
            rows = list(self._visible[streams[0]])
        for seq, event in rows:
            if start is not None and event.ts_recv < start:
                continue
            if kinds is not None and KIND_OF[type(event)] not in kinds:
                continue
            yield seq, event


def instrument(iid: int, symbol: str, ts: int) -> Instrument:
    return Instrument(ts_event=ts, ts_recv=ts, instrument=iid, symbol=symbol, source="dtc:test",
                      tick_size=0.25, point_value=50.0)


def trade(i: int, iid: int) -> Trade:
    ts = T0 + 1_000_000 * i
    return Trade(ts_event=ts, ts_recv=ts, instrument=iid, price=5000.0 + (i % 40) * 0.25,
                 size=float(1 + i % 5), side=1 if i % 3 else -1)


def levels(i: int) -> GammaLevels:
    ts = T0 + 1_000_000 * i
    return GammaLevels(
        ts_event=ts, ts_recv=ts, underlying="SPX", spot=5000.0 + i, basis=10.0, zero_gamma=4990.0,
        call_wall=5100.0, put_wall=4900.0, max_pain=5000.0, total_gex=1e9, call_gex=2e9,
        put_gex=-1e9, pcr_oi=0.9, pcr_volume=1.1, pin_strikes=[5000.0], dealer_bias=0.2,
        vanna_exposure=0.0, charm_exposure=0.0, iv_skew=0.0, stale=False, staleness_ns=0)


class Writer(threading.Thread):
    """Appends and publishes `n` live events (ES and NQ trades) and a derived event every 25th,
    closing a frame every `frame_events` events or `frame_ms` ms, whichever first."""

    def __init__(self, log: FramedMemoryLog, pub: Publisher, n: int, *, burst: int = 20,
                 pause_s: float = 0.004, frame_events: int = 64, frame_ms: float = 30.0) -> None:
        super().__init__(daemon=True)
        self.log, self.pub, self.n = log, pub, n
        self.burst, self.pause_s = burst, pause_s
        self.frame_events, self.frame_ms = frame_events, frame_ms
        self.written: dict[str, list] = defaultdict(list)
        self.progress = 0
        self.done = threading.Event()

    def emit(self, stream: str, event) -> None:
        seq = self.log.append(stream, event)
        self.pub.publish(stream, seq, event)  # the log first, then the bus
        self.written[stream].append((seq, event))

    def run(self) -> None:
        try:
            self.emit("live", instrument(1, "ESZ5", T0))
            self.emit("live", instrument(2, "NQZ5", T0))
            in_frame, frame_t0 = 0, time.monotonic()
            for i in range(self.n):
                self.emit("live", trade(i, 1 + i % 2))
                if i % 25 == 24:
                    self.emit("derived", levels(i))
                in_frame += 1
                if in_frame >= self.frame_events or time.monotonic() - frame_t0 > self.frame_ms / 1e3:
                    self.log.close_frames()
                    in_frame, frame_t0 = 0, time.monotonic()
                self.progress = i + 1
                if i % self.burst == self.burst - 1:
                    time.sleep(self.pause_s)
            self.log.close_frames()
        finally:
            self.done.set()


def wait_for(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


_codec = EventCodec()


def by_stream(messages) -> dict[str, list]:
    """(seq, encoded event) per stream; encoded, because NaN fields never compare equal."""
    out: dict[str, list] = defaultdict(list)
    for msg in messages:
        out[msg.stream].append((msg.seq, _codec.encode(msg.event)))
    return out


def written(writer, stream: str) -> list:
    return [(seq, _codec.encode(e)) for seq, e in writer.written[stream]]


def test_catch_up_started_midway_has_no_gap_and_no_duplicate():
    # Arrange: a writer publishing and logging 4000 events over ~1 s.
    log = FramedMemoryLog()
    with Publisher(ANY_PORT) as pub:
        writer = Writer(log, pub, 4_000)
        writer.start()
        wait_for(lambda: writer.progress >= 1_000)
        # Act: join midway, while the writer keeps going.
        with catch_up(log, DAY, pub.addr, timeout_s=5.0, idle_timeout_s=1.0) as join:
            got = list(join)
        writer.join(timeout=30)
        assert writer.done.is_set()
    # Assert: every seq of every stream once, in order, equal to what was written.
    streams = by_stream(got)
    assert streams["live"] == written(writer, "live")
    assert streams["derived"] == written(writer, "derived")
    assert join.gaps == []
    assert join.from_log >= 1_000 and join.from_bus > 0
    assert join.from_log + join.from_bus == len(got)


def test_catch_up_filters_topics_on_the_log_and_the_bus_alike():
    log = FramedMemoryLog()
    with Publisher(ANY_PORT) as pub:
        writer = Writer(log, pub, 3_000)
        writer.start()
        wait_for(lambda: writer.progress >= 800)
        with catch_up(log, DAY, pub.addr, topics=["Trade.ES"], idle_timeout_s=1.0) as join:
            got = list(join)
        writer.join(timeout=30)
    want = [(seq, e) for seq, e in writer.written["live"]
            if isinstance(e, Trade) and e.instrument == 1]
    assert [(m.seq, m.event) for m in got] == want
    assert {m.topic for m in got} == {"Trade.ESZ5"}
    assert join.from_log > 0 and join.from_bus > 0
    assert join.gaps == []  # filtered-out seqs (and the whole derived stream) are not gaps


def test_catch_up_repairs_high_water_mark_losses_from_the_log():
    # A catch-up whose socket holds only 20 messages, behind a publisher that floods in bursts.
    log = FramedMemoryLog()
    with Publisher(ANY_PORT, sndhwm=20) as pub:
        join = CatchUp(log, DAY, pub.addr, idle_timeout_s=1.0, rcvhwm=20)
        assert pub.wait_for_subscriber(timeout_s=5)
        writer = Writer(log, pub, 6_000, burst=500, pause_s=0.02)
        writer.start()
        got = []
        for msg in join:
            got.append(msg)
            if len(got) % 200 == 0:
                time.sleep(0.01)  # a slow consumer
        writer.join(timeout=30)
    assert join._sub.gaps, "the socket should have overflowed"
    streams = by_stream(got)
    assert streams["live"] == written(writer, "live")
    assert streams["derived"] == written(writer, "derived")
    assert join.gaps == []


def test_seqs_the_log_never_gets_are_reported_as_a_gap_after_the_timeout():
    # A publisher that does not log: the first 10 seqs exist nowhere the catch-up can read.
    log = FramedMemoryLog()
    with Publisher(ANY_PORT) as pub:
        join = CatchUp(log, DAY, pub.addr, streams=["live"], timeout_s=0.3, idle_timeout_s=0.5)
        assert pub.wait_for_subscriber(timeout_s=5)
        events = [trade(i, 1) for i in range(20)]
        pub.publish_many("live", 10, events[10:])
        t0 = time.monotonic()
        got = list(join)
    assert [m.seq for m in got] == list(range(10, 20))
    assert [m.event for m in got] == events[10:]
    assert join.gaps == [("live", 0, 10)]
    assert time.monotonic() - t0 < 5


def test_live_messages_the_log_already_gave_are_dropped_as_duplicates():
    log = FramedMemoryLog()
    with Publisher(ANY_PORT) as pub:
        join = CatchUp(log, DAY, pub.addr, streams=["live"], idle_timeout_s=0.5)
        assert pub.wait_for_subscriber(timeout_s=5)
        events = [trade(i, 1) for i in range(50)]
        for event in events:
            pub.publish("live", log.append("live", event), event)
        log.close_frames()  # the log now holds all 50, and the socket buffered all 50
        got = list(join)
    assert [m.seq for m in got] == list(range(50))
    assert join.from_log == 50 and join.from_bus == 0 and join.duplicates == 50
