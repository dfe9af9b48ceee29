"""Golden byte vectors, written by hand from the header offsets in reference/dtc.md §3.

Each vector is struct.pack with an explicit little-endian format: header (Size u16, Type u16),
then every field at its documented offset, padding spelled out as `x`. The codec must decode
the bytes to the expected message and re-encode the message to the same bytes.
"""

from __future__ import annotations

import struct
import zlib

import pytest

from mia.data.dtc import protocol as p
from mia.engine.errors import RemoteProtocolError

DMAX = 1.7976931348623157e308
FMAX = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]


def s(text: str, n: int) -> bytes:
    return text.encode().ljust(n, b"\0")


VECTORS = [
    # 3.1 session
    (struct.pack("<HHii4s", 16, 6, 8, 2, s("DTC", 4)), p.EncodingRequest(encoding=2)),
    (struct.pack("<HHii4s", 16, 7, 8, 3, s("DTC", 4)), p.EncodingResponse(encoding=3)),
    (struct.pack("<HHi32s32s64siiii32s64s32si", 284, 1, 8, s("user", 32), s("pw", 32), s("", 64),
                 2, 0, 5, 0, s("", 32), s("", 64), s("mia", 32), 0),
     p.LogonRequest(username="user", password="pw", integer_1=2, heartbeat_interval_in_seconds=5,
                    client_name="mia")),
    (struct.pack("<HHii96s64si60sBBBB4sBBBBBBBBB3x", 256, 2, 8, 1, s("ok", 96), s("h:1", 64), 0,
                 s("SC", 60), 0, 0, 0, 1, s("-", 4), 1, 0, 1, 1, 0, 0, 0, 0, 1),
     p.LogonResponse(result=1, result_text="ok", reconnect_address="h:1", server_name="SC",
                     symbol_exchange_delimiter="-", security_definitions_supported=1,
                     resubscribe_when_market_data_feed_available=1)),
    (struct.pack("<HHIq", 16, 3, 7, 1_700_000_000), p.Heartbeat(num_dropped_messages=7,
                                                                 current_date_time=1_700_000_000)),
    (struct.pack("<HH96sB1x", 102, 5, s("bye", 96), 1), p.Logoff(reason="bye", do_not_reconnect=1)),
    # 3.2 level 1
    (struct.pack("<HHiI64s16sI", 96, 101, 1, 5, s("ESZ6", 64), s("CME", 16), 0),
     p.MarketDataRequest(request_action=1, symbol_id=5, symbol="ESZ6", exchange="CME")),
    (struct.pack("<HHI96s", 104, 103, 5, s("no", 96)), p.MarketDataReject(symbol_id=5, reject_text="no")),
    (struct.pack("<HHIdddddIIddddddddIIb7xd", 144, 104, 5, 6001.0, 6000.0, 6010.0, 5990.0, 1234.0,
                 99, 0xFFFFFFFF, 6000.25, 6000.5, 11.0, 12.0, 6000.25, 2.0, 1.5e9, 1.6e9,
                 1_700_000_000, 1_699_920_000, 2, 1.7e9),
     p.MarketDataSnapshot(symbol_id=5, session_settlement_price=6001.0, session_open_price=6000.0,
                          session_high_price=6010.0, session_low_price=5990.0, session_volume=1234.0,
                          session_num_trades=99, open_interest=0xFFFFFFFF, bid_price=6000.25,
                          ask_price=6000.5, ask_quantity=11.0, bid_quantity=12.0,
                          last_trade_price=6000.25, last_trade_volume=2.0, last_trade_date_time=1.5e9,
                          bid_ask_date_time=1.6e9, session_settlement_date_time=1_700_000_000,
                          trading_session_date=1_699_920_000, trading_status=2,
                          market_depth_update_date_time=1.7e9)),
    # TRADE: 6 pad bytes after the u16 AtBidOrAsk so Price sits at 16
    (struct.pack("<HHIH6xddd", 40, 107, 5, 2, 6000.25, 3.0, 1_700_000_000.123),
     p.MarketDataUpdateTrade(symbol_id=5, at_bid_or_ask=2, price=6000.25, volume=3.0,
                             date_time=1_700_000_000.123)),
    (struct.pack("<HHffIIH2x", 24, 112, 6000.25, 3.0, 1_700_000_000, 5, 1),
     p.MarketDataUpdateTradeCompact(price=6000.25, volume=3.0, date_time=1_700_000_000, symbol_id=5,
                                    at_bid_or_ask=1)),
    (struct.pack("<HHIBbBBIdIId", 40, 137, 5, 2, 1, 0, 0, 0, 6000.5, 4, 0, 1.7e9),
     p.MarketDataUpdateTradeWithUnbundledIndicator(symbol_id=5, at_bid_or_ask=2,
                                                   unbundled_trade_indicator=1, price=6000.5,
                                                   volume=4, date_time=1.7e9)),
    (struct.pack("<HHIfIqBbb", 27, 146, 5, 6000.75, 2, 1_700_000_000_123_456, 1, 2, 0),
     p.MarketDataUpdateTradeWithUnbundledIndicator2(symbol_id=5, price=6000.75, volume=2,
                                                    date_time=1_700_000_000_123_456, at_bid_or_ask=1,
                                                    unbundled_trade_indicator=2)),
    (struct.pack("<HHIfIBbb", 19, 142, 5, 6001.0, 9, 2, 0, 1),
     p.MarketDataUpdateTradeNoTimestamp(symbol_id=5, price=6001.0, volume=9, at_bid_or_ask=2,
                                        trade_condition=1)),
    (struct.pack("<HHIddd", 32, 134, 5, 6000.0, 1.0, 1.7e9),
     p.MarketDataUpdateLastTradeSnapshot(symbol_id=5, last_trade_price=6000.0, last_trade_volume=1.0,
                                         last_trade_date_time=1.7e9)),
    (struct.pack("<HHIdf4xdfI", 40, 108, 5, 6000.0, 10.0, 6000.25, 20.0, 1_700_000_000),
     p.MarketDataUpdateBidAsk(symbol_id=5, bid_price=6000.0, bid_quantity=10.0, ask_price=6000.25,
                              ask_quantity=20.0, date_time=1_700_000_000)),
    (struct.pack("<HHffffII", 28, 117, 6000.0, 10.0, FMAX, 0.0, 1_700_000_000, 5),
     p.MarketDataUpdateBidAskCompact(bid_price=6000.0, bid_quantity=10.0, ask_price=FMAX,
                                     date_time=1_700_000_000, symbol_id=5)),
    (struct.pack("<HHIffffq", 32, 144, 5, 6000.0, 10.0, 6000.25, 20.0, 1_700_000_000_000_001),
     p.MarketDataUpdateBidAskFloatWithMicroseconds(symbol_id=5, bid_price=6000.0, bid_quantity=10.0,
                                                   ask_price=6000.25, ask_quantity=20.0,
                                                   date_time=1_700_000_000_000_001)),
    (struct.pack("<HHIfIfI", 24, 143, 5, 6000.0, 10, 6000.25, 20),
     p.MarketDataUpdateBidAskNoTimeStamp(symbol_id=5, bid_price=6000.0, bid_quantity=10,
                                         ask_price=6000.25, ask_quantity=20)),
    (struct.pack("<HHIdI4x", 24, 120, 5, 5999.0, 1_699_920_000),
     p.MarketDataUpdateSessionOpen(symbol_id=5, price=5999.0, trading_session_date=1_699_920_000)),
    (struct.pack("<HHIdI4x", 24, 114, 5, 6011.0, 1_699_920_000),
     p.MarketDataUpdateSessionHigh(symbol_id=5, price=6011.0, trading_session_date=1_699_920_000)),
    (struct.pack("<HHIdI4x", 24, 115, 5, 5989.0, 1_699_920_000),
     p.MarketDataUpdateSessionLow(symbol_id=5, price=5989.0, trading_session_date=1_699_920_000)),
    (struct.pack("<HHIdIB3x", 24, 113, 5, 77.0, 1_699_920_000, 1),
     p.MarketDataUpdateSessionVolume(symbol_id=5, volume=77.0, trading_session_date=1_699_920_000,
                                     is_final_session_volume=1)),
    (struct.pack("<HHIdI4x", 24, 119, 5, 6002.0, 1_699_920_000),
     p.MarketDataUpdateSessionSettlement(symbol_id=5, price=6002.0, date_time=1_699_920_000)),
    (struct.pack("<HHIII", 16, 124, 5, 3_000_000, 1_699_920_000),
     p.MarketDataUpdateOpenInterest(symbol_id=5, open_interest=3_000_000,
                                    trading_session_date=1_699_920_000)),
    (struct.pack("<HHIiI", 16, 135, 5, 4321, 1_699_920_000),
     p.MarketDataUpdateSessionNumTrades(symbol_id=5, num_trades=4321, trading_session_date=1_699_920_000)),
    (struct.pack("<HHII", 12, 136, 5, 1_699_920_000),
     p.MarketDataUpdateTradingSessionDate(symbol_id=5, date=1_699_920_000)),
    (struct.pack("<HHi", 8, 100, 1), p.MarketDataFeedStatus(status=1)),
    (struct.pack("<HHIi", 12, 116, 5, 2), p.MarketDataFeedSymbolStatus(symbol_id=5, status=2)),
    (struct.pack("<HHIb3x", 12, 138, 5, 4), p.TradingSymbolStatus(symbol_id=5, status=4)),
    # 3.3 depth
    (struct.pack("<HHiI64s16si", 96, 102, 1, 5, s("ESZ6", 64), s("", 16), 10),
     p.MarketDepthRequest(request_action=1, symbol_id=5, symbol="ESZ6", num_levels=10)),
    (struct.pack("<HHI96s", 104, 121, 5, s("no depth", 96)),
     p.MarketDepthReject(symbol_id=5, reject_text="no depth")),
    (struct.pack("<HHIH6xddHBB4xdI4x", 56, 122, 5, 1, 6000.0, 15.0, 1, 1, 0, 1.7e9, 4),
     p.MarketDepthSnapshotLevel(symbol_id=5, side=1, price=6000.0, quantity=15.0, level=1,
                                is_first_message_in_batch=1, date_time=1.7e9, num_orders=4)),
    (struct.pack("<HHIffIHBB", 24, 145, 5, 6000.25, 9.0, 3, 1, 2, 3),
     p.MarketDepthSnapshotLevelFloat(symbol_id=5, price=6000.25, quantity=9.0, num_orders=3, level=1,
                                     side=2, final_update_in_batch=3)),
    (struct.pack("<HHIH6xddB7xdIB1xH", 56, 106, 5, 2, 6000.5, 0.0, 2, 1.7e9, 0, 1, 0),
     p.MarketDepthUpdateLevel(symbol_id=5, side=2, price=6000.5, update_type=2, date_time=1.7e9,
                              final_update_in_batch=1)),
    (struct.pack("<HHIqffBBHB", 29, 140, 5, 1_700_000_000_123, 6000.5, 7.0, 2, 1, 2, 2),
     p.MarketDepthUpdateLevelFloatWithMilliseconds(symbol_id=5, date_time=1_700_000_000_123,
                                                   price=6000.5, quantity=7.0, side=2, update_type=1,
                                                   num_orders=2, final_update_in_batch=2)),
    (struct.pack("<HHIffHbbB", 21, 141, 5, 6000.0, 3.0, 1, 1, 1, 1),
     p.MarketDepthUpdateLevelNoTimestamp(symbol_id=5, price=6000.0, quantity=3.0, num_orders=1, side=1,
                                         update_type=1, final_update_in_batch=1)),
    # 3.5 security definitions and historical data
    (struct.pack("<HHi64s16s", 88, 506, 9, s("ESZ6", 64), s("CME", 16)),
     p.SecurityDefinitionForSymbolRequest(request_id=9, symbol="ESZ6", exchange="CME")),
    (struct.pack("<HHi64s16si64sfifB3xff32sB3xfB3xIIfffIfB3xf64sff8sfIIB7xq64s", 432, 507, 9,
                 s("ESZ6", 64), s("CME", 16), 1, s("E-mini", 64), 0.25, 2, 12.5, 1, 1.0, 1.0,
                 s("ES", 32), 0, 0.0, 0, 0, 1_797_000_000, 0.0, 0.0, 0.0, 0, 0.0, 1, 1.0,
                 s("ES", 64), 0.0, 0.0, s("USD", 8), 50.0, 0, 0, 0, 123, s("", 64)),
     p.SecurityDefinitionResponse(request_id=9, symbol="ESZ6", exchange="CME", security_type=1,
                                  description="E-mini", min_price_increment=0.25, price_display_format=2,
                                  currency_value_per_increment=12.5, is_final_message=1,
                                  underlying_symbol="ES", security_expiration_date=1_797_000_000,
                                  exchange_symbol="ES", currency="USD", contract_size=50.0,
                                  security_identifier=123)),
    (struct.pack("<HHi96s", 104, 509, 9, s("unknown", 96)),
     p.SecurityDefinitionReject(request_id=9, reject_text="unknown")),
    (struct.pack("<HHi64s16si4xqqIBBH", 120, 800, 3, s("ESZ6", 64), s("", 16), 60, 1_700_000_000,
                 0, 5, 1, 0, 0),
     p.HistoricalPriceDataRequest(request_id=3, symbol="ESZ6", record_interval=60,
                                  start_date_time=1_700_000_000, max_days_to_return=5,
                                  use_z_lib_compression=1)),
    (struct.pack("<HHiiBB2xf", 20, 801, 3, 60, 0, 0, 1.0),
     p.HistoricalPriceDataResponseHeader(request_id=3, record_interval=60, int_to_float_price_divisor=1.0)),
    (struct.pack("<HHi96shH", 108, 802, 3, s("later", 96), 1, 30),
     p.HistoricalPriceDataReject(request_id=3, reject_text="later", reject_reason_code=1,
                                 retry_time_in_seconds=30)),
    (struct.pack("<HHiqdddddI4xddB7x", 88, 803, 3, 1_700_000_000_000_000, 1.0, 2.0, 0.5, 1.5,
                 100.0, 12, 40.0, 60.0, 1),
     p.HistoricalPriceDataRecordResponse(request_id=3, start_date_time=1_700_000_000_000_000,
                                         open_price=1.0, high_price=2.0, low_price=0.5, last_price=1.5,
                                         volume=100.0, num_trades=12, bid_volume=40.0, ask_volume=60.0,
                                         is_final_record=1)),
    (struct.pack("<HHidH6xddB7x", 48, 804, 3, 1.7e9, 2, 6000.0, 1.0, 0),
     p.HistoricalPriceDataTickRecordResponse(request_id=3, date_time=1.7e9, at_bid_or_ask=2,
                                             price=6000.0, volume=1.0)),
    (struct.pack("<HHiq", 16, 807, 3, 1_700_000_000_000_000),
     p.HistoricalPriceDataResponseTrailer(request_id=3, final_record_last_date_time=1_700_000_000_000_000)),
]

IDS = [type(m).__name__ for _, m in VECTORS]


@pytest.mark.parametrize(("wire", "expected"), VECTORS, ids=IDS)
def test_golden_decode_and_reencode(wire: bytes, expected: p.DtcMessage) -> None:
    # Arrange: the size in the header is the documented struct size
    assert len(wire) == expected.SIZE == struct.unpack_from("<H", wire)[0]
    # Act
    decoded = p.DtcCodec().feed(wire)
    # Assert
    assert decoded == [expected]
    assert p.encode_binary(expected) == wire


def test_every_known_layout_has_a_golden_vector() -> None:
    assert {m.TYPE for _, m in VECTORS} == set(p.MESSAGE_TYPES)


def test_shorter_message_from_older_sender_takes_defaults() -> None:
    # A 280-byte LOGON_REQUEST (no MarketDataTransmissionInterval) and a snapshot cut after BidPrice
    wire = struct.pack("<HHi32s32s64siiii32s64s32s", 280, 1, 8, s("u", 32), s("", 32), s("", 64), 0,
                       0, 10, 0, s("", 32), s("", 64), s("old", 32))
    (msg,) = p.DtcCodec().feed(wire)
    assert msg.client_name == "old" and msg.heartbeat_interval_in_seconds == 10
    assert msg.market_data_transmission_interval == 0
    snap = struct.pack("<HHIdddddIId", 64, 104, 5, 1.0, 2.0, 3.0, 4.0, 5.0, 6, 7, 6000.0)
    (msg,) = p.DtcCodec().feed(snap)
    assert msg.bid_price == 6000.0 and msg.ask_price == DMAX and msg.last_trade_volume == DMAX


def test_longer_message_from_newer_sender_ignores_extra_tail() -> None:
    wire = struct.pack("<HHIH6xddd", 48, 107, 5, 2, 6000.25, 3.0, 1.7e9) + b"\x01" * 8
    assert p.DtcCodec().feed(wire + wire) == [
        p.MarketDataUpdateTrade(symbol_id=5, at_bid_or_ask=2, price=6000.25, volume=3.0, date_time=1.7e9)] * 2


def test_unknown_type_is_skipped_by_size_and_kept_raw() -> None:
    unknown = struct.pack("<HH", 10, 9999) + b"abcdef"
    trade = VECTORS[9][0]
    out = p.DtcCodec().feed(unknown + trade)
    assert out[0] == p.RawMessage(9999, unknown) and out[1].TYPE == 107


@pytest.mark.parametrize("size", [0, 1, 3])
def test_size_below_four_is_a_protocol_error(size: int) -> None:
    with pytest.raises(RemoteProtocolError):
        p.DtcCodec().feed(struct.pack("<HH", size, 107) + bytes(40))


def test_oversized_size_is_a_protocol_error_not_an_allocation() -> None:
    with pytest.raises(RemoteProtocolError, match="limit"):
        p.DtcCodec().feed(struct.pack("<HH", 65535, 107))


def test_json_and_compact_json_by_hand() -> None:
    codec = p.DtcCodec(encoding=p.JSON_COMPACT_ENCODING)
    stream = (b'{"Type":107,"SymbolID":5,"AtBidOrAsk":2,"Price":6000.25,"Volume":3,"DateTime":1.5}\x00'
              b'{"F":[5,1,6000.0,2.0,1.5],"Type":107}\x00'
              b'{"Type":108,"F":[5,6000.0,10,6000.25,20,1700000000]}\x00'
              b'{"Type":4242,"X":1}\x00')
    out = codec.feed(stream)
    assert out[0] == p.MarketDataUpdateTrade(symbol_id=5, at_bid_or_ask=2, price=6000.25, volume=3.0,
                                             date_time=1.5)
    assert out[1] == p.MarketDataUpdateTrade(symbol_id=5, at_bid_or_ask=1, price=6000.0, volume=2.0,
                                             date_time=1.5)
    assert out[2].ask_price == 6000.25 and out[2].date_time == 1_700_000_000
    assert out[3] == p.RawMessage(4242, b'{"Type":4242,"X":1}', p.JSON_COMPACT_ENCODING)
    # compact encoding only for the high-volume types; a logon stays plain JSON
    assert codec.encode(out[0]) == b'{"Type":107,"F":[5,2,6000.25,3.0,1.5]}\x00'
    assert codec.encode(p.Logoff(reason="x")) == b'{"Type":5,"Reason":"x","DoNotReconnect":0}\x00'


def test_encoding_response_is_binary_then_client_switches_to_json() -> None:
    codec = p.DtcCodec(role="client")
    assert codec.encode(p.EncodingRequest(encoding=2)) == struct.pack("<HHii4s", 16, 6, 8, 2, b"DTC\0")
    wire = struct.pack("<HHii4s", 16, 7, 8, 2, b"DTC\0") + b'{"Type":3,"NumDroppedMessages":1}\x00'
    out = codec.feed(wire)
    assert out[1] == p.Heartbeat(num_dropped_messages=1) and codec.encoding == p.JSON_ENCODING
    server = p.DtcCodec(role="server")
    assert server.encode(p.EncodingResponse(encoding=2))[:4] == b"\x10\x00\x07\x00"
    assert server.encode(p.Heartbeat()).endswith(b"\x00") and server.encoding == p.JSON_ENCODING


def test_zlib_stream_after_compressed_historical_header() -> None:
    header = struct.pack("<HHiiBB2xf", 20, 801, 3, 0, 1, 0, 1.0)
    ticks = b"".join(struct.pack("<HHidH6xddB7x", 48, 804, 3, 1.7e9 + i, 2, 6000.0 + i, 1.0,
                                 int(i == 2)) for i in range(3))
    trailer = struct.pack("<HHiq", 16, 807, 3, 1_700_000_002_000_000)
    compressed = zlib.compress(ticks + trailer)
    stream = header + compressed
    whole = p.DtcCodec().feed(stream)
    codec = p.DtcCodec()
    bytewise = [m for i in range(len(stream)) for m in codec.feed(stream[i:i + 1])]
    assert whole == bytewise
    assert [p.message_type(m) for m in whole] == [801, 804, 804, 804, 807]
    assert whole[3].price == 6002.0 and whole[3].is_final_record == 1
