"""The catch-up join: the day's log, then live off the bus, with no gap and no duplicate.

A writer thread does what the recorder does: append each event to the real EventLog, then publish
it with the seq the log gave it. Readers see events only once the writer closes their frame, so
the newest seqs reach the bus before the log.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import defaultdict

from mia.engine.bus import CatchUp, Publisher, catch_up
from mia.engine.clock import ManualClock
from mia.engine.events import EventCodec, GammaLevels, Instrument, Trade
from mia.engine.log import EventLog

ANY_PORT = "tcp://127.0.0.1:*"
DAY = dt.date(2025, 12, 1)
T0 = int(dt.datetime(2025, 12, 1, 14, 30, tzinfo=dt.timezone.utc).timestamp() * 1e9)


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
    """Appends to the log and publishes `n` live events (ES and NQ trades) and a derived event
    every 25th; frames close every `frame_ms` of event time (one event is 1 ms)."""

    def __init__(self, log: EventLog, pub: Publisher, n: int, *, burst: int = 20,
                 pause_s: float = 0.004, frame_ms: float = 30.0) -> None:
        super().__init__(daemon=True)
        self.log, self.pub, self.n = log, pub, n
        self.burst, self.pause_s, self.frame_ms = burst, pause_s, frame_ms
        self.progress = 0
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            opts = dict(clock=ManualClock(T0), fsync="never", frame_max_ms=self.frame_ms)
            with self.log.writer("live", **opts) as live, self.log.writer("derived", **opts) as derived:
                writers = {"live": live, "derived": derived}

                def emit(stream: str, event) -> None:
                    seq = writers[stream].append(event)
                    self.pub.publish(stream, seq, event)  # the log first, then the bus

                emit("live", instrument(1, "ESZ5", T0))
                emit("live", instrument(2, "NQZ5", T0))
                for i in range(self.n):
                    emit("live", trade(i, 1 + i % 2))
                    if i % 25 == 24:
                        emit("derived", levels(i))
                    self.progress = i + 1
                    if i % self.burst == self.burst - 1:
                        time.sleep(self.pause_s)
        except BaseException as exc:  # surfaced by the test
            self.error = exc
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


def logged(log: EventLog, stream: str) -> list:
    """The truth: (seq, encoded event) of a stream as the log holds it once the writer is done."""
    return [(seq, _codec.encode(e)) for seq, e in log.read(DAY, streams=[stream])]


def finish(writer: Writer) -> None:
    writer.join(timeout=30)
    assert writer.done.is_set() and writer.error is None, writer.error


def test_catch_up_started_midway_has_no_gap_and_no_duplicate(tmp_path):
    # Arrange: a writer publishing and logging 4000 events over ~1 s.
    log = EventLog(tmp_path)
    with Publisher(ANY_PORT) as pub:
        writer = Writer(log, pub, 4_000)
        writer.start()
        wait_for(lambda: writer.progress >= 1_000)
        # Act: join midway, while the writer keeps going.
        with catch_up(log, DAY, pub.addr, timeout_s=5.0, idle_timeout_s=1.0) as join:
            got = list(join)
        finish(writer)
    # Assert: every seq of every stream once, in order, equal to what was written.
    streams = by_stream(got)
    assert streams["live"] == logged(log, "live")
    assert streams["derived"] == logged(log, "derived")
    assert join.gaps == []
    assert join.from_log >= 1_000 and join.from_bus > 0
    assert join.from_log + join.from_bus == len(got)


def test_catch_up_filters_topics_on_the_log_and_the_bus_alike(tmp_path):
    log = EventLog(tmp_path)
    with Publisher(ANY_PORT) as pub:
        writer = Writer(log, pub, 3_000)
        writer.start()
        wait_for(lambda: writer.progress >= 800)
        with catch_up(log, DAY, pub.addr, topics=["Trade.ES"], idle_timeout_s=1.0) as join:
            got = list(join)
        finish(writer)
    want = [(seq, _codec.encode(e)) for seq, e in log.read(DAY, streams=["live"])
            if isinstance(e, Trade) and e.instrument == 1]
    assert [(m.seq, _codec.encode(m.event)) for m in got] == want
    assert {m.topic for m in got} == {"Trade.ESZ5"}
    assert join.from_log > 0 and join.from_bus > 0
    assert join.gaps == []  # filtered-out seqs (and the whole derived stream) are not gaps


def test_catch_up_repairs_high_water_mark_losses_from_the_log(tmp_path):
    # A catch-up whose socket holds only 20 messages, behind a publisher that floods in bursts.
    log = EventLog(tmp_path)
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
        finish(writer)
    assert join._sub.gaps, "the socket should have overflowed"
    streams = by_stream(got)
    assert streams["live"] == logged(log, "live")
    assert streams["derived"] == logged(log, "derived")
    assert join.gaps == []


def test_seqs_the_log_never_gets_are_reported_as_a_gap_after_the_timeout(tmp_path):
    # A publisher that does not log: the first 10 seqs exist nowhere the catch-up can read.
    log = EventLog(tmp_path / "empty")
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


def test_live_messages_the_log_already_gave_are_dropped_as_duplicates(tmp_path):
    log = EventLog(tmp_path)
    with Publisher(ANY_PORT) as pub:
        join = CatchUp(log, DAY, pub.addr, streams=["live"], idle_timeout_s=0.5)
        assert pub.wait_for_subscriber(timeout_s=5)
        with log.writer("live", clock=ManualClock(T0), fsync="never") as writer:
            for i in range(50):
                event = trade(i, 1)
                pub.publish("live", writer.append(event), event)
            writer.flush()  # the log now holds all 50, and the socket buffered all 50
            got = list(join)
    # RecordingStarted (seq 0, never published) and the 50 trades, each once.
    assert [m.seq for m in got] == list(range(51))
    assert join.from_log == 51 and join.from_bus == 0 and join.duplicates == 50


def test_catch_up_follows_the_log_across_utc_midnight(tmp_path):
    # Arrange: a writer whose events cross midnight; the log rolls to a new day, seqs restart.
    log = EventLog(tmp_path)
    midnight = T0 - (T0 % (86_400 * 10**9)) + 86_400 * 10**9
    next_day = DAY + dt.timedelta(days=1)
    first_ts = midnight - 300_000_000  # 300 events before midnight, 1 ms apart
    with Publisher(ANY_PORT) as pub:
        started = threading.Event()
        done = threading.Event()

        def write():
            try:
                with log.writer("live", clock=ManualClock(first_ts), fsync="never",
                                frame_max_ms=20) as w:
                    event = instrument(1, "ESZ5", first_ts)
                    pub.publish("live", w.append(event), event)
                    for i in range(600):
                        ts = first_ts + 1_000_000 * i
                        event = Trade(ts_event=ts, ts_recv=ts, instrument=1, price=5000.0,
                                      size=1.0, side=1)
                        pub.publish("live", w.append(event), event)
                        if i == 100:
                            started.wait(timeout=10)  # let the catch-up join on the first day
                        if i % 20 == 19:
                            time.sleep(0.005)
            finally:
                done.set()

        t = threading.Thread(target=write, daemon=True)
        t.start()
        # Act
        join = CatchUp(log, DAY, pub.addr, streams=["live"], idle_timeout_s=1.0)
        assert pub.wait_for_subscriber(timeout_s=5)
        started.set()
        got = list(join)
        t.join(timeout=30)
        assert done.is_set()
    # Assert: the first day's seqs, then the second day's from 0, each exactly as logged.
    days = [[(m.seq, _codec.encode(m.event)) for m in got if (m.event.ts_recv >= midnight) == d]
            for d in (False, True)]
    for date, day_msgs in zip((DAY, next_day), days):
        assert day_msgs == [(seq, _codec.encode(e)) for seq, e in log.read(date, streams=["live"])]
    assert join.gaps == [] and join.date == next_day
