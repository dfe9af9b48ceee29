"""Fuzzing the DTC codec: only RemoteProtocolError may escape, never a hang, and framing does
not depend on how the stream is split."""

from __future__ import annotations

import struct

import msgspec
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mia.data.dtc import protocol as p
from mia.engine.errors import ProtocolError

SAMPLES = [
    p.MarketDataUpdateTrade(symbol_id=1, at_bid_or_ask=2, price=6000.25, volume=3.0, date_time=1.7e9),
    p.MarketDataUpdateBidAsk(symbol_id=1, bid_price=6000.0, bid_quantity=4.0, ask_price=6000.25,
                             ask_quantity=5.0, date_time=1_700_000_000),
    p.MarketDepthUpdateLevelFloatWithMilliseconds(symbol_id=2, date_time=1_700_000_000_000, price=21500.5,
                                                  quantity=3.0, side=1, update_type=1, num_orders=2,
                                                  final_update_in_batch=1),
    p.MarketDepthSnapshotLevel(symbol_id=2, side=2, price=21500.75, quantity=8.0, level=1,
                               is_first_message_in_batch=1, is_last_message_in_batch=1),
    p.LogonResponse(result=1, result_text="ok", server_name="SC"),
    p.MarketDataSnapshot(symbol_id=3, bid_price=16.05, ask_price=16.1),
    p.SecurityDefinitionResponse(request_id=1, symbol="ESZ6", min_price_increment=0.25),
    p.HistoricalPriceDataResponseHeader(request_id=1, use_z_lib_compression=0),
    p.Heartbeat(current_date_time=1_700_000_000),
]
VALID_BINARY = b"".join(p.encode_binary(m) for m in SAMPLES)
VALID_JSON = b"".join(p.encode_json(m) for m in SAMPLES)
VALID_COMPACT = b"".join(p.encode_json(m, compact=True) for m in SAMPLES)
FUZZ = settings(max_examples=4000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode_all(data: bytes, encoding: int, step: int | None = None) -> tuple[list, bool]:
    """(messages, raised ProtocolError); step splits the feed into chunks of that size."""
    codec = p.DtcCodec(encoding=encoding)
    out: list = []
    try:
        if step is None:
            out += codec.feed(data)
        else:
            for i in range(0, len(data), step):
                out += codec.feed(data[i:i + step])
    except ProtocolError:
        return out, True
    return out, False


def mutate(data: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    buf = bytearray(data)
    for pos, val in edits:
        buf[pos % len(buf)] = val
    return bytes(buf[: max(1, len(buf) - cut)])


@FUZZ
@given(st.binary(max_size=600), st.sampled_from([p.BINARY_ENCODING, p.JSON_ENCODING]))
def test_random_bytes_only_raise_protocol_error(data: bytes, encoding: int) -> None:
    decode_all(data, encoding)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
       st.integers(0, 40), st.sampled_from(["binary", "json", "compact"]))
def test_mutated_valid_streams_only_raise_protocol_error(edits, cut, which) -> None:
    source, encoding = {"binary": (VALID_BINARY, p.BINARY_ENCODING),
                        "json": (VALID_JSON, p.JSON_ENCODING),
                        "compact": (VALID_COMPACT, p.JSON_COMPACT_ENCODING)}[which]
    decode_all(mutate(source, edits, cut), encoding)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
       st.integers(1, 64), st.sampled_from([p.BINARY_ENCODING, p.JSON_COMPACT_ENCODING]))
@example(edits=[(507, 240)], step=1, encoding=p.BINARY_ENCODING)  # a mutation that decodes to NaN
def test_whole_and_split_feeds_give_the_same_messages(edits, step, encoding) -> None:
    source = VALID_BINARY if encoding == p.BINARY_ENCODING else VALID_COMPACT
    data = mutate(source, edits, 0)
    whole, whole_err = decode_all(data, encoding)
    split, split_err = decode_all(data, encoding, step)
    onebyte, one_err = decode_all(data, encoding, 1)
    assert whole_err == split_err == one_err
    if not whole_err:
        # compare encodings, not structs: a mutated byte can decode to NaN, and NaN != NaN
        assert bits(whole) == bits(split) == bits(onebyte)


def bits(messages) -> bytes:
    return msgspec.msgpack.encode(messages)


def test_valid_streams_split_one_byte_at_a_time_with_trailing_bytes() -> None:
    for data, encoding in ((VALID_BINARY, p.BINARY_ENCODING), (VALID_JSON, p.JSON_ENCODING),
                           (VALID_COMPACT, p.JSON_COMPACT_ENCODING)):
        codec = p.DtcCodec(encoding=encoding)
        tail = struct.pack("<HH", 40, 107)[:3] if encoding == p.BINARY_ENCODING else b'{"Type":3'
        out = [m for i in range(len(data)) for m in codec.feed(data[i:i + 1])] + codec.feed(tail)
        assert out == SAMPLES
        assert codec.buffered == len(tail)
