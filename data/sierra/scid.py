"""`.scid` intraday files, sans-IO: bytes in, records out; records -> Trade and Quote events.

Layout (Sierra Chart, "Intraday Data File Format"), little-endian:

    s_IntradayHeader, 56 bytes: char[4] "SCID", u32 HeaderSize, u32 RecordSize, u16 Version (1),
        u16 Unused1, u32 UTCStartIndex, char[36] Reserve
    s_IntradayRecord, 40 bytes: SCDateTimeMS DateTime (int64 µs since 1899-12-30),
        float Open, High, Low, Close, u32 NumTrades, TotalVolume, BidVolume, AskVolume

In a tick file ("1 Tick" storage) each record is one trade: Close is its price, Low the bid and
High the ask at the time, BidVolume/AskVolume say which side the aggressor hit, and Open holds a
marker instead of a price: 0.0 (SINGLE_TRADE_WITH_BID_ASK) or one of two constants for the first
and last sub-trade of an unbundled trade. Any other Open is a bar's open: High and Low are then
the bar's range, not a quote.
"""

from __future__ import annotations

import math
import struct
from typing import Final

import msgspec
import numpy as np

from mia.engine.events import Event, Quote, Trade

from .common import FixedRecordReader, SierraFileError, valid_times, widen_f32

MAGIC: Final = b"SCID"
HEADER_SIZE: Final = 56
RECORD_SIZE: Final = 40
VERSION: Final = 1
HEADER_STRUCT: Final = struct.Struct("<4sIIHHI36s")
RECORD_STRUCT: Final = struct.Struct("<qffffIIII")

# special values of s_IntradayRecord::Open (float32)
SINGLE_TRADE_WITH_BID_ASK: Final = np.float32(0.0)
FIRST_SUB_TRADE_OF_UNBUNDLED_TRADE: Final = np.float32(-1.99900095e37)
LAST_SUB_TRADE_OF_UNBUNDLED_TRADE: Final = np.float32(-1.99900197e37)

RECORD_DTYPE: Final = np.dtype([
    ("dt", "<i8"), ("open", "<f4"), ("high", "<f4"), ("low", "<f4"), ("close", "<f4"),
    ("num_trades", "<u4"), ("total_volume", "<u4"), ("bid_volume", "<u4"), ("ask_volume", "<u4"),
])
assert RECORD_DTYPE.itemsize == RECORD_SIZE == RECORD_STRUCT.size
assert HEADER_STRUCT.size == HEADER_SIZE


class ScidHeader(msgspec.Struct, frozen=True):
    header_size: int
    record_size: int
    version: int
    utc_start_index: int


def encode_header(*, utc_start_index: int = 0) -> bytes:
    return HEADER_STRUCT.pack(MAGIC, HEADER_SIZE, RECORD_SIZE, VERSION, 0, utc_start_index,
                              b"\0" * 36)


def parse_header(data: bytes, path: str = "<scid>") -> ScidHeader:
    """Check and decode the 56-byte header; SierraFileError names what is wrong."""
    if len(data) < HEADER_SIZE:
        raise SierraFileError(path, len(data), f"truncated .scid header ({len(data)} of "
                              f"{HEADER_SIZE} bytes)")
    magic, hsize, rsize, version, _, utc_start, _ = HEADER_STRUCT.unpack_from(data)
    if magic != MAGIC:
        raise SierraFileError(path, 0, f"not a Sierra Chart .scid file (magic {magic!r}, "
                              f"expected {MAGIC!r})")
    if hsize != HEADER_SIZE:
        raise SierraFileError(path, 4, f"unsupported .scid header size {hsize} (expected "
                              f"{HEADER_SIZE})")
    if rsize != RECORD_SIZE:
        raise SierraFileError(path, 8, f"unsupported .scid record size {rsize} (expected "
                              f"{RECORD_SIZE})")
    if version != VERSION:
        raise SierraFileError(path, 12, f"unsupported .scid version {version} (expected "
                              f"{VERSION})")
    return ScidHeader(hsize, rsize, version, utc_start)


class ScidReader(FixedRecordReader):
    """Sans-IO reader: `feed(bytes)` returns the whole records those bytes completed.

    The header is checked on the first bytes (unless `header=False`: the caller positioned the
    stream after it). A partial record at the end is held until the next `feed`. `records`
    counts records returned so far (the index of the next one); `offset` is the file offset of
    the next byte expected.
    """

    HEADER_SIZE = HEADER_SIZE
    RECORD_SIZE = RECORD_SIZE
    RECORD_DTYPE = RECORD_DTYPE
    parse_header = staticmethod(parse_header)
    header: ScidHeader | None

    def __init__(self, path: str = "<scid>", *, header: bool = True, start_record: int = 0) -> None:
        super().__init__(path, header=header, start_record=start_record)


def check_records(recs: np.ndarray) -> np.ndarray:
    """Mask of records that can be real: a time Sierra could write and a finite Close."""
    return valid_times(recs["dt"]) & np.isfinite(recs["close"])


def sides(recs: np.ndarray) -> np.ndarray:
    """Aggressor per record: AskVolume > 0 only -> +1 (buyer), BidVolume > 0 only -> -1, else 0
    (no volume on either side, or a bar with both)."""
    ask = recs["ask_volume"] > 0
    bid = recs["bid_volume"] > 0
    return ask.astype(np.int8) * (~bid) - bid.astype(np.int8) * (~ask)


def is_tick(recs: np.ndarray) -> np.ndarray:
    """Records whose Open is a tick marker: their High/Low are the ask/bid."""
    o = recs["open"]
    return ((o == SINGLE_TRADE_WITH_BID_ASK) | (o == FIRST_SUB_TRADE_OF_UNBUNDLED_TRADE)
            | (o == LAST_SUB_TRADE_OF_UNBUNDLED_TRADE))


class ScidConverter:
    """Records of one instrument -> events, keeping the last bid/ask across calls.

    Each record is one `Trade` (price Close, size TotalVolume, side from Bid/AskVolume). A tick
    record whose bid (Low) or ask (High) differs from the previous one is preceded by a `Quote`
    (sizes unknown: NaN) at the same time. `ts_recv=None` stamps ts_recv = ts_event (import).
    """

    def __init__(self, instrument: int) -> None:
        self.instrument = instrument
        self._bid = math.nan
        self._ask = math.nan

    def reset(self) -> None:
        self._bid = self._ask = math.nan

    def events(self, recs: np.ndarray, ts_recv: int | None = None) -> list[Event]:
        n = len(recs)
        if not n:
            return []
        from .common import scdt_to_ns

        ts = scdt_to_ns(recs["dt"]).tolist()
        price = widen_f32(recs["close"]).tolist()
        size = recs["total_volume"].astype(np.float64).tolist()
        side = sides(recs).tolist()
        iid = self.instrument
        tick = is_tick(recs)
        quote_at: list[int] = []
        if tick.any():
            bid = widen_f32(recs["low"])
            ask = widen_f32(recs["high"])
            prev_bid = np.empty(n)
            prev_ask = np.empty(n)
            prev_bid[0], prev_ask[0] = self._bid, self._ask
            prev_bid[1:], prev_ask[1:] = bid[:-1], ask[:-1]
            # a bar record in between keeps the last quote
            if not tick.all():
                idx = np.where(tick, np.arange(n), -1)
                last = np.maximum.accumulate(np.concatenate(([-1], idx[:-1])))
                has = last >= 0
                prev_bid = np.where(has, bid[np.maximum(last, 0)], self._bid)
                prev_ask = np.where(has, ask[np.maximum(last, 0)], self._ask)
            changed = tick & ((bid != prev_bid) | (ask != prev_ask))
            quote_at = np.flatnonzero(changed).tolist()
            last_tick = int(np.flatnonzero(tick)[-1])
            self._bid, self._ask = float(bid[last_tick]), float(ask[last_tick])
            bids, asks = bid.tolist(), ask.tolist()
        nan = math.nan
        if ts_recv is None:
            trades = [Trade(t, t, iid, p, s, d) for t, p, s, d in zip(ts, price, size, side)]
            quotes = [Quote(ts[i], ts[i], iid, bids[i], nan, asks[i], nan) for i in quote_at]
        else:
            r = ts_recv
            trades = [Trade(t, r, iid, p, s, d) for t, p, s, d in zip(ts, price, size, side)]
            quotes = [Quote(ts[i], r, iid, bids[i], nan, asks[i], nan) for i in quote_at]
        if not quotes:
            return trades
        return _interleave(trades, quotes, np.asarray(quote_at, dtype=np.int64))


def _interleave(trades: list, quotes: list, quote_at: np.ndarray) -> list:
    """Each quote just before the trade of its record, without a Python loop per row."""
    n, nq = len(trades), len(quotes)
    before = np.zeros(n, dtype=np.int64)
    before[quote_at] = 1
    trade_pos = np.arange(n) + np.cumsum(before)  # quotes at or before record i
    quote_pos = trade_pos[quote_at] - 1
    out = np.empty(n + nq, dtype=object)
    tmp = np.empty(n, dtype=object)
    tmp[:] = trades
    out[trade_pos] = tmp
    tmp = np.empty(nq, dtype=object)
    tmp[:] = quotes
    out[quote_pos] = tmp
    return out.tolist()


def encode_records(recs: np.ndarray) -> bytes:
    """Records (RECORD_DTYPE) as the bytes Sierra writes."""
    return np.ascontiguousarray(recs, dtype=RECORD_DTYPE).tobytes()
