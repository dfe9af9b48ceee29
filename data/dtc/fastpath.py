"""Bulk decode of binary DTC market data straight into columns (numba framing + numpy views).

For captures and benchmarks, where millions of messages sit in one buffer: a jitted loop walks
the frames (Size/Type), then each market type's rows are gathered into a (n, size) byte block
and viewed through a numpy dtype built from the same header offsets the codec uses. Trades
(107), bid/ask (108) and depth (122 snapshot, 106 and 140 updates) become ColumnBatch rows in
stream order; other types are counted and skipped (the sans-IO ``DtcCodec`` handles them).
The live client uses ``DtcCodec`` and ``DtcEventMapper``, which also keep the BBO and batch
state; this path maps each message on its own (unset BBO sides are NaN, not carried over).
"""

from __future__ import annotations

from typing import Final

import numba
import numpy as np

from mia.engine.columns import ColumnBatch
from mia.engine.errors import RemoteProtocolError
from mia.engine.events import (
    BATCH_BEGIN, BATCH_END, BOOK_DELETE, BOOK_SNAPSHOT, BOOK_UPSERT, K_BOOK_LEVEL, K_QUOTE, K_TRADE,
)

from . import protocol as p

_NP_CODES: Final = {"b": "<i1", "B": "<u1", "h": "<i2", "H": "<u2", "i": "<i4", "I": "<u4",
                    "q": "<i8", "f": "<f4", "d": "<f8"}


def _dtype(msg_type: int) -> np.dtype:
    """The numpy record type of one message, offsets from the codec's layout."""
    layout = p.LAYOUTS[msg_type]
    names, formats, offsets = [], [], []
    off = 0
    fmt = layout.unpack.format[1:]
    i = 0
    field = 0
    while i < len(fmt):
        j = i
        while fmt[j].isdigit():
            j += 1
        count = int(fmt[i:j]) if j > i else 1
        code = fmt[j]
        if code == "x":
            off += count
        elif code == "s":
            names.append(layout.py_names[field])
            formats.append(f"S{count}")
            offsets.append(off)
            off += count
            field += 1
        else:
            names.append(layout.py_names[field])
            formats.append(_NP_CODES[code])
            offsets.append(off)
            off += np.dtype(_NP_CODES[code]).itemsize
            field += 1
        i = j + 1
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": layout.size})


DTYPES: Final = {t: _dtype(t) for t in (p.MARKET_DATA_UPDATE_TRADE, p.MARKET_DATA_UPDATE_BID_ASK,
                                        p.MARKET_DEPTH_SNAPSHOT_LEVEL, p.MARKET_DEPTH_UPDATE_LEVEL,
                                        p.MARKET_DEPTH_UPDATE_LEVEL_FLOAT_WITH_MILLISECONDS)}


@numba.njit(cache=True)
def _scan(buf, max_size):  # pragma: no cover - jitted
    n = buf.shape[0]
    offsets = np.empty(n // 4 + 1, np.int64)
    types = np.empty(n // 4 + 1, np.int32)
    off = 0
    count = 0
    while n - off >= 4:
        size = np.int64(buf[off]) | (np.int64(buf[off + 1]) << 8)
        if size < 4 or size > max_size:
            return offsets[:count], types[:count], off, size
        if n - off < size:
            break
        offsets[count] = off
        types[count] = np.int32(buf[off + 2]) | (np.int32(buf[off + 3]) << 8)
        count += 1
        off += size
    return offsets[:count], types[:count], off, 0


def _gather(arr: np.ndarray, offsets: np.ndarray, msg_type: int) -> np.ndarray:
    dtype = DTYPES[msg_type]
    idx = offsets[:, None] + np.arange(dtype.itemsize)
    # a shorter message from an older sender would read into the next frame: callers get
    # well-formed captures here; the codec is the tolerant path
    np.minimum(idx, arr.shape[0] - 1, out=idx)
    return arr[idx].reshape(-1).view(dtype)


def decode_market_columns(data: bytes | bytearray | memoryview, ts_recv: int = 0, *,
                          max_message_size: int = p.DEFAULT_MAX_MESSAGE_SIZE
                          ) -> tuple[ColumnBatch, int, int]:
    """Decode the complete binary frames in ``data``: (batch, bytes consumed, frames skipped).

    Raises RemoteProtocolError on a Size < 4 or above ``max_message_size``.
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    offsets, types, consumed, bad = _scan(arr, max_message_size)
    if bad:
        raise RemoteProtocolError(f"DTC message Size {bad} out of range at byte {consumed}")
    keep = np.isin(types, np.array(list(DTYPES), dtype=np.int32))
    rows_types = types[keep]
    rows_offsets = offsets[keep]
    batch = ColumnBatch.allocate(int(rows_types.shape[0]))
    batch.ts_recv[:] = ts_recv
    for t in DTYPES:
        sel = np.nonzero(rows_types == t)[0]
        if sel.shape[0] == 0:
            continue
        rec = _gather(arr, rows_offsets[sel], t)
        batch.instrument[sel] = rec["symbol_id"]
        if t == p.MARKET_DATA_UPDATE_TRADE:
            batch.kind[sel] = K_TRADE
            batch.price[sel] = rec["price"]
            batch.size[sel] = rec["volume"]
            side = rec["at_bid_or_ask"]
            batch.side[sel] = np.where(side == p.AT_ASK, 1, np.where(side == p.AT_BID, -1, 0))
            batch.ts_event[sel] = np.round(rec["date_time"] * 1e6).astype(np.int64) * 1000
        elif t == p.MARKET_DATA_UPDATE_BID_ASK:
            batch.kind[sel] = K_QUOTE
            bid, ask = rec["bid_price"], rec["ask_price"]
            batch.bid[sel] = np.where(bid >= 3.4e38, np.nan, bid)
            batch.ask[sel] = np.where(ask >= 3.4e38, np.nan, ask)
            batch.bid_size[sel] = rec["bid_quantity"]
            batch.ask_size[sel] = rec["ask_quantity"]
            batch.ts_event[sel] = rec["date_time"].astype(np.int64) * 1_000_000_000
        else:
            batch.kind[sel] = K_BOOK_LEVEL
            side = rec["side"]
            batch.side[sel] = np.where(side == p.AT_BID, 1, np.where(side == p.AT_ASK, -1, 0))
            batch.price[sel] = rec["price"]
            batch.orders[sel] = rec["num_orders"]
            if t == p.MARKET_DEPTH_SNAPSHOT_LEVEL:
                batch.size[sel] = rec["quantity"]
                batch.action[sel] = BOOK_SNAPSHOT
                batch.level[sel] = rec["level"].astype(np.int16) - 1
                batch.flags[sel] = (np.where(rec["is_first_message_in_batch"] != 0, BATCH_BEGIN, 0)
                                    | np.where(rec["is_last_message_in_batch"] != 0, BATCH_END, 0))
                batch.ts_event[sel] = np.round(rec["date_time"] * 1e6).astype(np.int64) * 1000
            else:
                delete = rec["update_type"] == p.DEPTH_DELETE
                batch.action[sel] = np.where(delete, BOOK_DELETE, BOOK_UPSERT)
                batch.size[sel] = np.where(delete, 0.0, rec["quantity"])
                fin = rec["final_update_in_batch"]
                batch.flags[sel] = np.where(fin == p.FINAL_UPDATE_BEGIN_BATCH, BATCH_BEGIN,
                                            np.where(fin == p.FINAL_UPDATE_FALSE, 0, BATCH_END))
                if t == p.MARKET_DEPTH_UPDATE_LEVEL:
                    batch.ts_event[sel] = np.round(rec["date_time"] * 1e6).astype(np.int64) * 1000
                else:
                    batch.ts_event[sel] = rec["date_time"] * 1_000_000
    return batch, int(consumed), int(offsets.shape[0] - rows_types.shape[0])
