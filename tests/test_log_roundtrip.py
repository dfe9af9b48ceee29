"""Event log: round trip of every event type, seq and order, windows, rollover, columnar path."""

from __future__ import annotations

import math
import typing

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mia.engine.clock import NS_PER_DAY, ManualClock, utc_day
from mia.engine.columns import COLUMN_SPEC, ColumnBatch
from mia.engine.events import (
    EVENT_TYPES,
    BookLevel,
    EventCodec,
    FeedStatus,
    Gap,
    Instrument,
    Quote,
    RecordingEnded,
    RecordingStarted,
    SessionStat,
    Trade,
)
from mia.engine.fastdecode import decode_columns
from mia.engine.log import EventLog

DAY0 = 19_676 * NS_PER_DAY  # 2023-11-15 00:00 UTC
HOUR = 3_600 * 1_000_000_000
SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

# --- strategies: one per event type, built from its annotations ----------------------------------

FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.integers(-(2**53), 2**53))  # msgspec writes ints into float fields
INTS = st.integers(-(2**63), 2**63 - 1)
TS = st.integers(DAY0, DAY0 + NS_PER_DAY - 1)


def _strategy_for(tp) -> st.SearchStrategy:
    origin = typing.get_origin(tp)
    if tp is float:
        return FLOATS
    if tp is int:
        return INTS
    if tp is bool:
        return st.booleans()
    if tp is str:
        return st.text(max_size=20)
    if tp is bytes:
        return st.binary(max_size=64)
    if origin is list:
        (inner,) = typing.get_args(tp)
        return st.lists(_strategy_for(inner), max_size=4)
    raise AssertionError(f"no strategy for {tp}")


def event_strategy(cls, ts=TS, **overrides) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls)
    fields = {}
    for name in cls.__struct_fields__:
        fields[name] = ts if name == "ts_recv" else _strategy_for(hints[name])
    fields.update(overrides)
    return st.builds(cls, **fields)


def same(a, b) -> bool:
    """Field-wise equality where NaN equals NaN (and 5 equals 5.0, as msgspec decodes it)."""
    if type(a) is not type(b):
        return False
    for name in a.__struct_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, list):
            if len(x) != len(y) or any(not _same_value(p, q) for p, q in zip(x, y)):
                return False
        elif not _same_value(x, y):
            return False
    return True


def _same_value(x, y) -> bool:
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return x == y


# --- round trip ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", EVENT_TYPES, ids=lambda c: c.__name__)
@SETTINGS
@given(data=st.data())
def test_every_event_type_round_trips(tmp_path_factory, cls, data):
    # Arrange
    events = data.draw(st.lists(event_strategy(cls), min_size=1, max_size=30))
    events.sort(key=lambda e: e.ts_recv)  # a clock-stamped stream
    log = EventLog(tmp_path_factory.mktemp("log"))
    # Act
    with log.writer(clock=ManualClock(DAY0), frame_max_events=7) as w:
        seqs = [w.append(ev) for ev in events]
    got = list(log.read(utc_day(DAY0)))
    # Assert
    assert [s for s, _ in got] == list(range(len(events) + 2))
    assert seqs == list(range(1, len(events) + 1))
    back = [e for _, e in got[1:-1]]  # between this writer's RecordingStarted and Ended
    assert len(back) == len(events)
    assert all(same(a, b) for a, b in zip(events, back)), (events, back)


def test_seq_and_order_across_frames_and_segments(tmp_path):
    log = EventLog(tmp_path)
    clock = ManualClock(DAY0 + HOUR)
    appended = []
    # three runs of the same stream: seq continues across segments of the day
    for run in range(3):
        with log.writer(clock=clock, frame_max_events=5, recording_id=f"run{run}") as w:
            for i in range(23):
                ev = Trade(run, DAY0 + HOUR + run * 1000 + i, 1, float(i), 1.0, 0)
                appended.append((w.append(ev), ev))
        clock.advance(10_000)
    segs = log.segments(utc_day(DAY0))
    assert [s.recording_id for s in segs] == ["run0", "run1", "run2"]
    got = list(log.read(utc_day(DAY0)))
    seqs = [s for s, _ in got]
    assert seqs == list(range(len(got)))  # unique, contiguous, in order
    trades = [(s, e) for s, e in got if type(e) is Trade]
    assert trades == appended


def test_time_window_read_equals_filter_over_everything(tmp_path):
    rng = np.random.default_rng(7)
    log = EventLog(tmp_path)
    clock = ManualClock(DAY0)
    # two streams written side by side, interleaved in time
    with log.writer("live", clock=clock, frame_max_events=16) as live, \
            log.writer("derived", clock=clock, frame_max_events=4,
                       recording_id=live.recording_id) as derived:
        ts = DAY0 + np.cumsum(rng.integers(1, 1_000_000, size=800))
        for i, t in enumerate(ts.tolist()):
            if i % 9 == 0:
                derived.append(Gap(t, t, "x", t - 5, t, "test"))
            else:
                live.append(Trade(t, t, i % 3, float(i), 1.0, 1))
    date = utc_day(DAY0)
    everything = list(log.read(date))
    assert [e.ts_recv for _, e in everything] == sorted(e.ts_recv for _, e in everything)
    for _ in range(20):
        a, b = sorted(rng.integers(DAY0, int(ts[-1]) + 10, size=2).tolist())
        window = list(log.read(date, start=a, end=b))
        assert window == [(s, e) for s, e in everything if a <= e.ts_recv < b]
    kinds = list(log.read(date, kinds=[Gap]))
    assert kinds == [(s, e) for s, e in everything if type(e) is Gap]
    by_id = list(log.read(date, instruments=[2], kinds=["trade"]))
    assert by_id == [(s, e) for s, e in everything if type(e) is Trade and e.instrument == 2]
    assert list(log.read(date, streams="derived")) == [(s, e) for s, e in
                                                       list(log.read(date, streams=["derived"]))]


def test_instrument_symbol_filter(tmp_path):
    log = EventLog(tmp_path)
    with log.writer(clock=ManualClock(DAY0)) as w:
        w.append(Instrument(DAY0, DAY0, 4, "NQZ3", "dtc"))
        w.append(Instrument(DAY0, DAY0, 5, "ESZ3", "dtc"))
        for i in range(50):
            w.append(Trade(DAY0 + i, DAY0 + i, 4 + i % 2, float(i), 1.0, 0))
    got = [e for _, e in log.read(utc_day(DAY0), instruments=["ESZ3"])]
    assert len(got) == 26 and all(e.instrument == 5 for e in got)


def test_rollover_across_utc_midnight_loses_nothing(tmp_path):
    log = EventLog(tmp_path)
    start = DAY0 + NS_PER_DAY - 1_000_000  # 1 ms before midnight
    clock = ManualClock(start)
    trades = []
    with log.writer(clock=clock, frame_max_events=3) as w:
        w.append(Instrument(start, start, 1, "ESZ3", "dtc", tick_size=0.25))
        w.append(Instrument(start, start, 2, "NQZ3", "dtc", tick_size=0.25))
        for i in range(20):
            t = start + i * 100_000  # crosses midnight at i == 10
            clock.set(t)
            trades.append(Trade(t, t, 1 + i % 2, float(i), 1.0, 1))
            w.append(trades[-1])
    d1, d2 = utc_day(start), utc_day(start + 2_000_000)
    assert log.dates() == [d1, d2]
    day1 = list(log.read(d1))
    day2 = list(log.read(d2))
    assert type(day1[-1][1]) is RecordingEnded and day1[-1][1].reason == "rollover"
    assert type(day2[0][1]) is RecordingStarted and type(day2[-1][1]) is RecordingEnded
    assert [s for s, _ in day2] == list(range(len(day2)))  # seq restarts per day
    # instruments re-declared in the new segment, before the first trade
    kinds2 = [type(e).__name__ for _, e in day2]
    assert kinds2[1:3] == ["Instrument", "Instrument"]
    assert {e.symbol for _, e in day2[1:3]} == {"ESZ3", "NQZ3"}
    assert all(utc_day(e.ts_recv) == d2 for _, e in day2)
    got = [e for _, e in day1 + day2 if type(e) is Trade]
    assert got == trades


def test_writer_scans_existing_segments_for_seq(tmp_path):
    log = EventLog(tmp_path)
    clock = ManualClock(DAY0)
    with log.writer(clock=clock) as w:
        w.append_many(Trade(DAY0, DAY0, 1, 1.0, 1.0) for _ in range(10))
        first_last = w.last_seq
    with log.writer(clock=clock) as w2:
        assert w2.last_seq == first_last + 2  # RecordingEnded, then its own RecordingStarted
        assert w2.append(Trade(DAY0, DAY0, 1, 1.0, 1.0)) == first_last + 3
    with log.writer("derived", clock=clock) as w3:
        assert w3.last_seq == 0  # another stream has its own seq


def test_tick_closes_old_frame_and_flush_writes(tmp_path):
    log = EventLog(tmp_path)
    clock = ManualClock(DAY0)
    w = log.writer(clock=clock, frame_max_ms=50, frame_max_events=1000)
    size0 = w.path.stat().st_size
    w.append(Trade(DAY0, DAY0, 1, 1.0, 1.0))
    w.tick()
    assert w.path.stat().st_size == size0  # young frame stays open
    clock.advance(60_000_000)
    w.tick()
    size1 = w.path.stat().st_size
    assert size1 > size0
    w.append(Trade(DAY0 + 1, DAY0 + 1, 1, 2.0, 1.0))
    w.flush()
    assert w.path.stat().st_size > size1
    w.close()
    assert w.closed


def test_exception_closes_with_error_reason(tmp_path):
    log = EventLog(tmp_path)
    with pytest.raises(ZeroDivisionError):
        with log.writer(clock=ManualClock(DAY0)) as w:
            w.append(Trade(DAY0, DAY0, 1, 1.0, 1.0))
            1 / 0
    last = list(log.read(utc_day(DAY0)))[-1][1]
    assert type(last) is RecordingEnded and last.reason == "error: ZeroDivisionError"
    assert last.events == 2


# --- columnar fast path --------------------------------------------------------------------------

COLUMN_FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                          st.integers(-(2**53), 2**53))
SMALL = st.integers(-128, 127)
MARKET = [
    st.builds(Trade, TS, TS, st.integers(-1, 2**31 - 1), COLUMN_FLOATS, COLUMN_FLOATS,
              st.integers(-1, 1)),
    st.builds(Quote, TS, TS, st.integers(-1, 2**31 - 1), COLUMN_FLOATS, COLUMN_FLOATS,
              COLUMN_FLOATS, COLUMN_FLOATS),
    st.builds(BookLevel, TS, TS, st.integers(-1, 2**31 - 1), st.integers(-1, 1), COLUMN_FLOATS,
              COLUMN_FLOATS, st.integers(0, 3), st.integers(-1, 32767),
              st.integers(0, 2**31 - 1), st.integers(0, 255)),
]
# the instrument column is int32: ids stay in its range, as the registry hands them out
OTHERS = [event_strategy(c, instrument=st.integers(-1, 2**31 - 1))
          for c in (Instrument, SessionStat, FeedStatus, Gap)]
MIXED = st.lists(st.one_of(*MARKET, *OTHERS), min_size=1, max_size=60)


def assert_batches_equal(a: ColumnBatch, b: ColumnBatch) -> None:
    assert len(a) == len(b)
    for name in COLUMN_SPEC:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        if x.dtype.kind == "f":
            assert np.array_equal(x, y, equal_nan=True), name
        else:
            assert np.array_equal(x, y), name
    assert len(a.objects) == len(b.objects)
    assert all(same(p, q) for p, q in zip(a.objects, b.objects))


@settings(max_examples=60, deadline=None)
@given(MIXED)
def test_decode_columns_agrees_with_from_events(events):
    payload = EventCodec().encode_many(events)
    assert_batches_equal(decode_columns(payload, len(events), 100),
                         ColumnBatch.from_events(events, range(100, 100 + len(events))))


@SETTINGS
@given(MIXED, st.integers(1, 9))
def test_read_batches_agrees_with_read(tmp_path_factory, events, frame_max):
    events.sort(key=lambda e: e.ts_recv)
    log = EventLog(tmp_path_factory.mktemp("log"))
    with log.writer(clock=ManualClock(DAY0), frame_max_events=frame_max) as w:
        w.append_many(events)
    date = utc_day(DAY0)
    typed = list(log.read(date))
    batches = list(log.read_batches(date, min_rows=3))
    assert_batches_equal(ColumnBatch.concat(batches),
                         ColumnBatch.from_events([e for _, e in typed], [s for s, _ in typed]))
    mid = DAY0 + NS_PER_DAY // 2
    typed = list(log.read(date, start=mid, kinds=[Trade, BookLevel, Gap]))
    got = ColumnBatch.concat(list(log.read_batches(date, start=mid,
                                                   kinds=[Trade, BookLevel, Gap])))
    assert_batches_equal(got, ColumnBatch.from_events([e for _, e in typed],
                                                      [s for s, _ in typed]))


def test_columns_accept_every_msgpack_number_encoding():
    # ints of every width in float fields, float32, negative ints: all as msgspec/msgpack write
    raw_events = [
        [10, 1, 2, 3, 5, 7, -1],  # fixints in float fields
        [10, 1, 2, 3, 300, 70000, 1],  # uint16 / uint32
        [10, 1, 2, 3, -200, -70000, 0],  # int16 / int32
        [10, 1, 2, 3, 2**40, -(2**40), 1],  # 64-bit ints
        [11, 1, 2, 3, 1.5, 2, 3.25, 4],
        [12, 1, 2, 3, 1, 4999.75, 12, 1],  # BookLevel without its defaulted fields
    ]
    payload = msgspec.msgpack.encode(raw_events)
    events = EventCodec().decode_many(payload)
    assert_batches_equal(decode_columns(payload, len(events)), ColumnBatch.from_events(events))
    # float32 (msgspec never writes it, other msgpack writers may)
    f32 = bytearray(msgspec.msgpack.encode([[10, 1, 2, 3, 0.0, 1.0, 0]]))
    i = f32.index(b"\xcb")
    f32[i : i + 9] = b"\xca\x3f\xc0\x00\x00"  # 1.5 as float32
    b = decode_columns(bytes(f32), 1)
    assert b.price[0] == 1.5 and b.size[0] == 1.0
