"""Columnar fast path: decode a log frame's msgpack array straight into numpy columns.

A numba walker reads the msgpack bytes of one frame (an array of array-like events
``[tag, ts_event, ts_recv, ...]``) and fills the market columns of Trade, Quote and BookLevel rows
directly. Every other row gets its kind, timestamps and instrument from the walker, and its
decoded object from msgspec, decoding only that element's bytes. The result must equal
``ColumnBatch.from_events`` on the same events (tests/test_log_roundtrip.py and
tests/test_log_fastdecode.py check this).

Compile time: a cold numba cache must compile this in a few seconds (a fresh machine runs the
demo in under a minute). numba's inline="always" re-inlines a function at IR level at every
call site, which is slow to compile, so the walker is one loop over every element of every event
with a single copy of the number reader, steered by per-kind tables (_plan) built from the event
structs; byte loads are intrinsics (no inlining) and rare cases are plain calls.

Numbers: msgspec writes an int (in the smallest msgpack int encoding) when a float field held a
Python int, so float fields accept every msgpack int and float encoding; int fields accept ints
only, as msgspec's decoder does.
"""

from __future__ import annotations

import msgspec
import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import types
from numba.extending import intrinsic

from .columns import COLUMN_SPEC, ColumnBatch
from .events import (
    EVENT_TYPES,
    K_BOOK_LEVEL,
    K_QUOTE,
    K_TRADE,
    KIND_OF,
    AnyEvent,
    Event,
)

# Column codes: what the walker does with one msgpack element of an event. Int columns below
# _C_FIRST_FLOAT take msgpack ints only (as msgspec's decoder does); float columns take every
# msgpack int and float encoding (msgspec writes an int when a float field held a Python int).
_C_SKIP = 0  # any msgpack object, skipped
_C_TAG = 1
_INT_COLUMNS = ("ts_event", "ts_recv", "instrument", "side", "action", "level", "orders",
                "flags")
_FLOAT_COLUMNS = ("price", "size", "bid", "bid_size", "ask", "ask_size")
_CODE_OF = {name: 2 + k for k, name in enumerate(_INT_COLUMNS + _FLOAT_COLUMNS)}
_C_FIRST_FLOAT = _CODE_OF[_FLOAT_COLUMNS[0]]
(_C_TS_EVENT, _C_TS_RECV, _C_INSTRUMENT, _C_SIDE, _C_ACTION, _C_LEVEL, _C_ORDERS, _C_FLAGS,
 _C_PRICE, _C_SIZE, _C_BID, _C_BID_SIZE, _C_ASK, _C_ASK_SIZE) = (
    _CODE_OF[c] for c in _INT_COLUMNS + _FLOAT_COLUMNS)
COLUMNAR_KINDS = (K_TRADE, K_QUOTE, K_BOOK_LEVEL)  # kinds whose fields all live in columns


def _plan(index_only: bool):
    """Per-kind tables the walker runs on, derived from the event structs.

    codes[kind, j]: column code of element j of that kind's array (element 0 is the tag; row 0,
    no kind, is used until the tag is read). min_len[kind]: elements the walker needs (fields
    without a default). is_obj[kind]: the row's event is decoded by msgspec.
    index_only: only kind, ts_recv and instrument are read, everything else skipped.
    """
    width = 1 + max(len(t.__struct_fields__) for t in EVENT_TYPES)
    codes = np.zeros((256, width), dtype=np.uint8)
    codes[:, 0] = _C_TAG
    min_len = np.zeros(256, dtype=np.int64)
    is_obj = np.zeros(256, dtype=np.uint8)
    known = np.zeros(256, dtype=np.uint8)
    inst_default = np.full(256, -1, dtype=np.int64)
    for t in EVENT_TYPES:
        k = KIND_OF[t]
        known[k] = 1
        names = t.__struct_fields__
        first_default = len(names) - len(t.__struct_defaults__)
        if "instrument" in names:
            i = names.index("instrument")
            if i >= first_default:
                inst_default[k] = t.__struct_defaults__[i - first_default]
        if index_only:
            wanted = ("ts_recv", "instrument")
        elif k in COLUMNAR_KINDS:
            wanted = tuple(_CODE_OF)
            min_len[k] = 1 + first_default
        else:
            wanted = ("ts_event", "ts_recv", "instrument")
            is_obj[k] = 1
        for i, name in enumerate(names):
            if name in wanted:
                codes[k, 1 + i] = _CODE_OF[name]
    return codes, min_len, is_obj, known, inst_default


# per column code: the range of ints its column holds (checked by _walk's `check`)
_INT_LO = np.full(32, np.iinfo(np.int64).min, dtype=np.int64)
_INT_HI = np.full(32, np.iinfo(np.int64).max, dtype=np.int64)
for _name in _INT_COLUMNS:
    _info = np.iinfo(COLUMN_SPEC[_name][0])
    _INT_LO[_CODE_OF[_name]] = _info.min
    _INT_HI[_CODE_OF[_name]] = _info.max

_COLUMNS_PLAN = _plan(False)
_INDEX_PLAN = _plan(True)

# Walker error codes (negative returns).
ERR_TRUNCATED = -1
ERR_NOT_ARRAY = -2
ERR_BAD_TYPE = -3
ERR_COUNT = -4
ERR_UNKNOWN_KIND = -5
ERR_SHORT_EVENT = -6
ERR_TRAILING = -7
ERR_RANGE = -8

ERROR_NAMES = {
    ERR_TRUNCATED: "payload ends inside an element",
    ERR_NOT_ARRAY: "expected a msgpack array",
    ERR_BAD_TYPE: "unexpected msgpack type for a field",
    ERR_COUNT: "event count differs from the frame header",
    ERR_UNKNOWN_KIND: "unknown event kind",
    ERR_SHORT_EVENT: "event array lacks required fields",
    ERR_TRAILING: "bytes after the event array",
    ERR_RANGE: "an int field does not fit its column",
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


def _be_loader(width, big_endian=True):
    """An intrinsic: the `width`-bit big-endian (or little-endian) unsigned int at buf[p], as
    uint64.

    One unaligned load and a byte swap; an intrinsic costs numba nothing to compile per call
    site, where an inline="always" function is re-inlined at IR level at every call.
    """
    @intrinsic
    def load(typingctx, buf, p):
        if not (isinstance(buf, types.Array) and buf.dtype == types.uint8 and buf.layout == "C"):
            return None

        def codegen(context, builder, signature, args):
            ary = context.make_array(signature.args[0])(context, builder, value=args[0])
            addr = builder.gep(ary.data, [args[1]])
            v = builder.load(builder.bitcast(addr, ir.IntType(width).as_pointer()), align=1)
            if width > 8 and big_endian:
                v = builder.bswap(v)
            return builder.zext(v, ir.IntType(64)) if width < 64 else v
        return types.uint64(buf, types.int64), codegen
    return load


_be16 = _be_loader(16)
_be32 = _be_loader(32)
_be64 = _be_loader(64)


@intrinsic
def _f64_from_bits(typingctx, bits):
    """Reinterpret a uint64 as float64 (a register bitcast; array views cost ~40 ns here)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.uint64), codegen


@intrinsic
def _f32_from_bits(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.trunc(args[0], ir.IntType(32)), ir.FloatType())
    return types.float32(types.uint64), codegen


@njit(cache=True)
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
        return np.int64(_be16(buf, p + 1)), p + 3
    if b == 0xDD:
        if p + 5 > end:
            return np.int64(-1), np.int64(ERR_TRUNCATED)
        return np.int64(_be32(buf, p + 1)), p + 5
    return np.int64(-1), np.int64(ERR_NOT_ARRAY)


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
        if 0x80 <= b <= 0x8F:
            remaining += 2 * (b & 0x0F)
            p += 1
            continue
        if 0x90 <= b <= 0x9F:
            remaining += b & 0x0F
            p += 1
            continue
        if b == 0xC4 or b == 0xD9:
            if p + 2 > end:
                return ERR_TRUNCATED
            p += 2 + np.int64(buf[p + 1])
            continue
        if b == 0xC5 or b == 0xDA:
            if p + 3 > end:
                return ERR_TRUNCATED
            p += 3 + np.int64(_be16(buf, p + 1))
            continue
        if b == 0xC6 or b == 0xDB:
            if p + 5 > end:
                return ERR_TRUNCATED
            p += 5 + np.int64(_be32(buf, p + 1))
            continue
        if b == 0xC7:
            if p + 2 > end:
                return ERR_TRUNCATED
            p += 3 + np.int64(buf[p + 1])
            continue
        if b == 0xC8:
            if p + 3 > end:
                return ERR_TRUNCATED
            p += 4 + np.int64(_be16(buf, p + 1))
            continue
        if b == 0xC9:
            if p + 5 > end:
                return ERR_TRUNCATED
            p += 6 + np.int64(_be32(buf, p + 1))
            continue
        if b == 0xDC or b == 0xDD:
            n_bytes = 2 if b == 0xDC else 4
            if p + 1 + n_bytes > end:
                return ERR_TRUNCATED
            remaining += np.int64(_be16(buf, p + 1) if n_bytes == 2 else _be32(buf, p + 1))
            p += 1 + n_bytes
            continue
        if b == 0xDE or b == 0xDF:
            n_bytes = 2 if b == 0xDE else 4
            if p + 1 + n_bytes > end:
                return ERR_TRUNCATED
            remaining += 2 * np.int64(_be16(buf, p + 1) if n_bytes == 2 else _be32(buf, p + 1))
            p += 1 + n_bytes
            continue
        return ERR_BAD_TYPE  # 0xC1 is never used
    if p > end:
        return ERR_TRUNCATED
    return p


@njit(cache=True)
def _walk(buf, count, codes, min_len, is_obj, known, inst_default, fill, check, row0,
          first_seq, obj_base, kind, seq, ts_event, ts_recv, instrument, price, size, side, bid, bid_size,
          ask, ask_size, action, level, orders, flags, obj, obj_start, obj_end):
    """Fill rows row0.. of the columns from one frame's msgpack array; returns the number of
    object rows.

    One loop over every element of every event: `codes` (see _plan) says which column the
    element goes to, so a single copy of the number reader serves every field. With `fill`,
    every column of every row is written (fill values where the kind has no such field, seq
    from first_seq or -1, obj from obj_base), so the columns may come from np.empty; without
    it (the index plan) only the planned columns are touched. With `check`, an int that does
    not fit its column (which would wrap) is an error (ERR_RANGE): the format-2 writer uses it
    to keep columns exact. Returns a negative error code when the bytes are not what the writer
    produces.
    """
    end = buf.shape[0]
    n, p = _array_len(buf, 0, end)
    if n < 0:
        return p
    if n != count:
        return ERR_COUNT
    width = codes.shape[1]
    n_obj = 0
    for r in range(row0, row0 + n):
        start = p
        if p >= end:
            return ERR_TRUNCATED
        if fill:
            seq[r] = first_seq + (r - row0) if first_seq >= 0 else -1
            ts_event[r] = 0
            ts_recv[r] = 0
            price[r] = np.nan
            size[r] = np.nan
            side[r] = 0
            bid[r] = np.nan
            bid_size[r] = np.nan
            ask[r] = np.nan
            ask_size[r] = np.nan
            action[r] = -1
            level[r] = -1
            orders[r] = 0
            flags[r] = 0
            obj[r] = -1
        b = np.int64(buf[p])
        if 0x90 <= b <= 0x9F:
            m = b & 0x0F
            p += 1
        else:
            m, p = _array_len(buf, p, end)
            if m < 0:
                return p
        if m < 3:
            return ERR_SHORT_EVENT
        tag = 0
        for j in range(m):
            code = codes[tag, j] if j < width else _C_SKIP
            if p >= end:
                return ERR_TRUNCATED
            b = np.int64(buf[p])
            if code == _C_SKIP:
                # branches for the common sizes: a predicted branch does not make the next
                # position wait for a table load
                if b < 0x80 or b >= 0xE0:
                    p += 1
                    continue
                if b == 0xCB or b == 0xCF:
                    p += 9
                    continue
                step = _FIXED_SIZE[b]
                if step > 0:
                    p += step
                else:
                    p = _skip(buf, p, end)
                    if p < 0:
                        return p
                continue
            # a number: iv (ints), fv (float columns), is_float (no int value)
            is_float = False
            if b < 0x80:
                iv = b
                fv = np.float64(iv)
                p += 1
            elif b == 0xCB:
                if p + 9 > end:
                    return ERR_TRUNCATED
                iv = 0
                fv = _f64_from_bits(_be64(buf, p + 1))
                is_float = True
                p += 9
            elif b == 0xCF:
                # uint64: an int column wraps it; a float column gets float() of the exact int
                if p + 9 > end:
                    return ERR_TRUNCATED
                u = _be64(buf, p + 1)
                if check and code < _C_FIRST_FLOAT and u > np.uint64(0x7FFFFFFFFFFFFFFF):
                    return ERR_RANGE
                iv = np.int64(u)
                fv = np.float64(u)
                p += 9
            elif b >= 0xE0:
                iv = b - 256
                fv = np.float64(iv)
                p += 1
            else:
                step = _FIXED_SIZE[b]
                if p + step > end:
                    return ERR_TRUNCATED
                if b == 0xD3:
                    iv = np.int64(_be64(buf, p + 1))
                elif b == 0xCC:
                    iv = np.int64(buf[p + 1])
                elif b == 0xCD:
                    iv = np.int64(_be16(buf, p + 1))
                elif b == 0xCE:
                    iv = np.int64(_be32(buf, p + 1))
                elif b == 0xD0:
                    iv = np.int64(np.int8(buf[p + 1]))
                elif b == 0xD1:
                    iv = np.int64(np.int16(_be16(buf, p + 1)))
                elif b == 0xD2:
                    iv = np.int64(np.int32(_be32(buf, p + 1)))
                elif b == 0xCA:
                    iv = 0
                    is_float = True
                else:
                    return ERR_BAD_TYPE  # nil, bool, str, bin, containers, ext
                if is_float:
                    fv = np.float64(_f32_from_bits(_be32(buf, p + 1)))
                else:
                    fv = np.float64(iv)
                p += step
            if code >= _C_FIRST_FLOAT:
                if code == _C_PRICE:
                    price[r] = fv
                elif code == _C_SIZE:
                    size[r] = fv
                elif code == _C_BID:
                    bid[r] = fv
                elif code == _C_BID_SIZE:
                    bid_size[r] = fv
                elif code == _C_ASK:
                    ask[r] = fv
                else:
                    ask_size[r] = fv
                continue
            if is_float:
                return ERR_BAD_TYPE
            if check and (iv < _INT_LO[code] or iv > _INT_HI[code]):
                return ERR_RANGE
            if code == _C_TAG:
                if iv < 0 or iv > 255 or known[iv] == 0:
                    return ERR_UNKNOWN_KIND
                if m < min_len[iv]:
                    return ERR_SHORT_EVENT
                tag = iv
                kind[r] = tag
                instrument[r] = inst_default[tag]
            elif code == _C_TS_EVENT:
                ts_event[r] = iv
            elif code == _C_TS_RECV:
                ts_recv[r] = iv
            elif code == _C_INSTRUMENT:
                instrument[r] = iv
            elif code == _C_SIDE:
                side[r] = iv
            elif code == _C_ACTION:
                action[r] = iv
            elif code == _C_LEVEL:
                level[r] = iv
            elif code == _C_ORDERS:
                orders[r] = iv
            else:
                flags[r] = iv
        if is_obj[tag]:
            obj[r] = obj_base + n_obj
            obj_start[n_obj] = start
            obj_end[n_obj] = p
            n_obj += 1
    if p > end:
        return ERR_TRUNCATED
    if p != end:
        return ERR_TRAILING
    return n_obj


class FastDecodeError(ValueError):
    """The walker met bytes the writer never produces."""


_one_decoder = msgspec.msgpack.Decoder(AnyEvent)


def empty_batch(n: int) -> ColumnBatch:
    """A batch of n uninitialised rows, for decode_columns_into to fill."""
    return ColumnBatch(**{name: np.empty(n, dtype=dt) for name, (dt, _) in COLUMN_SPEC.items()},
                       objects=[])


def decode_columns_into(batch: ColumnBatch, offset: int, payload: bytes, count: int,
                        first_seq: int = -1) -> None:
    """Decode one frame's payload into rows offset..offset+count of `batch`.

    Every column of those rows is written (the batch may come from ``empty_batch``); the
    frame's decoded objects are appended to ``batch.objects``. On FastDecodeError (or a
    msgspec error) the rows hold garbage and ``batch.objects`` is unchanged.
    """
    if offset < 0 or offset + count > len(batch):
        raise ValueError(f"decode_columns_into: rows {offset}..{offset + count} do not fit a "
                         f"batch of {len(batch)}")
    buf = np.frombuffer(payload, dtype=np.uint8)
    obj_start = np.empty(count, np.int64)
    obj_end = np.empty(count, np.int64)
    b = batch
    n_obj = _walk(buf, count, *_COLUMNS_PLAN, True, False, offset, first_seq, len(b.objects),
                  b.kind, b.seq, b.ts_event, b.ts_recv, b.instrument, b.price, b.size, b.side, b.bid,
                  b.bid_size, b.ask, b.ask_size, b.action, b.level, b.orders, b.flags, b.obj,
                  obj_start, obj_end)
    if n_obj < 0:
        raise FastDecodeError(ERROR_NAMES.get(n_obj, f"walker error {n_obj}"))
    if n_obj:
        mv = memoryview(payload)
        decode = _one_decoder.decode
        b.objects.extend([decode(mv[obj_start[k]:obj_end[k]]) for k in range(n_obj)])


def columns_and_objects(payload: bytes, count: int) -> tuple[ColumnBatch, np.ndarray, np.ndarray]:
    """For the format-2 writer: the columns of a msgpack frame payload with every int checked
    to fit its column, and the byte spans (start, end) in `payload` of each object row's event
    (objects are not decoded). FastDecodeError when the frame cannot be held exactly."""
    buf = np.frombuffer(payload, dtype=np.uint8)
    b = empty_batch(count)
    obj_start = np.empty(count, np.int64)
    obj_end = np.empty(count, np.int64)
    n_obj = _walk(buf, count, *_COLUMNS_PLAN, True, True, 0, -1, 0, b.kind, b.seq, b.ts_event,
                  b.ts_recv, b.instrument, b.price, b.size, b.side, b.bid, b.bid_size, b.ask,
                  b.ask_size, b.action, b.level, b.orders, b.flags, b.obj, obj_start, obj_end)
    if n_obj < 0:
        raise FastDecodeError(ERROR_NAMES.get(n_obj, f"walker error {n_obj}"))
    return b, obj_start[:n_obj], obj_end[:n_obj]


def decode_columns(payload: bytes, count: int, first_seq: int = -1) -> ColumnBatch:
    """One frame's uncompressed payload as a ColumnBatch (seq from first_seq when >= 0)."""
    b = empty_batch(count)
    decode_columns_into(b, 0, payload, count, first_seq)
    return b


# decode_index runs the same walker with a plan that reads only kind, ts_recv and instrument;
# the columns it never writes are these empty arrays.
_NO_ROWS = ColumnBatch.allocate(0)


def decode_index(payload: bytes, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kind, ts_recv, instrument) arrays of one frame's payload, without decoding events."""
    buf = np.frombuffer(payload, dtype=np.uint8)
    kind = np.empty(count, np.uint8)
    ts_recv = np.empty(count, np.int64)
    instrument = np.empty(count, np.int32)
    z = _NO_ROWS
    rc = _walk(buf, count, *_INDEX_PLAN, False, False, 0, -1, 0, kind, z.seq, z.ts_event, ts_recv,
               instrument, z.price, z.size, z.side, z.bid, z.bid_size, z.ask, z.ask_size,
               z.action, z.level, z.orders, z.flags, z.obj, z.ts_event, z.ts_event)
    if rc < 0:
        raise FastDecodeError(ERROR_NAMES.get(rc, f"walker error {rc}"))
    return kind, ts_recv, instrument


def warm_up() -> None:
    """Compile (or load from cache) the walker now rather than on the first frame."""
    from .events import EventCodec, Trade

    payload = EventCodec().encode_many([Trade(0, 0, 0, 1.0, 1.0, 0)])
    decode_columns(payload, 1)
    decode_index(payload, 1)


__all__ = ["columns_and_objects", "decode_columns", "decode_columns_into", "empty_batch", "decode_index", "FastDecodeError", "warm_up", "Event"]
