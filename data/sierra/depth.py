"""`.depth` market-depth files, sans-IO: bytes in, records out; records -> BookLevel events.

Layout (Sierra Chart, "Market Depth Data File Format"), little-endian:

    s_MarketDepthFileHeader, 64 bytes: u32 FileTypeUniqueHeaderID 0x44444353 ("SCDD"),
        u32 HeaderSize, u32 RecordSize, u32 Version (1), char[48] Reserve
    s_MarketDepthFileRecord, 24 bytes: SCDateTimeMS DateTime, u8 Command, u8 Flags,
        u16 NumOrders, float Price, u32 Quantity, u32 Reserved

Commands: 0 none, 1 clear book, 2/3 add bid/ask level, 4/5 modify bid/ask level, 6/7 delete
bid/ask level. Flags 0x01 ends a batch of updates (the book is consistent after it). A day's file
starts with a clear-book command followed by the adds of a full snapshot.
"""

from __future__ import annotations

import math
import struct
from typing import Final

import msgspec
import numpy as np

from mia.engine.events import (
    BATCH_BEGIN,
    BATCH_END,
    BOOK_CLEAR,
    BOOK_DELETE,
    BOOK_UPSERT,
    BookLevel,
    Event,
)

from .common import FixedRecordReader, SierraFileError, scdt_to_ns, valid_times, widen_f32

MAGIC: Final = 0x44444353  # "SCDD" little-endian
HEADER_SIZE: Final = 64
RECORD_SIZE: Final = 24
VERSION: Final = 1
HEADER_STRUCT: Final = struct.Struct("<IIII48s")
RECORD_STRUCT: Final = struct.Struct("<qBBHfII")

NO_COMMAND: Final = 0
COMMAND_CLEAR_BOOK: Final = 1
COMMAND_ADD_BID_LEVEL: Final = 2
COMMAND_ADD_ASK_LEVEL: Final = 3
COMMAND_MODIFY_BID_LEVEL: Final = 4
COMMAND_MODIFY_ASK_LEVEL: Final = 5
COMMAND_DELETE_BID_LEVEL: Final = 6
COMMAND_DELETE_ASK_LEVEL: Final = 7
FLAG_END_OF_BATCH: Final = 0x01

RECORD_DTYPE: Final = np.dtype([
    ("dt", "<i8"), ("command", "u1"), ("flags", "u1"), ("num_orders", "<u2"),
    ("price", "<f4"), ("quantity", "<u4"), ("reserved", "<u4"),
])
assert RECORD_DTYPE.itemsize == RECORD_SIZE == RECORD_STRUCT.size
assert HEADER_STRUCT.size == HEADER_SIZE

# command -> (side, action); index by command code
_SIDE: Final = np.array([0, 0, 1, -1, 1, -1, 1, -1], dtype=np.int8)
_ACTION: Final = np.array([-1, BOOK_CLEAR, BOOK_UPSERT, BOOK_UPSERT, BOOK_UPSERT, BOOK_UPSERT,
                           BOOK_DELETE, BOOK_DELETE], dtype=np.int8)


class DepthHeader(msgspec.Struct, frozen=True):
    header_size: int
    record_size: int
    version: int


def encode_header() -> bytes:
    return HEADER_STRUCT.pack(MAGIC, HEADER_SIZE, RECORD_SIZE, VERSION, b"\0" * 48)


def parse_header(data: bytes, path: str = "<depth>") -> DepthHeader:
    if len(data) < HEADER_SIZE:
        raise SierraFileError(path, len(data), f"truncated .depth header ({len(data)} of "
                              f"{HEADER_SIZE} bytes)")
    magic, hsize, rsize, version, _ = HEADER_STRUCT.unpack_from(data)
    if magic != MAGIC:
        raise SierraFileError(path, 0, f"not a Sierra Chart .depth file (magic 0x{magic:08x}, "
                              f"expected 0x{MAGIC:08x} 'SCDD')")
    if hsize != HEADER_SIZE:
        raise SierraFileError(path, 4, f"unsupported .depth header size {hsize} (expected "
                              f"{HEADER_SIZE})")
    if rsize != RECORD_SIZE:
        raise SierraFileError(path, 8, f"unsupported .depth record size {rsize} (expected "
                              f"{RECORD_SIZE})")
    if version != VERSION:
        raise SierraFileError(path, 12, f"unsupported .depth version {version} (expected "
                              f"{VERSION})")
    return DepthHeader(hsize, rsize, version)


class DepthReader(FixedRecordReader):
    """Sans-IO reader of a .depth stream; the same contract as `scid.ScidReader`."""

    HEADER_SIZE = HEADER_SIZE
    RECORD_SIZE = RECORD_SIZE
    RECORD_DTYPE = RECORD_DTYPE
    parse_header = staticmethod(parse_header)
    header: DepthHeader | None

    def __init__(self, path: str = "<depth>", *, header: bool = True, start_record: int = 0) -> None:
        super().__init__(path, header=header, start_record=start_record)


def check_records(recs: np.ndarray) -> np.ndarray:
    """Mask of records that can be real: a plausible time and a known command."""
    return valid_times(recs["dt"]) & (recs["command"] <= COMMAND_DELETE_ASK_LEVEL)


class DepthConverter:
    """Records of one instrument -> BookLevel events; batch state kept across calls.

    Flags 0x01 -> BATCH_END; the first record after an end (and the first record seen, unless
    `after_end=False`) -> BATCH_BEGIN. NO_COMMAND records carry no change and give no event.
    """

    def __init__(self, instrument: int, *, after_end: bool = True) -> None:
        self.instrument = instrument
        self.after_end = after_end

    def events(self, recs: np.ndarray, ts_recv: int | None = None) -> list[Event]:
        n = len(recs)
        if not n:
            return []
        cmd = recs["command"]
        end = (recs["flags"] & FLAG_END_OF_BATCH) != 0
        begin = np.empty(n, dtype=bool)
        begin[0] = self.after_end
        begin[1:] = end[:-1]
        self.after_end = bool(end[-1])
        flags = (np.where(begin, BATCH_BEGIN, 0) | np.where(end, BATCH_END, 0)).tolist()
        safe = np.minimum(cmd, COMMAND_DELETE_ASK_LEVEL)
        side = _SIDE[safe].tolist()
        action = _ACTION[safe].tolist()
        ts = scdt_to_ns(recs["dt"]).tolist()
        price = widen_f32(recs["price"]).tolist()
        qty = recs["quantity"].astype(np.float64).tolist()
        orders = recs["num_orders"].tolist()
        iid = self.instrument
        nan = math.nan
        out: list[Event] = []
        append = out.append
        for i in range(n):
            a = action[i]
            if a < 0:
                continue
            t = ts[i]
            r = t if ts_recv is None else ts_recv
            if a == BOOK_CLEAR:
                append(BookLevel(t, r, iid, 0, nan, 0.0, BOOK_CLEAR, -1, 0, flags[i]))
            else:
                append(BookLevel(t, r, iid, side[i], price[i], qty[i], a, -1, orders[i], flags[i]))
        return out


def encode_records(recs: np.ndarray) -> bytes:
    return np.ascontiguousarray(recs, dtype=RECORD_DTYPE).tobytes()
