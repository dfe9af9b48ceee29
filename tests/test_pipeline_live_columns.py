"""Live ingest builds its columns through the log's decoder; they must equal from_events, bit for bit.

Also: the recorder drains a packet's events as soon as the packet is handled, not on a timer.
"""

import asyncio
import logging
import math

import msgspec
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mia.engine.columns import COLUMN_SPEC, ColumnBatch
from mia.engine.events import (
    BookLevel,
    DtcRaw,
    EventCodec,
    FeedStatus,
    Gap,
    Heartbeat,
    Instrument,
    Quote,
    SessionStat,
    Trade,
)
from mia.engine.pipeline import Pipeline

NAN = math.nan

ts = st.integers(0, 2**62)
inst = st.integers(-1, 2**31 - 1)
price = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(NAN), st.just(-0.0))
small = st.integers(-128, 127)

events = st.one_of(
    st.builds(Trade, ts, ts, inst, price, price, st.integers(-1, 1)),
    st.builds(Quote, ts, ts, inst, price, price, price, price),
    st.builds(BookLevel, ts, ts, inst, small, price, price, small,
              st.integers(-1, 2**15 - 1), st.integers(0, 2**31 - 1), st.integers(0, 255)),
    st.builds(Instrument, ts, ts, inst, st.text(max_size=8), st.just("dtc:x"), st.just("CME"), price),
    st.builds(SessionStat, ts, ts, inst, price, price),
    st.builds(DtcRaw, ts, ts, st.just("dtc:x"), st.integers(0, 65535), st.binary(max_size=16)),
    st.builds(FeedStatus, ts, ts, st.just("dtc:x"), st.integers(0, 9), inst, st.text(max_size=8)),
    st.builds(Gap, ts, ts, st.just("dtc:x"), ts, ts, st.text(max_size=8)),
    st.builds(Heartbeat, ts, ts, st.just("recorder"), st.integers(0, 10**6)),
)


def assert_same_columns(got: ColumnBatch, want: ColumnBatch) -> None:
    assert len(got) == len(want)
    for name in COLUMN_SPEC:
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype, name
        # bit for bit: NaN payloads and -0.0 included
        assert a.tobytes() == b.tobytes(), name
    # NaN fields make == useless: compare the objects by their encoded bytes
    assert [type(o) for o in got.objects] == [type(o) for o in want.objects]
    assert msgspec.msgpack.encode(got.objects) == msgspec.msgpack.encode(want.objects)


class _Writer:
    """Stands in for LogWriter: hands each row to on_write with its seq and encoding."""

    def __init__(self, on_write, seqs):
        self.on_write = on_write
        self.seqs = iter(seqs)
        self.codec = EventCodec()

    def append(self, ev):
        seq = next(self.seqs)
        self.on_write(seq, ev, self.codec.encode(ev))
        return seq


class _Capture:
    def __init__(self):
        self.batches: list[ColumnBatch] = []

    def on_batch(self, batch):
        self.batches.append(batch)
        return []


class _Fallbacks(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def _ingest(evs, seqs) -> ColumnBatch:
    """The batch the reducers get from a live ingest; fails if the fast path fell back."""
    cap = _Capture()
    pipe = Pipeline([cap])
    pipe.input_writer = _Writer(pipe.on_input_written, seqs)
    fallbacks = _Fallbacks()
    pipeline_logger = logging.getLogger("mia.engine.pipeline")
    pipeline_logger.addHandler(fallbacks)
    try:
        pipe.ingest(evs)
    finally:
        pipeline_logger.removeHandler(fallbacks)
    assert not fallbacks.records, [r.getMessage() for r in fallbacks.records]
    (batch,) = cap.batches
    return batch


@settings(max_examples=150, deadline=None)
@given(st.lists(events, min_size=1, max_size=40), st.integers(0, 2**40 - 100),
       st.integers(0, 40), st.integers(0, 50))
def test_live_columns_equal_from_events_for_any_event_mix(evs, first, cut, restart):
    # seqs run from `first`; at `cut` they restart (a UTC-midnight rollover) at `restart`
    cut = min(cut, len(evs))
    seqs = list(range(first, first + cut)) + list(range(restart, restart + len(evs) - cut))
    got = _ingest(evs, seqs)
    assert_same_columns(got, ColumnBatch.from_events(evs, seqs))


def test_rollover_seqs_are_kept_per_row():
    evs = [Trade(i, i, 1, 100.0 + i, 1.0, 1) for i in range(6)]
    seqs = [7, 8, 9, 0, 1, 2]
    got = _ingest(evs, seqs)
    assert got.seq.tolist() == seqs
    assert got.price.tolist() == [100.0 + i for i in range(6)]


def test_contiguous_seqs_fill_the_column():
    evs = [Quote(i, i, 2, 1.0, 2.0, 3.0, float(i)) for i in range(5)]
    got = _ingest(evs, range(1000, 1005))
    assert got.seq.tolist() == list(range(1000, 1005))
    assert got.ask_size.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert np.isnan(got.price).all()


def test_recorder_drains_a_packet_without_waiting_for_the_timer(tmp_path):
    """emit() schedules a drain with call_soon: the events are ingested on the next loop turn
    (no timer task runs here: Recorder.run is not called)."""
    from mia.config import Config
    from mia.recorder import live

    ingested: list = []

    class _Pipe:
        def ingest(self, evs):
            ingested.append(list(evs))

    async def go():
        rec = live.Recorder(Config(), str(tmp_path))
        rec._pipeline = _Pipe()
        emit = rec._emitter("dtc:test")
        for i in range(3):  # one packet's events
            emit(Trade(i, i + 5, 1, 1.0, 1.0, 1))
        assert ingested == []  # nothing runs inside emit
        await asyncio.sleep(0)
        assert [len(b) for b in ingested] == [3]
        # a burst larger than one drain's share goes in bounded pieces, in order
        n = live.MAX_DRAIN_EVENTS + 10
        for i in range(n):
            emit(Trade(i, i + 5, 1, 1.0, 1.0, 1))
        for _ in range(3):
            await asyncio.sleep(0)
        assert [len(b) for b in ingested[1:]] == [live.MAX_DRAIN_EVENTS, 10]
        assert [e.ts_event for b in ingested[1:] for e in b] == list(range(n))
        assert rec.stats["dtc:test"].events == 3 + n

    asyncio.run(go())
