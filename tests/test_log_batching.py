"""read_batches decodes consecutive frames into one batch: same rows, order, filters and damage
reporting as ``read`` whatever the batch size (max_rows) and frame size."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mia.engine.clock import NS_PER_DAY, ManualClock, utc_day
from mia.engine.columns import COLUMN_SPEC, ColumnBatch
from mia.engine.errors import LogCorruptError
from mia.engine.events import BookLevel, EventCodec, Gap, Instrument, Quote, Trade
from mia.engine.fastdecode import decode_columns, decode_columns_into, empty_batch
from mia.engine.log import EventLog

DAY0 = 19_676 * NS_PER_DAY
SETTINGS = settings(max_examples=20, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def assert_batches_equal(a: ColumnBatch, b: ColumnBatch) -> None:
    assert len(a) == len(b)
    for name in COLUMN_SPEC:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name
    assert a.objects == b.objects


def expected(log: EventLog, date: str, **kw) -> ColumnBatch:
    typed = list(log.read(date, **kw))
    return ColumnBatch.from_events([e for _, e in typed], [s for s, _ in typed])


@st.composite
def day_of_events(draw):
    """Events on two instruments (declared mid-stream, one re-declared) in ts_recv order."""
    n = draw(st.integers(1, 120))
    gaps = draw(st.lists(st.integers(0, 3_000_000_000), min_size=n, max_size=n))
    kinds = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    insts = draw(st.lists(st.sampled_from([1, 2]), min_size=n, max_size=n))
    events, t = [], DAY0 + 1_000
    for gap, k, inst in zip(gaps, kinds, insts):
        t += gap
        if k == 0:
            events.append(Trade(t - 5, t, inst, 100.0 + gap % 7, 1.0 + k, 1 if gap % 2 else -1))
        elif k == 1:
            events.append(Quote(t - 5, t, inst, 99.75, 3.0, 100.25, 4.0))
        elif k == 2:
            events.append(BookLevel(t - 5, t, inst, 1, 99.5, 2.0, 0, gap % 5, 2, 0))
        elif k == 3:
            events.append(Instrument(t, t, inst, f"SYM{inst}", "test", "", 0.25, 50.0))
        else:
            events.append(Gap(t, t, "dtc", t - 10, t, "test", inst))
    return events


@SETTINGS
@given(day_of_events(), st.integers(1, 7), st.integers(1, 40), st.integers(1, 10))
def test_batched_reads_equal_read(tmp_path_factory, events, frame_max, max_rows, min_rows):
    log = EventLog(tmp_path_factory.mktemp("log"))
    with log.writer(clock=ManualClock(DAY0), frame_max_events=frame_max) as w:
        w.append_many(events)
    date = utc_day(DAY0)
    mid = events[len(events) // 2].ts_recv
    for kw in ({}, {"start": mid}, {"end": mid}, {"kinds": [Trade, Gap, Instrument]},
               {"instruments": ["SYM1"]}, {"instruments": [2], "start": mid}):
        batches = list(log.read_batches(date, max_rows=max_rows, min_rows=min_rows, **kw))
        assert all(len(b) for b in batches)
        assert_batches_equal(ColumnBatch.concat(batches), expected(log, date, **kw))


@SETTINGS
@given(day_of_events(), day_of_events(), st.integers(1, 5), st.integers(1, 30))
def test_batched_merge_of_two_streams_equals_read(tmp_path_factory, a, b, frame_max, max_rows):
    log = EventLog(tmp_path_factory.mktemp("log"))
    with log.writer("live", clock=ManualClock(DAY0), frame_max_events=frame_max) as wa, \
            log.writer("other", clock=ManualClock(DAY0), frame_max_events=frame_max) as wb:
        wa.append_many(a)
        wb.append_many(b)
    date = utc_day(DAY0)
    for kw in ({}, {"instruments": ["SYM2"]}):
        got = ColumnBatch.concat(list(log.read_batches(date, max_rows=max_rows, **kw)))
        assert_batches_equal(got, expected(log, date, **kw))


def test_frames_fill_a_batch_up_to_max_rows(tmp_path):
    log = EventLog(tmp_path)
    t = DAY0 + 1_000
    with log.writer(clock=ManualClock(DAY0), frame_max_events=10) as w:
        for i in range(1_000):
            w.append(Trade(t + i, t + i, 1, 100.0, 1.0, 1))
    date = utc_day(DAY0)
    sizes = [len(b) for b in log.read_batches(date, max_rows=300)]
    # RecordingStarted is a frame of its own, then frames of 10; RecordingEnded closes the last
    assert sum(sizes) == 1_002 and max(sizes) <= 300 and len(sizes) == 4
    assert [len(b) for b in log.read_batches(date, max_rows=1, min_rows=1)][:3] == [1, 10, 10]
    with pytest.raises(Exception, match="max_rows"):
        list(log.read_batches(date, max_rows=0))


def test_rows_before_a_bad_frame_are_handed_on_before_it_is_reported(tmp_path):
    def mangling_encode(event) -> bytes:  # what the writer encodes is what the frame holds
        return EventCodec().encode(event).replace(b"BADSYM", b"\xff\xfe\xfd\xfc\xfb\xfa")

    log = EventLog(tmp_path)
    t = DAY0 + 1_000
    w = log.writer(clock=ManualClock(DAY0))
    for i in range(5):
        w.append(Trade(t + i, t + i, 1, 1.0, 1.0, 1))
        w.flush()
    encode, w._encode = w._encode, mangling_encode
    w.append(Instrument(t + 10, t + 10, 2, "BADSYM", "test", "", 0.25, 50.0))
    w.flush()
    w._encode = encode
    w.append(Trade(t + 20, t + 20, 1, 3.0, 1.0, 1))
    w.close()
    date = utc_day(DAY0)
    seen: list = []
    for b in log.read_batches(date, min_rows=1, on_problem=lambda p: seen.append("problem")):
        seen.append(len(b))
    assert seen == [6, "problem", 2]  # RecordingStarted + 5 trades | trade + RecordingEnded
    got = []
    with pytest.raises(LogCorruptError):
        for b in log.read_batches(date, strict=True, min_rows=1):
            got.append(len(b))
    assert got == [6]


def test_decode_columns_into_fills_every_column_of_garbage_rows():
    events = [Trade(1, 2, 3, 4.0, 5.0, 1), Gap(6, 7, "dtc", 1, 2, "x"),
              Quote(8, 9, 3, 1.0, 2.0, 3.0, 4.0), BookLevel(1, 2, 3, -1, 5.0, 6.0, 1, 2, 3, 4)]
    payload = EventCodec().encode_many(events)
    batch = empty_batch(10)
    for name in COLUMN_SPEC:  # garbage the decoder must overwrite
        getattr(batch, name)[:] = 7
    batch.objects.append("earlier")
    decode_columns_into(batch, 3, payload, len(events), 50)
    want = ColumnBatch.from_events(events, range(50, 54))
    rows = slice(3, 7)
    for name in COLUMN_SPEC:
        got = getattr(batch, name)[rows]
        ref = getattr(want, name)
        if name == "obj":
            ref = np.where(ref >= 0, ref + 1, ref)  # after the one earlier object
        assert np.array_equal(got, ref, equal_nan=got.dtype.kind == "f"), name
    assert batch.objects == ["earlier", events[1]]
    assert_batches_equal(decode_columns(payload, len(events)), ColumnBatch.from_events(events))
    with pytest.raises(ValueError, match="do not fit"):
        decode_columns_into(batch, 8, payload, len(events))


def test_a_batch_stays_under_max_bytes_when_frames_are_big(tmp_path):
    """Frames of big objects (a chains stream's) are packed up to max_bytes of uncompressed
    payload, not up to max_rows: what is held stays bounded; the rows are the uncapped read's."""
    from mia.engine.log.format import Frame, open_segment

    log = EventLog(tmp_path)
    t = DAY0 + 1_000
    with log.writer(clock=ManualClock(DAY0), frame_max_events=3) as w:
        for i in range(60):
            w.append(Instrument(t + i, t + i, i, f"S{i}" + "x" * 20_000, "test", "", 0.25, 50.0))
            w.append(Trade(t + i, t + i, i, 100.0, 1.0, 1))
    date = utc_day(DAY0)
    frames = []
    for info in log.segments(date):
        with open_segment(info.path) as seg:
            frames += [f for f in seg.scan() if isinstance(f, Frame)]
    ulen = {seq: f.ulen for f in frames for seq in range(f.first_seq, f.first_seq + f.count)}
    first = {f.first_seq for f in frames}
    cap = 2 * max(f.ulen for f in frames) + 100
    capped = list(log.read_batches(date, min_rows=1, max_bytes=cap))
    assert len(capped) > 3
    for b in capped:
        held = sum(ulen[s] for s in b.seq.tolist() if s in first)
        assert held <= cap
    assert len(list(log.read_batches(date, min_rows=1))) == 1  # uncapped: one batch
    assert_batches_equal(ColumnBatch.concat(capped),
                         ColumnBatch.concat(list(log.read_batches(date))))
    assert_batches_equal(ColumnBatch.concat(capped), expected(log, date))
    # a frame bigger than the cap is a batch of its own
    alone = list(log.read_batches(date, min_rows=1, max_bytes=1))
    assert len(alone) == len(frames)
    assert_batches_equal(ColumnBatch.concat(alone), expected(log, date))
