"""Log format 2 (columnar frames): every event type round-trips bit for bit, columns equal the
reference conversion and the format-1 decode, filters and inspect agree across formats, and a day
holding segments of both formats reads, merges and replays (with --check) like a one-format day."""

from __future__ import annotations

import asyncio
import typing

import msgspec
import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mia.engine.clock import NS_PER_DAY, ManualClock, utc_day
from mia.engine.columns import COLUMN_SPEC, ColumnBatch
from mia.engine.events import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    BookLevel,
    EventCodec,
    Gap,
    Instrument,
    Quote,
    Trade,
)
from mia.engine.log import EventLog, frame2
from mia.engine.log.format import Frame, FrameDecoder, open_segment

DAY0 = 19_676 * NS_PER_DAY  # 2023-11-15 00:00 UTC
DATE = utc_day(DAY0)
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
CODEC = EventCodec()

# --- strategies: every field of every event type, edge values included --------------------------

FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True),  # NaN, ±inf, -0.0, subnormals
                   st.sampled_from([0.25, -0.0, 5000.25, 1e-300, 2.0**60, 0.1]),
                   st.integers(-(2**53), 2**53))  # msgspec writes ints into float fields
WIDE_INTS = st.one_of(st.integers(-130, 300), st.integers(-(2**63), 2**63 - 1),
                      st.integers(2**63, 2**64 - 1))  # msgpack's uint64 too


def _strategy(tp, ints) -> st.SearchStrategy:
    if tp is float:
        return FLOATS
    if tp is int:
        return ints
    if tp is bool:
        return st.booleans()
    if tp is str:
        return st.text(max_size=12)  # "" included
    if tp is bytes:
        return st.binary(max_size=24)  # b"" included
    if typing.get_origin(tp) is list:
        (inner,) = typing.get_args(tp)
        return st.lists(_strategy(inner, ints), max_size=3)
    raise AssertionError(f"no strategy for {tp}")


def events_of(cls, ints=WIDE_INTS, **overrides) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls)
    fields = {name: _strategy(hints[name], ints) for name in cls.__struct_fields__}
    fields.update((k, v) for k, v in overrides.items() if k in fields)
    return st.builds(cls, **fields)


ANY_EVENT = st.one_of(*[events_of(t) for t in EVENT_TYPES])
# what a column holds exactly: int64 timestamps, market ints within their column's dtype
TS = st.integers(DAY0, DAY0 + NS_PER_DAY - 1)
MARKET = st.one_of(
    st.builds(Trade, st.integers(-(2**63), 2**63 - 1), TS, st.integers(-(2**31), 2**31 - 1),
              FLOATS, FLOATS, st.integers(-128, 127)),
    st.builds(Quote, TS, TS, st.integers(0, 5), FLOATS, FLOATS, FLOATS, FLOATS),
    st.builds(BookLevel, TS, TS, st.integers(0, 5), st.integers(-1, 1), FLOATS, FLOATS,
              st.integers(-128, 127), st.integers(-(2**15), 2**15 - 1),
              st.integers(-(2**31), 2**31 - 1), st.integers(0, 255)))
# other kinds: only their kind, timestamps and instrument are columns
SAFE_OBJECTS = st.one_of(*[events_of(t, ts_event=TS, ts_recv=TS,
                                     instrument=st.integers(-(2**31), 2**31 - 1))
                           for t in EVENT_TYPES if t not in (Trade, Quote, BookLevel)])


def _frame(payload: bytes, count: int, first_seq: int) -> Frame:
    comp = zstandard.ZstdCompressor().compress(payload)
    return Frame(0, count, first_seq, 0, 0, len(comp), len(payload), comp)


def _bits(events) -> bytes:
    """Every field, floats by their bits (NaN payloads and -0.0 included)."""
    return CODEC.encode_many(list(events))


def _same_columns(got: ColumnBatch, want: ColumnBatch) -> None:
    for name in COLUMN_SPEC:
        assert getattr(got, name).tobytes() == getattr(want, name).tobytes(), name
    assert _bits(got.objects) == _bits(want.objects)


# --- the frame codec -----------------------------------------------------------------------------


@SETTINGS
@given(st.lists(ANY_EVENT, min_size=1, max_size=25), st.integers(0, 2**40))
def test_every_event_type_round_trips_exactly_through_a_format2_frame(events, first_seq):
    """Typed events from a format-2 frame equal, bit for bit, the format-1 decode of the same
    events: huge and negative ints, NaN, ±inf, -0.0, empty strings and bytes included. A frame
    whose ints a column cannot hold goes as msgpack (mode 0), never wrapped."""
    n = len(events)
    msgpack_payload = CODEC.encode_many(events)
    payload = frame2.encode(msgpack_payload, n)
    want = CODEC.decode_many(msgpack_payload)  # what format 1 reads back
    frame = _frame(payload, n, first_seq)
    dec = FrameDecoder(SCHEMA_VERSION, 2)
    assert _bits(dec.events(frame)) == _bits(want)
    kind, ts_recv, inst = dec.index(frame)
    try:
        ref = ColumnBatch.from_events(want, range(first_seq, first_seq + n))
    except OverflowError:  # no column holds it: the typed round trip above is the contract
        return
    if all(-(2**63) <= e.ts_event < 2**63 for e in want):
        _same_columns(dec.columns(frame), ref)
        assert (kind == ref.kind).all() and (ts_recv == ref.ts_recv).all()
        assert (inst == ref.instrument).all()


@SETTINGS
@given(st.lists(st.one_of(MARKET, MARKET, SAFE_OBJECTS), min_size=1, max_size=60),
       st.integers(0, 2**40))
def test_market_rows_live_in_columns_and_equal_the_reference(events, first_seq):
    """Events a column holds exactly are stored as columns (mode 1); decoded to columns they
    equal ColumnBatch.from_events and the format-1 columnar decode, bit for bit."""
    n = len(events)
    msgpack_payload = CODEC.encode_many(events)
    payload = frame2.encode(msgpack_payload, n)
    assert payload[0] == frame2.MODE_COLUMNS
    seqs = range(first_seq, first_seq + n)
    want = CODEC.decode_many(msgpack_payload)
    ref = ColumnBatch.from_events(want, seqs)
    got = FrameDecoder(SCHEMA_VERSION, 2).columns(_frame(payload, n, first_seq))
    _same_columns(got, ref)
    _same_columns(FrameDecoder(SCHEMA_VERSION, 1).columns(_frame(msgpack_payload, n, first_seq)),
                  ref)
    assert _bits(CODEC.decode_many(frame2.msgpack_of(payload, n))) == _bits(want)


def test_narrowing_is_chosen_per_column_and_kept_exact():
    """Tick prices go as small scaled-int deltas, odd floats as float32 or float64; each decodes
    to the very float64 written."""
    ticks = [Trade(1, 1_000 + i, 7, 5000.25 + 0.25 * (i % 3), float(i % 9), 1) for i in range(50)]
    thirds = [Trade(1, 2_000 + i, 7, 1 / 3 + i, 0.1 * i, -1) for i in range(50)]  # float64 only
    halves = [Quote(1, 3_000 + i, 7, np.float32(0.1).item(), 2.0, -0.0, float("nan"))
              for i in range(50)]  # float32 exact, -0.0 and NaN kept
    for events in (ticks, thirds, halves):
        payload = frame2.encode(CODEC.encode_many(events), len(events))
        got = frame2.decode(payload, len(events), 0, CODEC.decode_many)
        _same_columns(got, ColumnBatch.from_events(events, range(len(events))))
        assert _bits(CODEC.decode_many(frame2.msgpack_of(payload, len(events)))) == _bits(events)
    tick_bytes = len(frame2.encode(CODEC.encode_many(ticks), 50))
    third_bytes = len(frame2.encode(CODEC.encode_many(thirds), 50))
    assert tick_bytes < third_bytes - 50 * 8  # prices and sizes: 1 byte each instead of 8


def test_a_corrupt_columnar_payload_is_a_bad_frame_never_a_crash():
    """The CRC guards the bytes; behind it the decoder still checks every length it reads."""
    from mia.engine.log.format import BadFrame

    events = [Trade(1, 10 + i, 1, 1.0 + i, 1.0, 1) for i in range(40)] + [Gap(1, 99, "dtc", 1, 2, "x")]
    payload = frame2.encode(CODEC.encode_many(events), len(events))
    dec = FrameDecoder(SCHEMA_VERSION, 2)
    rng = np.random.default_rng(5)
    for cut in (33, len(payload) // 2, len(payload) - 1):
        with pytest.raises(BadFrame):
            dec.columns(_frame(payload[:cut], len(events), 0))
    for _ in range(200):  # flips inside the payload: a BadFrame or some decode, never a crash
        bad = bytearray(payload)
        bad[int(rng.integers(0, 64))] ^= 1 << int(rng.integers(0, 8))
        try:
            dec.columns(_frame(bytes(bad), len(events), 0))
        except BadFrame:
            pass


# --- days -----------------------------------------------------------------------------------------


def _market_day(n: int, seed: int = 3) -> list:
    rng = np.random.default_rng(seed)
    out = [Instrument(DAY0, DAY0 + 1, 1, "ESZ3", "dtc", "CME", 0.25, 50.0),
           Instrument(DAY0, DAY0 + 1, 2, "NQZ3", "dtc", "CME", 0.25, 20.0)]
    t = DAY0 + 10**9
    for i in range(n):
        t += int(rng.integers(1, 5_000_000))
        inst = int(rng.integers(1, 3))
        px = 4000 + 0.25 * int(rng.integers(0, 400))
        k = i % 5
        if k == 0:
            out.append(Trade(t - 100, t, inst, px, float(rng.integers(1, 9)), 1))
        elif k == 1:
            out.append(Quote(t - 100, t, inst, px, 3.0, px + 0.25, 4.0))
        elif k == 4 and i % 50 == 4:
            out.append(Gap(t, t, "dtc", t - 10, t - 5, "test gap"))
        else:
            out.append(BookLevel(t - 100, t, inst, 1, px, 2.0, 1, i % 10, 1, 0))
    return out


def _write(root, events, fmt: int, recording_id: str = "r1", clock_at: int = DAY0) -> None:
    with EventLog(root).writer(clock=ManualClock(clock_at), frame_max_events=97, fsync="never",
                               recording_id=recording_id, format_version=fmt) as w:
        w.append_many(events)


@pytest.mark.parametrize("query", [
    {}, {"kinds": ["Trade"]}, {"kinds": [Gap, Instrument]}, {"instruments": ["NQZ3"]},
    {"instruments": [1]}, {"start": DAY0 + 2 * 10**9, "end": DAY0 + 4 * 10**9},
])
def test_a_format2_day_reads_like_a_format1_day(tmp_path, query):
    events = _market_day(1500)
    _write(tmp_path / "f1", events, 1)
    _write(tmp_path / "f2", events, 2)
    f1, f2 = EventLog(tmp_path / "f1"), EventLog(tmp_path / "f2")
    assert [s.format_version for s in f2.segments(DATE)] == [2]
    rows1, rows2 = list(f1.read(DATE, **query)), list(f2.read(DATE, **query))
    assert [s for s, _ in rows1] == [s for s, _ in rows2]
    assert _bits(e for _, e in rows1) == _bits(e for _, e in rows2)
    b1 = ColumnBatch.concat(list(f1.read_batches(DATE, **query)))
    b2 = ColumnBatch.concat(list(f2.read_batches(DATE, **query)))
    _same_columns(b2, b1)
    _same_columns(b2, ColumnBatch.from_events([e for _, e in rows2], [s for s, _ in rows2]))
    (st1,), (st2,) = f1.inspect(DATE), f2.inspect(DATE)
    assert (st1.kinds, st1.instruments, st1.events, st1.state) == \
        (st2.kinds, st2.instruments, st2.events, st2.state)
    assert f2.verify(DATE).ok
    assert st2.info.size < st1.info.size


def test_a_day_of_both_formats_reads_merges_and_replays_like_one_format(tmp_path):
    """Segment one format 1, segment two format 2 (a restart after an upgrade), and a second
    stream of each format interleaving with them: the merge by ts_recv is that of a one-format
    day, seq continues across the restart, and replay_day gives the same result."""
    from mia.replay import replay_day

    events = _market_day(3000)
    half = len(events) // 2
    other = [Trade(e.ts_event, e.ts_recv + 1, 1, 1234.5, 1.0, -1) for e in events[2:half:7]]
    roots = {"mixed": (1, 2, 2), "f1": (1, 1, 1), "f2": (2, 2, 2)}
    for name, (a, b, c) in roots.items():
        root = tmp_path / name
        _write(root, events[:half], a, "run1")
        _write(root, events[:2] + events[half:], b, "run2", clock_at=events[half].ts_recv)
        with EventLog(root).writer("side", clock=ManualClock(DAY0), fsync="never",
                                   recording_id="run1", frame_max_events=13,
                                   format_version=c) as w:
            w.append_many(events[:2] + other)
    mixed = EventLog(tmp_path / "mixed")
    assert sorted(s.format_version for s in mixed.segments(DATE)) == [1, 2, 2]
    rows = {name: list(EventLog(tmp_path / name).read(DATE)) for name in roots}
    assert [s for s, _ in rows["mixed"]] == [s for s, _ in rows["f1"]] == [s for s, _ in rows["f2"]]
    assert _bits(e for _, e in rows["mixed"]) == _bits(e for _, e in rows["f1"])
    at = [i for i, (_, e) in enumerate(rows["mixed"]) if type(e) is Trade and e.price == 1234.5]
    assert len(at) == len(other) and at[-1] - at[0] > 2 * len(other)  # interleaved by ts_recv
    batches = ColumnBatch.concat(list(mixed.read_batches(DATE)))
    _same_columns(batches, ColumnBatch.from_events([e for _, e in rows["f1"]],
                                                   [s for s, _ in rows["f1"]]))
    results = {name: replay_day(str(tmp_path / name), DATE) for name in roots}
    want = msgspec.json.encode(results["f1"].json())
    assert results["f1"].events > len(events)
    for name in ("mixed", "f2"):
        assert msgspec.json.encode(results[name].json()) == want, name


def test_recordings_of_both_formats_on_one_day_replay_check_ok(tmp_path):
    """A real recording in format 1, then one in format 2, on the same day: `replay --check`
    recomputes what both recorders computed live, bit for bit."""
    from mia.config import Config
    from mia.data.dtc.config import DtcConfig
    from mia.data.dtc.server import DtcSimulator
    from mia.data.polygon.config import PolygonConfig
    from mia.engine.bus import BusConfig
    from mia.engine.log import LogConfig
    from mia.recorder.live import Recorder
    from mia.replay import replay_day

    async def record(fmt: int) -> None:
        async with DtcSimulator(seed=fmt, rate=3000.0) as sim:
            cfg = Config(dtc=[DtcConfig(host="127.0.0.1", port=sim.port, symbols=["ESZ6"])],
                         polygon=PolygonConfig(enabled=False), bus=BusConfig(enabled=False),
                         log=LogConfig(format_version=fmt))
            await Recorder(cfg, str(tmp_path)).run(1.5)

    asyncio.run(record(1))
    asyncio.run(record(2))
    log = EventLog(tmp_path)
    dates = log.dates()
    versions = sorted(s.format_version for d in dates for s in log.segments(d))
    assert versions == [1, 1, 2, 2]  # live and derived of each run
    for date in dates:
        result = replay_day(str(tmp_path), date, check=True)
        assert result.check == "ok", result.mismatch
        with open_segment(log.segments(date)[-1].path) as seg:
            assert seg.format_version == 2


def test_a_frame_that_passes_its_crc_but_not_the_decoder_is_reported_in_order(tmp_path):
    """A writer bug (the CRC covers what it wrote): columnar reads decode frames a batch at a
    time, and still report that frame where it lies and hand on every other row in order."""
    log = EventLog(tmp_path)
    w = log.writer(clock=ManualClock(DAY0), frame_max_events=10, fsync="never",
                   format_version=2)
    w.append_many(_market_day(25))
    w.flush()
    encode = frame2.encode
    span = frame2.encode_span
    w._columnar = lambda payload, n: (encode(payload, n)[:-1], None, None)  # table cut short
    w.append_many([Gap(DAY0 + 10**10, DAY0 + 10**10, "dtc", 1, 2, "broken")])
    w.flush()
    w._columnar = span
    w.append_many(Trade(DAY0 + 10**10 + i, DAY0 + 10**10 + i, 1, 1.0 + i, 1.0, 1)
                  for i in range(30))
    w.close()
    problems: list = []
    rows = list(log.read(DATE, on_problem=problems.append))
    batch_problems: list = []
    batches = list(log.read_batches(DATE, on_problem=batch_problems.append))
    assert len(problems) == 1 and batch_problems == problems
    assert not any(type(e) is Gap and e.reason == "broken" for _, e in rows)
    got = ColumnBatch.concat(batches)
    _same_columns(got, ColumnBatch.from_events([e for _, e in rows], [s for s, _ in rows]))


@pytest.mark.parametrize("fmt", [1, 2])
def test_a_closed_writer_refuses_appends(tmp_path, fmt):
    from mia.engine.errors import LogError

    w = EventLog(tmp_path).writer(clock=ManualClock(DAY0), format_version=fmt)
    w.append(Trade(DAY0, DAY0, 1, 1.0, 1.0))
    w.close()
    with pytest.raises(LogError, match="closed writer"):
        w.append(Trade(DAY0, DAY0 + 1, 1, 1.0, 1.0))
    assert [type(e).__name__ for _, e in EventLog(tmp_path).read(DATE)] == \
        ["RecordingStarted", "Trade", "RecordingEnded"]


def test_columnar_reads_meet_damage_where_typed_reads_do(tmp_path):
    """Frames checked in bulk (runs) stop at a damaged frame: read_batches reports the same
    problems, at the same offsets, and hands on the same rows as read, flip after flip."""
    src = tmp_path / "src"
    _write(src, _market_day(2000), 2)
    (seg,) = EventLog(src).segments(DATE)
    data = seg.path.read_bytes()
    rng = np.random.default_rng(11)
    work = tmp_path / "work"
    for trial in range(12):
        bad = bytearray(data)
        for pos in rng.integers(200, len(data), size=1 + trial % 3).tolist():
            bad[pos] ^= 1 << int(rng.integers(0, 8))
        if trial % 4 == 3:
            bad = bad[:len(bad) - int(rng.integers(1, 200))]  # and a torn tail
        (work / DATE).mkdir(parents=True, exist_ok=True)
        (work / DATE / seg.path.name).write_bytes(bytes(bad))
        log = EventLog(work)
        typed_problems: list = []
        rows = list(log.read(DATE, on_problem=typed_problems.append))
        problems: list = []
        got = ColumnBatch.concat(list(log.read_batches(DATE, on_problem=problems.append)))
        assert problems == typed_problems and problems
        _same_columns(got, ColumnBatch.from_events([e for _, e in rows], [s for s, _ in rows]))
