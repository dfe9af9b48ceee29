"""The numba walker (engine/fastdecode.py) against msgspec: every kind, every msgpack encoding,
schema growth, and malformed bytes (which must raise the errors engine/log.py handles)."""

from __future__ import annotations

import math
import random
import typing

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mia.engine.columns import COLUMN_SPEC, ColumnBatch
from mia.engine.events import (
    EVENT_TYPES,
    BookLevel,
    EventCodec,
    GammaLevels,
    Instrument,
    OrderflowBar,
    Quote,
    SessionStat,
    Trade,
)
from mia.engine.fastdecode import FastDecodeError, decode_columns, decode_index

CODEC = EventCodec()
INT32 = st.integers(-1, 2**31 - 1)
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**53), 2**53))
INTS = st.integers(-(2**63), 2**63 - 1)


def _strategy_for(tp) -> st.SearchStrategy:
    if tp is float:
        return FLOATS
    if tp is int:
        return INTS
    if tp is bool:
        return st.booleans()
    if tp is str:
        return st.text(max_size=20)
    if tp is bytes:
        return st.binary(max_size=40)
    (inner,) = typing.get_args(tp)  # list[...]
    return st.lists(_strategy_for(inner), max_size=3)


def _events_of(cls) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls)
    fields = {name: _strategy_for(hints[name]) for name in cls.__struct_fields__}
    if "instrument" in fields:
        fields["instrument"] = INT32  # the instrument column is int32
    return st.builds(cls, **fields)


MARKET = [
    st.builds(Trade, INTS, INTS, INT32, FLOATS, FLOATS, st.integers(-128, 127)),
    st.builds(Quote, INTS, INTS, INT32, FLOATS, FLOATS, FLOATS, FLOATS),
    st.builds(BookLevel, INTS, INTS, INT32, st.integers(-128, 127), FLOATS, FLOATS,
              st.integers(-128, 127), st.integers(-(2**15), 2**15 - 1), INT32,
              st.integers(0, 255)),
]
OBJECTS = [_events_of(c) for c in EVENT_TYPES if c not in (Trade, Quote, BookLevel)]
ANY = st.lists(st.one_of(*MARKET, *OBJECTS), min_size=0, max_size=40)


def _same(x, y) -> bool:
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    if isinstance(x, list):
        return len(x) == len(y) and all(_same(p, q) for p, q in zip(x, y))
    return x == y


def assert_batches_equal(a: ColumnBatch, b: ColumnBatch) -> None:
    assert len(a) == len(b)
    for name in COLUMN_SPEC:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name
    assert len(a.objects) == len(b.objects)
    for p, q in zip(a.objects, b.objects):
        assert type(p) is type(q)
        assert all(_same(getattr(p, f), getattr(q, f)) for f in p.__struct_fields__)


def assert_agrees_with_msgspec(payload: bytes) -> None:
    """decode_columns / decode_index equal what msgspec's decode of the payload gives."""
    events = CODEC.decode_many(payload)
    ref = ColumnBatch.from_events(events, range(7, 7 + len(events)))
    assert_batches_equal(decode_columns(payload, len(events), 7), ref)
    kind, ts_recv, instrument = decode_index(payload, len(events))
    assert np.array_equal(kind, ref.kind)
    assert np.array_equal(ts_recv, ref.ts_recv)
    assert np.array_equal(instrument, ref.instrument)


@settings(max_examples=80, deadline=None)
@given(ANY)
def test_every_kind_agrees_with_msgspec(events):
    # GammaLevels and OrderflowBar have more than 15 fields: array16 event headers
    assert_agrees_with_msgspec(CODEC.encode_many(events))


def _raw(*events) -> bytes:
    return msgspec.msgpack.encode(list(events))


def test_every_int_encoding_in_int_and_float_fields():
    big = 2**64 - 1  # uint64 above int64: a float field gets float() of the exact int
    assert_agrees_with_msgspec(_raw(
        [10, -(2**40), 2**40, 300, 2**63 - 1, -(2**63), -100],  # int64 / uint64 / int8
        [10, -5, 200, 70000, big, 2**32, 127],
        [11, 0, 1, -32768, -1, -(2**31), 255, 65535],
        [12, 1, 2, 3, -1, 2.5, 3, 2, -200, 70000, 200],  # int16 level, uint32 orders, uint8 flags
        [12, 1, 2, -70000 + 2**31, 1, -0.0, 1e308, 3, 32767, 0, 0],
        [22, 1, 2, "dtc", 1, 40000, "detail"],  # FeedStatus: instrument read for the index
        [22, 1, 2, "dtc", 1],  # instrument absent: its default
        [3, 1, 2, -30000, "ES", "dtc"],
    ))


def _with(payload: bytes, old: bytes, new: bytes) -> bytes:
    assert payload.count(old) == 1
    return payload.replace(old, new)


def test_non_minimal_encodings_other_writers_use():
    base = _raw([10, 1, 2, 9, 0.0, 1.0, 5])
    assert base.endswith(b"\x09\xcb" + b"\0" * 8 + b"\xcb?\xf0" + b"\0" * 6 + b"\x05")
    wide = base[:-20] + (b"\xd3" + (9).to_bytes(8, "big")  # instrument as int64
                         + b"\xca\x3f\xc0\x00\x00"  # price 1.5 as float32
                         + b"\xcc\x07"  # size 7 as uint8
                         + b"\xd0\xff")  # side -1 as int8
    assert_agrees_with_msgspec(wide)
    # array16 / array32 headers for the frame and an event
    ev = _raw([11, 1, 2, 3, 1.0, 2.0, 3.0, 4.0])[1:]
    assert_agrees_with_msgspec(b"\xdc\x00\x02" + ev + b"\xdd\x00\x00\x00\x08" + ev[1:])


def test_appended_fields_of_any_type_are_skipped():
    # a newer writer appended fields: every reader of today keeps working
    extra = ["s" * 40, b"\x00\x01", [1, [2.0, "x"]], {"k": [None, True]}, None, 1.5, 2**64 - 1]
    assert_agrees_with_msgspec(_raw(
        [10, 1, 2, 3, 4.0, 5.0, 1, *extra],
        [11, 1, 2, 3, 4.0, 5.0, 6.0, 7.0, *extra],
        [12, 1, 2, 3, 1, 4.0, 5.0, 1, 0, 1, 2, *extra],
        [13, 1, 2, 3, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 20231115, 8.0, *extra],
        [22, 1, 2, "dtc", 1, 5, "", *extra],
    ))


@pytest.mark.parametrize("payload, count", [
    (_raw([10, 1, 2, 3, 4.0, 5.0, 1.5]), 1),  # float in an int field
    (_raw([10, 1, 2, 3.0, 4.0, 5.0, 1]), 1),  # float instrument
    (_raw([10, 1.0, 2, 3, 4.0, 5.0, 1]), 1),  # float timestamp
    (_raw([10, 1, 2, 3, None, 5.0, 1]), 1),  # nil in a float field
    (_raw([10, 1, 2, 3, "4", 5.0, 1]), 1),  # str in a float field
    (_raw([10, 1, 2, 3, 4.0, 5.0, True]), 1),  # bool in an int field
    (_raw([10, 1, 2, 3, 4.0]), 1),  # Trade lacking required fields
    (_raw([12, 1, 2, 3, 1, 4.0, 5.0]), 1),
    (_raw([99, 1, 2]), 1),  # unknown kind
    (_raw([300, 1, 2]), 1),
    (_raw([10.0, 1, 2, 3, 4.0, 5.0]), 1),
    (_raw([10, 1]), 1),  # fewer than three elements
    (_raw([10, 1, 2, 3, 4.0, 5.0]), 2),  # count differs from the header
    (_raw([10, 1, 2, 3, 4.0, 5.0]) + b"\x00", 1),  # trailing bytes
    (b"\x05", 1),  # not an array
    (msgspec.msgpack.encode({"a": 1}), 1),
    (b"", 0),
    (b"\xc1", 0),
])
def test_malformed_frames_raise(payload, count):
    with pytest.raises(FastDecodeError):
        decode_columns(payload, count)


def test_index_reads_only_kind_ts_recv_and_instrument():
    # decode_index skips ts_event and value fields without type checks, as it always has
    kind, ts_recv, inst = decode_index(_raw([10, "x", 2, 3, None, 5.0, 1.5], [11, 1, 5, 4]), 2)
    assert kind.tolist() == [10, 11] and ts_recv.tolist() == [2, 5] and inst.tolist() == [3, 4]
    with pytest.raises(FastDecodeError):
        decode_index(_raw([10, 1, 2.0, 3]), 1)  # ts_recv must be an int
    with pytest.raises(FastDecodeError):
        decode_index(_raw([10, 1, 2, "3"]), 1)


def _mixed_payload() -> tuple[bytes, int]:
    events = [
        Instrument(0, 1, 3, "ESZ3", "dtc"),
        Trade(1, 2, 3, 4999.75, 2.0, 1),
        Quote(1, 2, 3, 4999.5, 10.0, 4999.75, 3.0),
        BookLevel(1, 2, 3, -1, 5000.0, 7.0, 1, 2, 3, 1),
        SessionStat(1, 2, 3, 4990.0),
        GammaLevels(1, 2, "SPX", *[1.5] * 11, [4000.0, 4100.0], *[0.5] * 4, False, 7),
        OrderflowBar(1, 2, 3, 0, 60, *[1.0] * 9, 12, *[2.0] * 6, 1, 2, 3, 4, 0.5, 1, 3.0, 4.0),
    ]
    return CODEC.encode_many(events), len(events)


def test_truncation_at_every_offset_raises():
    payload, n = _mixed_payload()
    assert_agrees_with_msgspec(payload)
    for cut in range(len(payload)):
        with pytest.raises((FastDecodeError, msgspec.DecodeError)):
            decode_columns(payload[:cut], n)
        with pytest.raises(FastDecodeError):
            decode_index(payload[:cut], n)


def test_flipped_bytes_raise_only_the_errors_the_log_handles():
    # the log falls back to msgspec on FastDecodeError / msgspec.DecodeError (columns) and
    # reports FastDecodeError (index); anything else, or a crash, would escape it. (msgspec
    # itself raises UnicodeDecodeError for a str that is not UTF-8, on either path.)
    payload, n = _mixed_payload()
    rng = random.Random(7)
    for _ in range(3000):
        data = bytearray(payload)
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = bytes(data)
        try:
            decode_columns(data, n)
        except (FastDecodeError, msgspec.DecodeError, UnicodeDecodeError):
            pass
        try:
            decode_index(data, n)
        except FastDecodeError:
            pass
