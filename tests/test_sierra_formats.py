"""Sierra's .scid and .depth byte layouts, the sans-IO readers and the record -> event rules.

Expected bytes are built by hand with `struct.pack` of the documented fields (Sierra Chart,
"Intraday Data File Format" and "Market Depth Data File Format"), never with the code under test.
"""

import math
import struct

import numpy as np
import pytest

from mia.data.sierra import depth, scid
from mia.data.sierra.common import SierraFileError, ns_to_scdt, scdt_to_ns, widen_f32
from mia.data.sierra.symbols import instrument_for, root_of, symbol_of_file
from mia.engine.errors import MiaError, UsageError
from mia.engine.events import (
    BATCH_BEGIN,
    BATCH_END,
    BOOK_CLEAR,
    BOOK_DELETE,
    BOOK_UPSERT,
    BookLevel,
    Quote,
    Trade,
)

# 2026-11-27 14:30:00.123456 UTC, by hand: days from 1899-12-30 to 1970-01-01 are 25569
T_NS = 1_795_789_800_123_456_000
T_US = T_NS // 1000 + 25_569 * 86_400 * 1_000_000

SCID_HEADER = struct.pack("<4sIIHHI36s", b"SCID", 56, 40, 1, 0, 0, b"\0" * 36)
DEPTH_HEADER = struct.pack("<IIII48s", 0x44444353, 64, 24, 1, b"\0" * 48)
FIRST_SUB = struct.unpack("<f", struct.pack("<f", -1.99900095e37))[0]


def scid_rec(us, o, h, lo, c, n, vol, bidv, askv):
    return struct.pack("<qffffIIII", us, o, h, lo, c, n, vol, bidv, askv)


def depth_rec(us, cmd, flags, orders, price, qty):
    return struct.pack("<qBBHfII", us, cmd, flags, orders, price, qty, 0)


def test_time_conversion_is_exact():
    # Arrange / Act / Assert: exact integers both ways, µs kept
    assert scdt_to_ns(T_US) == T_NS
    assert ns_to_scdt(T_NS) == T_US
    arr = np.array([T_US, T_US + 1], dtype=np.int64)
    assert scdt_to_ns(arr).tolist() == [T_NS, T_NS + 1000]
    assert scdt_to_ns(25_569 * 86_400 * 1_000_000) == 0  # Sierra's day 25569 is the Unix epoch


def test_scid_layout_matches_the_documented_structs():
    assert scid.encode_header() == SCID_HEADER
    assert len(SCID_HEADER) == 56
    recs = np.zeros(1, scid.RECORD_DTYPE)
    recs[0] = (T_US, 0.0, 6000.5, 6000.25, 6000.5, 1, 3, 0, 3)
    assert scid.encode_records(recs) == scid_rec(T_US, 0.0, 6000.5, 6000.25, 6000.5, 1, 3, 0, 3)
    assert scid.RECORD_DTYPE.itemsize == 40
    assert [scid.RECORD_DTYPE.fields[f][1] for f in scid.RECORD_DTYPE.names] == \
        [0, 8, 12, 16, 20, 24, 28, 32, 36]


def test_depth_layout_matches_the_documented_structs():
    assert depth.encode_header() == DEPTH_HEADER
    assert DEPTH_HEADER[:4] == b"SCDD"
    recs = np.zeros(1, depth.RECORD_DTYPE)
    recs[0] = (T_US, 2, 1, 7, 6000.25, 42, 0)
    assert depth.encode_records(recs) == depth_rec(T_US, 2, 1, 7, 6000.25, 42)
    assert depth.RECORD_DTYPE.itemsize == 24
    assert [depth.RECORD_DTYPE.fields[f][1] for f in depth.RECORD_DTYPE.names] == \
        [0, 8, 9, 10, 12, 16, 20]


def test_the_open_markers_are_sierras_constants():
    assert scid.SINGLE_TRADE_WITH_BID_ASK == 0.0
    assert struct.pack("<f", scid.FIRST_SUB_TRADE_OF_UNBUNDLED_TRADE) == struct.pack("<f", -1.99900095e37)
    assert struct.pack("<f", scid.LAST_SUB_TRADE_OF_UNBUNDLED_TRADE) == struct.pack("<f", -1.99900197e37)


def _scid_bytes():
    return SCID_HEADER + b"".join([
        scid_rec(T_US, 0.0, 6000.5, 6000.25, 6000.5, 1, 3, 0, 3),  # buyer lifts the ask
        scid_rec(T_US + 1, 0.0, 6000.5, 6000.25, 6000.25, 1, 2, 2, 0),  # seller, same quote
        scid_rec(T_US + 2, FIRST_SUB, 6000.75, 6000.5, 6000.75, 1, 5, 0, 5),  # new quote
        scid_rec(T_US + 3, 0.0, 6000.75, 6000.5, 6000.5, 1, 1, 0, 0),  # no side
    ])


def test_scid_reader_whole_one_byte_at_a_time_and_with_a_torn_tail():
    data = _scid_bytes()
    whole = scid.ScidReader().feed(data)
    assert len(whole) == 4
    r = scid.ScidReader()
    got = [r.feed(data[i:i + 1]) for i in range(len(data))]
    assert np.array_equal(np.concatenate(got), whole)
    r = scid.ScidReader()
    part = r.feed(data[:-17])
    assert len(part) == 3 and r.pending == 23 and r.records == 3
    assert r.offset == 56 + 3 * 40
    rest = r.feed(data[-17:])
    assert len(rest) == 1 and r.pending == 0 and r.records == 4


def test_scid_records_become_trades_and_quotes():
    recs = scid.ScidReader().feed(_scid_bytes())
    events = scid.ScidConverter(7).events(recs)
    assert [type(e) for e in events] == [Quote, Trade, Trade, Quote, Trade, Trade]
    q0, t0, t1, q1, t2, t3 = events
    assert (q0.bid, q0.ask, q0.ts_event, q0.instrument) == (6000.25, 6000.5, T_NS, 7)
    assert math.isnan(q0.bid_size) and math.isnan(q0.ask_size)
    assert (t0.price, t0.size, t0.side, t0.ts_event, t0.ts_recv) == (6000.5, 3.0, 1, T_NS, T_NS)
    assert (t1.price, t1.size, t1.side, t1.ts_event) == (6000.25, 2.0, -1, T_NS + 1000)
    assert (q1.bid, q1.ask) == (6000.5, 6000.75)
    assert (t2.side, t3.side) == (1, 0)
    live = scid.ScidConverter(7).events(recs, ts_recv=T_NS + 5)
    assert all(e.ts_recv == T_NS + 5 for e in live)
    assert [e.ts_event for e in live] == [e.ts_event for e in events]


def test_scid_quotes_carry_over_between_calls_and_bars_give_no_quotes():
    recs = scid.ScidReader().feed(_scid_bytes())
    conv = scid.ScidConverter(1)
    a = conv.events(recs[:2])
    b = conv.events(recs[2:])
    assert a + b == conv.__class__(1).events(recs)
    bar = scid.ScidReader().feed(SCID_HEADER + scid_rec(T_US, 6000.0, 6001.0, 5999.0, 6000.5, 10, 40, 15, 25))
    (trade,) = scid.ScidConverter(1).events(bar)
    assert (trade.price, trade.size, trade.side) == (6000.5, 40.0, 0)  # both sides: a bar


def test_float32_prices_read_back_as_their_decimal():
    vals = np.array([15.05, 6000.25, 0.1, 19.95], dtype=np.float32)
    assert widen_f32(vals).tolist() == [15.05, 6000.25, 0.1, 19.95]


def test_depth_commands_become_book_levels_with_batch_flags():
    data = DEPTH_HEADER + b"".join([
        depth_rec(T_US, 1, 0, 0, 0.0, 0),  # clear
        depth_rec(T_US, 2, 0, 3, 6000.25, 10),  # add bid
        depth_rec(T_US, 3, 1, 4, 6000.5, 12),  # add ask, end of batch
        depth_rec(T_US + 5, 4, 0, 2, 6000.25, 8),  # modify bid
        depth_rec(T_US + 5, 5, 0, 2, 6000.5, 9),  # modify ask
        depth_rec(T_US + 5, 0, 0, 0, 0.0, 0),  # no command: nothing
        depth_rec(T_US + 5, 6, 0, 0, 6000.0, 0),  # delete bid
        depth_rec(T_US + 5, 7, 1, 0, 6000.75, 0),  # delete ask, end of batch
        depth_rec(T_US + 9, 4, 1, 1, 6000.25, 5),  # a batch of one
    ])
    recs = depth.DepthReader().feed(data)
    ev = depth.DepthConverter(3).events(recs)
    assert all(isinstance(e, BookLevel) for e in ev)
    got = [(e.side, e.action, e.price if e.action != BOOK_CLEAR else None, e.size, e.orders, e.flags)
           for e in ev]
    assert got == [
        (0, BOOK_CLEAR, None, 0.0, 0, BATCH_BEGIN),
        (1, BOOK_UPSERT, 6000.25, 10.0, 3, 0),
        (-1, BOOK_UPSERT, 6000.5, 12.0, 4, BATCH_END),
        (1, BOOK_UPSERT, 6000.25, 8.0, 2, BATCH_BEGIN),
        (-1, BOOK_UPSERT, 6000.5, 9.0, 2, 0),
        (1, BOOK_DELETE, 6000.0, 0.0, 0, 0),
        (-1, BOOK_DELETE, 6000.75, 0.0, 0, BATCH_END),
        (1, BOOK_UPSERT, 6000.25, 5.0, 1, BATCH_BEGIN | BATCH_END),
    ]
    assert ev[0].ts_event == T_NS and ev[3].ts_event == T_NS + 5000
    # one byte at a time, converted as it comes: the same events
    r, conv, out = depth.DepthReader(), depth.DepthConverter(3), []
    for i in range(len(data)):
        out += conv.events(r.feed(data[i:i + 1]))
    assert out == ev


@pytest.mark.parametrize("mod,header,offset,what", [
    (scid, b"XXXX" + SCID_HEADER[4:], 0, "magic"),
    (scid, SCID_HEADER[:4] + struct.pack("<I", 60) + SCID_HEADER[8:], 4, "header size"),
    (scid, SCID_HEADER[:8] + struct.pack("<I", 44) + SCID_HEADER[12:], 8, "record size"),
    (scid, SCID_HEADER[:12] + struct.pack("<H", 2) + SCID_HEADER[14:], 12, "version"),
    (depth, b"SCIX" + DEPTH_HEADER[4:], 0, "magic"),
    (depth, DEPTH_HEADER[:8] + struct.pack("<I", 32) + DEPTH_HEADER[12:], 8, "record size"),
    (depth, SCID_HEADER + b"\0" * 8, 0, "magic"),  # a .scid passed as .depth
])
def test_bad_headers_name_the_file_and_offset(mod, header, offset, what):
    reader = mod.ScidReader("x/ESZ6.scid") if mod is scid else mod.DepthReader("x/ESZ6.depth")
    with pytest.raises(SierraFileError) as err:
        reader.feed(header)
    assert isinstance(err.value, MiaError)
    assert err.value.offset == offset and what in str(err.value) and "x/ESZ6" in str(err.value)


def test_symbols_and_instruments():
    assert [root_of(s) for s in ["ESZ6", "MESZ6", "NQH27", "MNQZ6", "VXX6", "ESZ25_FUT_CME", "ZZZ6"]] == \
        ["ES", "MES", "NQ", "MNQ", "VX", "ES", None]
    assert symbol_of_file("/d/ESZ6.scid") == "ESZ6"
    assert symbol_of_file("/d/MarketDepthData/ESZ6.2026-11-27.depth") == "ESZ6"
    es = instrument_for("ESZ6", 4, T_NS, "sierra:x")
    assert (es.instrument, es.tick_size, es.point_value, es.exchange) == (4, 0.25, 50.0, "CME")
    vx = instrument_for("VXZ6", 5, T_NS, "sierra:x")
    assert (vx.tick_size, vx.point_value, vx.exchange) == (0.05, 1000.0, "CFE")
    nq = instrument_for("NQZ6", 5, T_NS, "sierra:x")
    assert (nq.tick_size, nq.point_value) == (0.25, 20.0)
    with pytest.raises(UsageError, match="tick size"):
        instrument_for("FOOZ6", 1, T_NS, "sierra:x")
    assert instrument_for("FOOZ6", 1, T_NS, "s", tick_sizes={"FOOZ6": 0.5}).tick_size == 0.5
