"""Typed events of format-2 payloads: the columns written back as a format-1 payload (one
msgpack array of the events) in one kernel call, for msgspec to build the structs in C.

Market rows are written from their columns (ints in their smallest msgpack form, floats as
float64 with their very bits); the other rows' bytes are copied from the object table, as the
writer's EventCodec encoded them. msgspec's decode of the result is bit for bit what was written.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..events import K_BOOK_LEVEL, K_QUOTE, K_TRADE
from ..fastdecode import _array_len, _skip
from .frame2_kernels import E_KINDS, E_TRAILING, _mp_array_head, decode_columns


@njit(cache=True)
def _mp_int(out, p, v):
    if 0 <= v < 128:
        out[p] = v
        return p + 1
    if -32 <= v < 0:
        out[p] = v & 0xFF
        return p + 1
    out[p] = 0xD3
    u = np.uint64(v)
    for b in range(8):
        out[p + 1 + b] = (u >> np.uint64(56 - 8 * b)) & np.uint64(0xFF)
    return p + 9


@njit(cache=True)
def _mp_float(out, p, u):
    """The float64 whose bits are `u` (uint64)."""
    out[p] = 0xCB
    for b in range(8):
        out[p + 1 + b] = (u >> np.uint64(56 - 8 * b)) & np.uint64(0xFF)
    return p + 9


@njit(cache=True)
def to_msgpack(buf, obj_at, kind, ts_event, ts_recv, instrument, price, size, side, bid,
               bid_size, ask, ask_size, action, level, orders, flags, obj, out):
    """The rows as one msgpack array of events (a format-1 payload): market rows written from
    the columns (float columns as their uint64 bits), the others copied from the object table
    at buf[obj_at:]; its length, or a negative error."""
    end = buf.shape[0]
    n = kind.shape[0]
    no, q = _array_len(buf, obj_at, end)
    if no < 0:
        return E_TRAILING
    starts = np.empty(no + 1, np.int64)
    for j in range(no):
        starts[j] = q
        q = _skip(buf, q, end)
        if q < 0:
            return E_TRAILING
    starts[no] = q
    p = _mp_array_head(out, 0, n)
    for r in range(n):
        k = kind[r]
        if k == K_TRADE or k == K_QUOTE or k == K_BOOK_LEVEL:
            out[p] = 0x90 | (7 if k == K_TRADE else (8 if k == K_QUOTE else 11))
            out[p + 1] = k
            p = _mp_int(out, p + 2, ts_event[r])
            p = _mp_int(out, p, ts_recv[r])
            p = _mp_int(out, p, instrument[r])
            if k == K_TRADE:
                p = _mp_float(out, p, price[r])
                p = _mp_float(out, p, size[r])
                p = _mp_int(out, p, side[r])
            elif k == K_QUOTE:
                p = _mp_float(out, p, bid[r])
                p = _mp_float(out, p, bid_size[r])
                p = _mp_float(out, p, ask[r])
                p = _mp_float(out, p, ask_size[r])
            else:
                p = _mp_int(out, p, side[r])
                p = _mp_float(out, p, price[r])
                p = _mp_float(out, p, size[r])
                p = _mp_int(out, p, action[r])
                p = _mp_int(out, p, level[r])
                p = _mp_int(out, p, orders[r])
                p = _mp_int(out, p, flags[r])
        else:
            j = obj[r]
            if j < 0 or j >= no:
                return E_KINDS
            a, e = starts[j], starts[j + 1]
            out[p:p + e - a] = buf[a:e]
            p += e - a
    return p


@njit(cache=True)
def msgpack_of_payload(buf, count, out):
    """The format-1 payload of the mode-1 payload `buf` into `out` (large enough): its length,
    or a negative error."""
    kind = np.empty(count, np.uint8)
    seq = np.empty(count, np.int64)
    ts_event = np.empty(count, np.int64)
    ts_recv = np.empty(count, np.int64)
    instrument = np.empty(count, np.int32)
    floats = np.empty((6, count), np.float64)
    side = np.empty(count, np.int8)
    action = np.empty(count, np.int8)
    level = np.empty(count, np.int16)
    orders = np.empty(count, np.int32)
    flags = np.empty(count, np.uint8)
    obj = np.empty(count, np.int32)
    price, size, bid, bid_size, ask, ask_size = (floats[0], floats[1], floats[2], floats[3],
                                                  floats[4], floats[5])
    at = decode_columns(buf, count, 0, -1, 0, kind, seq, ts_event, ts_recv, instrument, price,
                        size, side, bid, bid_size, ask, ask_size, action, level, orders, flags,
                        obj, np.empty((6, max(count, 1)), np.int64))
    if at < 0:
        return at
    bits = floats.view(np.uint64)
    return to_msgpack(buf, at, kind, ts_event, ts_recv, instrument, bits[0], bits[1], side,
                      bits[2], bits[3], bits[4], bits[5], action, level, orders, flags, obj, out)
