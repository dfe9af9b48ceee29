"""Columnar fast path: decode a log frame's msgpack array straight into numpy columns.

A numba walker reads the msgpack bytes of one frame (an array of array-like events
``[tag, ts_event, ts_recv, ...]``) and fills the market columns of Trade, Quote and BookLevel rows
directly. Every other row gets its kind, timestamps and instrument from the walker, and its
decoded object from msgspec, decoding only that element's bytes. The result must equal
``ColumnBatch.from_events`` on the same events (tests/test_log_columns.py checks this).

Numbers: msgspec writes an int (in the smallest msgpack int encoding) when a float field held a
Python int, so float fields accept every msgpack int and float encoding; int fields accept ints
only, as msgspec's decoder does.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import types
from numba.extending import intrinsic

from .columns import ColumnBatch
from .events import (
    EVENT_TYPES,
    K_BOOK_LEVEL,
    K_QUOTE,
    K_TRADE,
    KIND_OF,
    AnyEvent,
    Event,
)

import msgspec

# Where each kind keeps `instrument` in its msgpack array (element 0 is the tag), and its
# default when an older, shorter array omits it; -1 position: the kind has no instrument.
INSTRUMENT_POS = np.full(256, -1, dtype=np.int64)
INSTRUMENT_DEFAULT = np.full(256, -1, dtype=np.int64)
KNOWN_KIND = np.zeros(256, dtype=np.uint8)
for _t in EVENT_TYPES:
    _k = KIND_OF[_t]
    KNOWN_KIND[_k] = 1
    if "instrument" in _t.__struct_fields__:
        _i = _t.__struct_fields__.index("instrument")
        INSTRUMENT_POS[_k] = _i + 1
        _ndef = len(_t.__struct_defaults__)
        _first_default = len(_t.__struct_fields__) - _ndef
        if _i >= _first_default:
            INSTRUMENT_DEFAULT[_k] = _t.__struct_defaults__[_i - _first_default]

# Walker error codes (negative returns).
ERR_TRUNCATED = -1
ERR_NOT_ARRAY = -2
ERR_BAD_TYPE = -3
ERR_COUNT = -4
ERR_UNKNOWN_KIND = -5
ERR_SHORT_EVENT = -6
ERR_TRAILING = -7

ERROR_NAMES = {
    ERR_TRUNCATED: "payload ends inside an element",
    ERR_NOT_ARRAY: "expected a msgpack array",
    ERR_BAD_TYPE: "unexpected msgpack type for a field",
    ERR_COUNT: "event count differs from the frame header",
    ERR_UNKNOWN_KIND: "unknown event kind",
    ERR_SHORT_EVENT: "event array lacks required fields",
    ERR_TRAILING: "bytes after the event array",
}


# Total size of a msgpack object by its first byte when that size is fixed, else 0.
_FIXED_SIZE = np.zeros(256, dtype=np.int64)
_FIXED_SIZE[0x00:0x80] = 1
_FIXED_SIZE[0xE0:0x100] = 1
_FIXED_SIZE[[0xC0, 0xC2, 0xC3]] = 1
for _b in range(0xA0, 0xC0):
    _FIXED_SIZE[_b] = 1 + (_b & 0x1F)
_FIXED_SIZE[0xCA] = 5
_FIXED_SIZE[0xCB] = 9
for _b, _n in ((0xCC, 1), (0xCD, 2), (0xCE, 4), (0xCF, 8), (0xD0, 1), (0xD1, 2), (0xD2, 4),
               (0xD3, 8)):
    _FIXED_SIZE[_b] = 1 + _n
for _b, _n in ((0xD4, 1), (0xD5, 2), (0xD6, 4), (0xD7, 8), (0xD8, 16)):
    _FIXED_SIZE[_b] = 2 + _n
_FIXED_SIZE[0x90] = 1  # empty array
_FIXED_SIZE[0x80] = 1  # empty map


@intrinsic
def _f64_from_bits(typingctx, bits):
    """Reinterpret a uint64 as float64 (a register bitcast; array views cost ~40 ns here)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.uint64), codegen


@intrinsic
def _f32_from_bits(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.uint32), codegen


@njit(cache=True, inline="always")
def _u16(buf, p):
    return (np.int64(buf[p]) << 8) | np.int64(buf[p + 1])


@njit(cache=True, inline="always")
def _u32(buf, p):
    return ((np.int64(buf[p]) << 24) | (np.int64(buf[p + 1]) << 16)
            | (np.int64(buf[p + 2]) << 8) | np.int64(buf[p + 3]))


@njit(cache=True, inline="always")
def _u64(buf, p):
    """Big-endian 8 bytes at p, as uint64."""
    hi = np.uint64(_u32(buf, p))
    lo = np.uint64(_u32(buf, p + 4))
    return (hi << np.uint64(32)) | lo


@njit(cache=True, inline="always")
def _array_len(buf, p, end):
    """(length, next position) of an array header at p; (-1, err) when not an array."""
    if p >= end:
        return np.int64(-1), np.int64(ERR_TRUNCATED)
    b = buf[p]
    if 0x90 <= b <= 0x9F:
        return np.int64(b & 0x0F), p + 1
    if b == 0xDC:
        if p + 3 > end:
            return np.int64(-1), np.int64(ERR_TRUNCATED)
        return _u16(buf, p + 1), p + 3
    if b == 0xDD:
        if p + 5 > end:
            return np.int64(-1), np.int64(ERR_TRUNCATED)
        return _u32(buf, p + 1), p + 5
    return np.int64(-1), np.int64(ERR_NOT_ARRAY)


@njit(cache=True, inline="always")
def _int(buf, p, end):
    """(ok, value, next position) of a msgpack integer at p."""
    if p >= end:
        return False, np.int64(0), np.int64(ERR_TRUNCATED)
    b = buf[p]
    if b < 0x80:
        return True, np.int64(b), p + 1
    if b >= 0xE0:
        return True, np.int64(b) - 256, p + 1
    size = _FIXED_SIZE[b]
    if p + size > end:
        return False, np.int64(0), np.int64(ERR_TRUNCATED)
    if b == 0xCF or b == 0xD3:
        return True, np.int64(_u64(buf, p + 1)), p + 9
    if b == 0xCC:
        return True, np.int64(buf[p + 1]), p + 2
    if b == 0xCD:
        return True, _u16(buf, p + 1), p + 3
    if b == 0xCE:
        return True, _u32(buf, p + 1), p + 5
    if b == 0xD0:
        v = np.int64(buf[p + 1])
        return True, v - 256 if v >= 128 else v, p + 2
    if b == 0xD1:
        v = _u16(buf, p + 1)
        return True, v - 65536 if v >= 32768 else v, p + 3
    if b == 0xD2:
        v = _u32(buf, p + 1)
        return True, v - 4294967296 if v >= 2147483648 else v, p + 5
    return False, np.int64(0), np.int64(ERR_BAD_TYPE)


@njit(cache=True, inline="always")
def _float(buf, p, end):
    """(ok, value, next position) of a msgpack float or integer at p, as float64."""
    if p >= end:
        return False, 0.0, np.int64(ERR_TRUNCATED)
    b = buf[p]
    if b == 0xCB:
        if p + 9 > end:
            return False, 0.0, np.int64(ERR_TRUNCATED)
        return True, _f64_from_bits(_u64(buf, p + 1)), p + 9
    if b == 0xCA:
        if p + 5 > end:
            return False, 0.0, np.int64(ERR_TRUNCATED)
        return True, np.float64(_f32_from_bits(np.uint32(_u32(buf, p + 1)))), p + 5
    if b == 0xCF:
        # uint64 above int64's range: msgspec gives the exact Python int, float() of it
        if p + 9 > end:
            return False, 0.0, np.int64(ERR_TRUNCATED)
        return True, np.float64(_u64(buf, p + 1)), p + 9
    ok, v, q = _int(buf, p, end)
    if not ok:
        return False, 0.0, q
    return True, np.float64(v), q


@njit(cache=True)
def _skip(buf, p, end):
    """Position after one msgpack object at p (negative error code when malformed)."""
    remaining = 1
    while remaining > 0:
        if p >= end:
            return ERR_TRUNCATED
        remaining -= 1
        b = buf[p]
        size = _FIXED_SIZE[b]
        if size > 0:
            p += size
            continue
        if b <= 0x7F or b >= 0xE0 or b == 0xC0 or b == 0xC2 or b == 0xC3:
            p += 1
            continue
        if 0x80 <= b <= 0x8F:
            remaining += 2 * (b & 0x0F)
            p += 1
            continue
        if 0x90 <= b <= 0x9F:
            remaining += b & 0x0F
            p += 1
            continue
        if 0xA0 <= b <= 0xBF:
            p += 1 + (b & 0x1F)
            continue
        if b == 0xC4 or b == 0xD9:
            if p + 2 > end:
                return ERR_TRUNCATED
            p += 2 + np.int64(buf[p + 1])
            continue
        if b == 0xC5 or b == 0xDA:
            if p + 3 > end:
                return ERR_TRUNCATED
            p += 3 + np.int64(_u16(buf, p + 1))
            continue
        if b == 0xC6 or b == 0xDB:
            if p + 5 > end:
                return ERR_TRUNCATED
            p += 5 + np.int64(_u32(buf, p + 1))
            continue
        if b == 0xC7:
            if p + 2 > end:
                return ERR_TRUNCATED
            p += 3 + np.int64(buf[p + 1])
            continue
        if b == 0xC8:
            if p + 3 > end:
                return ERR_TRUNCATED
            p += 4 + np.int64(_u16(buf, p + 1))
            continue
        if b == 0xC9:
            if p + 5 > end:
                return ERR_TRUNCATED
            p += 6 + np.int64(_u32(buf, p + 1))
            continue
        if b == 0xCA:
            p += 5
            continue
        if b == 0xCB:
            p += 9
            continue
        if 0xCC <= b <= 0xCF:
            p += 1 + (1 << (b - 0xCC))
            continue
        if 0xD0 <= b <= 0xD3:
            p += 1 + (1 << (b - 0xD0))
            continue
        if 0xD4 <= b <= 0xD8:
            p += 2 + (1 << (b - 0xD4))
            continue
        if b == 0xDC or b == 0xDD:
            n_bytes = 2 if b == 0xDC else 4
            if p + 1 + n_bytes > end:
                return ERR_TRUNCATED
            remaining += (_u16(buf, p + 1) if n_bytes == 2 else _u32(buf, p + 1))
            p += 1 + n_bytes
            continue
        if b == 0xDE or b == 0xDF:
            n_bytes = 2 if b == 0xDE else 4
            if p + 1 + n_bytes > end:
                return ERR_TRUNCATED
            remaining += 2 * (_u16(buf, p + 1) if n_bytes == 2 else _u32(buf, p + 1))
            p += 1 + n_bytes
            continue
        return ERR_BAD_TYPE  # 0xC1 is never used
    if p > end:
        return ERR_TRUNCATED
    return p


@njit(cache=True, inline="always")
def _skip_one(buf, p, end):
    """_skip with the fixed-size case (numbers, short strings) inlined."""
    if p < end:
        size = _FIXED_SIZE[buf[p]]
        if size > 0:
            return p + size
    return _skip(buf, p, end)


@njit(cache=True)
def _walk(buf, count, inst_pos, inst_default, known, kind, ts_event, ts_recv, instrument,
          price, size, side, bid, bid_size, ask, ask_size, action, level, orders, flags,
          obj_start, obj_end):
    """Fill the columns from one frame's msgpack array; returns the number of object rows.

    Returns a negative error code when the bytes are not what the writer produces.
    """
    end = buf.shape[0]
    n, p = _array_len(buf, 0, end)
    if n < 0:
        return p
    if n != count:
        return ERR_COUNT
    n_obj = 0
    for i in range(n):
        start = p
        m, p = _array_len(buf, p, end)
        if m < 0:
            return p
        if m < 3:
            return ERR_SHORT_EVENT
        ok, tag, p = _int(buf, p, end)
        if not ok:
            return p
        if tag < 0 or tag > 255 or known[tag] == 0:
            return ERR_UNKNOWN_KIND
        kind[i] = tag
        ok, v, p = _int(buf, p, end)
        if not ok:
            return p
        ts_event[i] = v
        ok, v, p = _int(buf, p, end)
        if not ok:
            return p
        ts_recv[i] = v
        j = 3  # next element index
        if tag == K_TRADE:
            if m < 6:
                return ERR_SHORT_EVENT
            ok, v, p = _int(buf, p, end)
            if not ok:
                return p
            instrument[i] = v
            ok, x, p = _float(buf, p, end)
            if not ok:
                return p
            price[i] = x
            ok, x, p = _float(buf, p, end)
            if not ok:
                return p
            size[i] = x
            j = 6
            if m > 6:
                ok, v, p = _int(buf, p, end)
                if not ok:
                    return p
                side[i] = v
                j = 7
        elif tag == K_QUOTE:
            if m < 8:
                return ERR_SHORT_EVENT
            ok, v, p = _int(buf, p, end)
            if not ok:
                return p
            instrument[i] = v
            ok, x, p = _float(buf, p, end)
            if not ok:
                return p
            bid[i] = x
            ok, x, p = _float(buf, p, end)
            if not ok:
                return p
            bid_size[i] = x
            ok, x, p = _float(buf, p, end)
            if not ok:
                return p
            ask[i] = x
            ok, x, p = _float(buf, p, end)
            if not ok:
                return p
            ask_size[i] = x
            j = 8
        elif tag == K_BOOK_LEVEL:
            if m < 8:
                return ERR_SHORT_EVENT
            ok, v, p = _int(buf, p, end)
            if not ok:
                return p
            instrument[i] = v
            ok, v, p = _int(buf, p, end)
            if not ok:
                return p
            side[i] = v
            ok, x, p = _float(buf, p, end)
            if not ok:
                return p
            price[i] = x
            ok, x, p = _float(buf, p, end)
            if not ok:
                return p
            size[i] = x
            ok, v, p = _int(buf, p, end)
            if not ok:
                return p
            action[i] = v
            j = 8
            if m > 8:
                ok, v, p = _int(buf, p, end)
                if not ok:
                    return p
                level[i] = v
                j = 9
            if m > 9:
                ok, v, p = _int(buf, p, end)
                if not ok:
                    return p
                orders[i] = v
                j = 10
            if m > 10:
                ok, v, p = _int(buf, p, end)
                if not ok:
                    return p
                flags[i] = v
                j = 11
        else:
            ip = inst_pos[tag]
            instrument[i] = inst_default[tag] if ip >= 0 else -1
            while j < m:
                if j == ip:
                    ok, v, p = _int(buf, p, end)
                    if not ok:
                        return p
                    instrument[i] = v
                else:
                    p = _skip_one(buf, p, end)
                    if p < 0:
                        return p
                j += 1
            obj_start[n_obj] = start
            obj_end[n_obj] = p
            n_obj += 1
            continue
        # fields a newer writer appended: skip them
        while j < m:
            p = _skip_one(buf, p, end)
            if p < 0:
                return p
            j += 1
    if p != end:
        return ERR_TRAILING
    return n_obj


@njit(cache=True)
def _walk_index(buf, count, inst_pos, inst_default, known, kind, ts_recv, instrument):
    """Kind, ts_recv and instrument of every event of a frame (for filters and merging)."""
    end = buf.shape[0]
    n, p = _array_len(buf, 0, end)
    if n < 0:
        return p
    if n != count:
        return ERR_COUNT
    for i in range(n):
        m, p = _array_len(buf, p, end)
        if m < 0:
            return p
        if m < 3:
            return ERR_SHORT_EVENT
        ok, tag, p = _int(buf, p, end)
        if not ok:
            return p
        if tag < 0 or tag > 255 or known[tag] == 0:
            return ERR_UNKNOWN_KIND
        kind[i] = tag
        p = _skip_one(buf, p, end)  # ts_event
        if p < 0:
            return p
        ok, v, p = _int(buf, p, end)
        if not ok:
            return p
        ts_recv[i] = v
        ip = inst_pos[tag]
        instrument[i] = inst_default[tag] if ip >= 0 else -1
        j = 3
        while j < m:
            if j == ip:
                ok, v, p = _int(buf, p, end)
                if not ok:
                    return p
                instrument[i] = v
            else:
                p = _skip_one(buf, p, end)
                if p < 0:
                    return p
            j += 1
    if p != end:
        return ERR_TRAILING
    return 0


class FastDecodeError(ValueError):
    """The walker met bytes the writer never produces."""


_one_decoder = msgspec.msgpack.Decoder(AnyEvent)


def decode_columns(payload: bytes, count: int, first_seq: int = -1) -> ColumnBatch:
    """One frame's uncompressed payload as a ColumnBatch (seq from first_seq when >= 0)."""
    buf = np.frombuffer(payload, dtype=np.uint8)
    b = ColumnBatch.allocate(count)
    obj_start = np.empty(count, np.int64)
    obj_end = np.empty(count, np.int64)
    n_obj = _walk(buf, count, INSTRUMENT_POS, INSTRUMENT_DEFAULT, KNOWN_KIND, b.kind, b.ts_event,
                  b.ts_recv, b.instrument, b.price, b.size, b.side, b.bid, b.bid_size, b.ask,
                  b.ask_size, b.action, b.level, b.orders, b.flags, obj_start, obj_end)
    if n_obj < 0:
        raise FastDecodeError(ERROR_NAMES.get(n_obj, f"walker error {n_obj}"))
    if first_seq >= 0:
        b.seq[:] = np.arange(first_seq, first_seq + count, dtype=np.int64)
    if n_obj:
        mv = memoryview(payload)
        decode = _one_decoder.decode
        b.objects = [decode(mv[obj_start[k]:obj_end[k]]) for k in range(n_obj)]
        is_obj = ~np.isin(b.kind, (K_TRADE, K_QUOTE, K_BOOK_LEVEL))
        b.obj[is_obj] = np.arange(n_obj, dtype=np.int32)
    return b


def decode_index(payload: bytes, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kind, ts_recv, instrument) arrays of one frame's payload, without decoding events."""
    buf = np.frombuffer(payload, dtype=np.uint8)
    kind = np.empty(count, np.uint8)
    ts_recv = np.empty(count, np.int64)
    instrument = np.empty(count, np.int32)
    rc = _walk_index(buf, count, INSTRUMENT_POS, INSTRUMENT_DEFAULT, KNOWN_KIND, kind, ts_recv,
                     instrument)
    if rc < 0:
        raise FastDecodeError(ERROR_NAMES.get(rc, f"walker error {rc}"))
    return kind, ts_recv, instrument


def warm_up() -> None:
    """Compile (or load from cache) the walkers now rather than on the first frame."""
    from .events import EventCodec, Trade

    payload = EventCodec().encode_many([Trade(0, 0, 0, 1.0, 1.0, 0)])
    decode_columns(payload, 1)
    decode_index(payload, 1)


__all__ = ["decode_columns", "decode_index", "FastDecodeError", "warm_up", "Event"]
