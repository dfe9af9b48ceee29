"""The numba kernels of format-2 frame payloads (layout: frame2.py and docs/log-format.md).

`encode_columns` writes one frame's columns; `decode_columns` reads them back into rows of a
ColumnBatch's arrays (every column written), `decode_index` only kind, ts_recv and instrument.
Every length is checked against the payload before it is read: a payload the writer did not
produce gives a negative error code, never a read outside the buffer.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..events import K_BOOK_LEVEL, K_QUOTE, K_TRADE, BookLevel, Quote, Trade
from ..fastdecode import _be_loader, _f32_from_bits, _f64_from_bits

# the market kinds' fields, in the order the columns hold them (a field appended to one of
# these structs needs a column first: this fails at import until it has one)
assert Trade.__struct_fields__ == ("ts_event", "ts_recv", "instrument", "price", "size", "side")
assert Quote.__struct_fields__ == ("ts_event", "ts_recv", "instrument", "bid", "bid_size", "ask",
                                   "ask_size")
assert BookLevel.__struct_fields__ == ("ts_event", "ts_recv", "instrument", "side", "price",
                                       "size", "action", "level", "orders", "flags")

MODE_MSGPACK = 0
MODE_COLUMNS = 1
HEAD_SIZE = 32
# column codes
C_INT = 0  # int64 = base + offset, or base + running sum of deltas (width 0: every value = base)
C_SCALED = 1  # float64 = float64(the int as C_INT) * 2**-exp
C_F32 = 2
C_F64 = 3
DESCRIPTOR_SIZE = 16  # code u8, width u8, delta u8, exp u8, count u32, base i64
N_COLUMNS = 3 + 3 + 4 + 7

# decode error codes
E_HEAD = -1
E_KINDS = -2
E_COLUMN = -3
E_BOUNDS = -4
E_TRAILING = -5
ERRORS = {E_HEAD: "bad columnar head", E_KINDS: "kind counts differ from the head",
          E_COLUMN: "bad column descriptor", E_BOUNDS: "column runs past the payload",
          E_TRAILING: "object table does not end the payload"}

_le16 = _be_loader(16, big_endian=False)
_le32 = _be_loader(32, big_endian=False)
_le64 = _be_loader(64, big_endian=False)

# row slot by kind: 0 Trade, 1 Quote, 2 BookLevel, 3 object
_SLOT = np.full(256, 3, dtype=np.int64)
_SLOT[K_TRADE], _SLOT[K_QUOTE], _SLOT[K_BOOK_LEVEL] = 0, 1, 2


# --- encoding ----------------------------------------------------------------------------------


@njit(cache=True)
def _width(lo, hi):
    if lo == 0 and hi == 0:
        return 0
    if lo >= -128 and hi <= 127:
        return 1
    if lo >= -32768 and hi <= 32767:
        return 2
    if lo >= -2147483648 and hi <= 2147483647:
        return 4
    return 8


@njit(cache=True)
def _put_head(out, p, code, w, delta, exp, m, base):
    out[p] = code
    out[p + 1] = w
    out[p + 2] = 1 if delta else 0
    out[p + 3] = exp
    for b in range(4):
        out[p + 4 + b] = (m >> (8 * b)) & 0xFF
    for b in range(8):
        out[p + 8 + b] = (base >> np.uint64(8 * b)) & np.uint64(0xFF)
    return p + DESCRIPTOR_SIZE


@njit(cache=True)
def _pad(out, p):
    while p & 7:
        out[p] = 0
        p += 1
    return p


@njit(cache=True)
def _put_ints(out, p, v, code, exp):
    """Write int column `v` at out[p] (descriptor, values, zero padding to 8): offsets from the
    first value or deltas, whichever is narrower; returns the next position."""
    m = v.shape[0]
    base = np.uint64(v[0]) if m else np.uint64(0)
    lo1 = hi1 = lo2 = hi2 = np.int64(0)
    prev = base
    for i in range(m):
        u = np.uint64(v[i])
        a = np.int64(u - base)
        d = np.int64(u - prev)
        prev = u
        lo1 = min(lo1, a)
        hi1 = max(hi1, a)
        lo2 = min(lo2, d)
        hi2 = max(hi2, d)
    w1 = _width(lo1, hi1)
    w2 = _width(lo2, hi2)
    delta = w2 < w1
    w = w2 if delta else w1
    p = _put_head(out, p, code, w, delta, exp, m, base)
    prev = base
    for i in range(m):
        u = np.uint64(v[i])
        s = u - prev if delta else u - base
        prev = u
        for b in range(w):
            out[p + b] = (s >> np.uint64(8 * b)) & np.uint64(0xFF)
        p += w
    return _pad(out, p)


@njit(cache=True)
def _put_raw_floats(out, p, v, code):
    m = v.shape[0]
    w = 4 if code == C_F32 else 8
    p = _put_head(out, p, code, w, False, 0, m, np.uint64(0))
    if code == C_F32:
        bits32 = v.astype(np.float32).view(np.uint32)
        for i in range(m):
            for b in range(4):
                out[p + b] = (bits32[i] >> np.uint32(8 * b)) & np.uint32(0xFF)
            p += 4
    else:
        bits = v.view(np.uint64)
        for i in range(m):
            for b in range(8):
                out[p + b] = (bits[i] >> np.uint64(8 * b)) & np.uint64(0xFF)
            p += 8
    return _pad(out, p)


@njit(cache=True)
def _put_floats(out, p, v):
    """Write float column `v`: scaled ints when every value is int * 2**-exp (exactly, -0.0
    and NaN excluded), else float32 when that gives back every bit, else float64."""
    m = v.shape[0]
    got = np.empty(m, np.float64)
    vb = v.view(np.uint64)
    gb = got.view(np.uint64)
    exp = 0
    ok = True
    for i in range(m):
        x = v[i]
        if not abs(x) < 4503599627370496.0:  # 2**52; False for NaN
            ok = False
            break
        k = 0
        t = x
        while t != math.floor(t) and k <= 40:
            t *= 2.0
            k += 1
        if k > 40:
            ok = False
            break
        exp = max(exp, k)
    if ok:
        up = math.ldexp(1.0, exp)
        down = math.ldexp(1.0, -exp)
        q = np.empty(m, np.int64)
        for i in range(m):
            t = v[i] * up
            if not abs(t) < 9007199254740992.0:  # 2**53
                ok = False
                break
            q[i] = np.int64(t)
            got[i] = np.float64(q[i]) * down
            if gb[i] != vb[i]:
                ok = False
                break
        if ok:
            return _put_ints(out, p, q, C_SCALED, exp)
    ok = True
    for i in range(m):
        got[i] = np.float64(np.float32(v[i]))
        if gb[i] != vb[i]:
            ok = False
            break
    return _put_raw_floats(out, p, v, C_F32 if ok else C_F64)


@njit(cache=True)
def _mp_array_head(out, p, n):
    """A msgpack array header for n elements at out[p]; the next position."""
    if n < 16:
        out[p] = 0x90 | n
        return p + 1
    if n < 65536:
        out[p] = 0xDC
        out[p + 1] = n >> 8
        out[p + 2] = n & 0xFF
        return p + 3
    out[p] = 0xDD
    for b in range(4):
        out[p + 1 + b] = (n >> (8 * (3 - b))) & 0xFF
    return p + 5


@njit(cache=True)
def _put_u32(out, at, x):
    for b in range(4):
        out[at + b] = (x >> (8 * b)) & 0xFF


@njit(cache=True)
def encode_columns(out, kind, ts_event, ts_recv, instrument, price, size, side, bid, bid_size,
                   ask, ask_size, action, level, orders, flags, src, obj_start, obj_end):
    """The columnar payload of one frame into `out` (large enough); returns its length. The
    object table is the msgpack array of the object rows' bytes src[obj_start:obj_end]."""
    n = kind.shape[0]
    counts = np.zeros(4, np.int64)
    rows = np.empty((4, n), np.int64)
    for r in range(n):
        s = _SLOT[kind[r]]
        rows[s, counts[s]] = r
        counts[s] += 1
    ti, qi, bi = rows[0, :counts[0]], rows[1, :counts[1]], rows[2, :counts[2]]
    no = obj_start.shape[0]
    olen = 0
    for j in range(no):
        olen += obj_end[j] - obj_start[j]
    olen += 1 if no < 16 else (3 if no < 65536 else 5)
    p = HEAD_SIZE
    for r in range(n):
        out[p + r] = kind[r]
    p = _pad(out, p + n)
    p = _put_ints(out, p, ts_recv, C_INT, 0)
    rel = np.empty(n, np.int64)
    for r in range(n):
        rel[r] = np.int64(np.uint64(ts_event[r]) - np.uint64(ts_recv[r]))
    p = _put_ints(out, p, rel, C_INT, 0)
    p = _put_ints(out, p, instrument.astype(np.int64), C_INT, 0)
    p = _put_floats(out, p, price[ti])
    p = _put_floats(out, p, size[ti])
    p = _put_ints(out, p, side[ti].astype(np.int64), C_INT, 0)
    p = _put_floats(out, p, bid[qi])
    p = _put_floats(out, p, bid_size[qi])
    p = _put_floats(out, p, ask[qi])
    p = _put_floats(out, p, ask_size[qi])
    p = _put_ints(out, p, side[bi].astype(np.int64), C_INT, 0)
    p = _put_floats(out, p, price[bi])
    p = _put_floats(out, p, size[bi])
    p = _put_ints(out, p, action[bi].astype(np.int64), C_INT, 0)
    p = _put_ints(out, p, level[bi].astype(np.int64), C_INT, 0)
    p = _put_ints(out, p, orders[bi].astype(np.int64), C_INT, 0)
    p = _put_ints(out, p, flags[bi].astype(np.int64), C_INT, 0)
    p = _mp_array_head(out, p, no)
    for j in range(no):
        a, e = obj_start[j], obj_end[j]
        out[p:p + e - a] = src[a:e]
        p += e - a
    out[0] = MODE_COLUMNS
    out[1:8] = 0
    _put_u32(out, 8, n)
    _put_u32(out, 12, counts[0])
    _put_u32(out, 16, counts[1])
    _put_u32(out, 20, counts[2])
    _put_u32(out, 24, no)
    _put_u32(out, 28, olen)
    return p


# --- decoding ----------------------------------------------------------------------------------


@njit(cache=True)
def _head(buf):
    """(rows, Trade rows, Quote rows, BookLevel rows, object rows, object table bytes);
    rows < 0 is an error."""
    end = buf.shape[0]
    if end < HEAD_SIZE or buf[0] != MODE_COLUMNS:
        return np.int64(E_HEAD), 0, 0, 0, 0, 0
    n = np.int64(_le32(buf, 8))
    nt = np.int64(_le32(buf, 12))
    nq = np.int64(_le32(buf, 16))
    nb = np.int64(_le32(buf, 20))
    no = np.int64(_le32(buf, 24))
    if nt + nq + nb + no != n or HEAD_SIZE + n > end:
        return np.int64(E_HEAD), 0, 0, 0, 0, 0
    return n, nt, nq, nb, no, np.int64(_le32(buf, 28))


@njit(cache=True)
def _desc(buf, p, m, want_int):
    """The descriptor at p, checked: (code, width, delta, exp, base, values at, next column at);
    next < 0 is an error."""
    end = buf.shape[0]
    if p < 0:
        return 0, 0, False, 0, np.uint64(0), 0, p
    if p + DESCRIPTOR_SIZE > end:
        return 0, 0, False, 0, np.uint64(0), 0, np.int64(E_BOUNDS)
    code = np.int64(buf[p])
    w = np.int64(buf[p + 1])
    delta = buf[p + 2] != 0
    exp = np.int64(buf[p + 3])
    base = _le64(buf, p + 8)
    q = p + DESCRIPTOR_SIZE
    bad = np.int64(_le32(buf, p + 4)) != m or code > C_F64 or (code == C_INT) != want_int
    bad = bad or not (w == 0 or w == 1 or w == 2 or w == 4 or w == 8)
    bad = bad or (code == C_F64 and w != 8) or (code == C_F32 and w != 4) or exp > 63
    if bad:
        return 0, 0, False, 0, np.uint64(0), 0, np.int64(E_COLUMN)
    if q + m * w > end:
        return 0, 0, False, 0, np.uint64(0), 0, np.int64(E_BOUNDS)
    return code, w, delta, exp, base, q, (q + m * w + 7) & ~7


@njit(cache=True)
def _ints(buf, q, m, w, delta, base, out):
    """m ints of width w at buf[q] into out[:m] (int64), offsets or deltas from base."""
    if w == 0:
        for i in range(m):
            out[i] = np.int64(base)
        return
    acc = base
    if w == 1:
        for i in range(m):
            s = np.uint64(np.int64(np.int8(buf[q + i])))
            acc = acc + s if delta else base + s
            out[i] = np.int64(acc)
    elif w == 2:
        for i in range(m):
            s = np.uint64(np.int64(np.int16(_le16(buf, q + 2 * i))))
            acc = acc + s if delta else base + s
            out[i] = np.int64(acc)
    elif w == 4:
        for i in range(m):
            s = np.uint64(np.int64(np.int32(_le32(buf, q + 4 * i))))
            acc = acc + s if delta else base + s
            out[i] = np.int64(acc)
    else:
        for i in range(m):
            s = _le64(buf, q + 8 * i)
            acc = acc + s if delta else base + s
            out[i] = np.int64(acc)


@njit(cache=True)
def _int_col(buf, p, m, out, scratch):
    """The int column at p into out[:m] (any int dtype); the next position or an error."""
    code, w, delta, exp, base, q, nxt = _desc(buf, p, m, True)
    if nxt < 0:
        return nxt
    _ints(buf, q, m, w, delta, base, out)
    return nxt


@njit(cache=True)
def _scatter_int(buf, p, rows, row0, col, scratch):
    m = rows.shape[0]
    code, w, delta, exp, base, q, nxt = _desc(buf, p, m, True)
    if nxt < 0:
        return nxt
    _ints(buf, q, m, w, delta, base, scratch)
    for j in range(m):
        col[row0 + rows[j]] = scratch[j]
    return nxt


@njit(cache=True)
def _scatter_float(buf, p, rows, row0, col, scratch, values):
    """The float column at p into col[row0 + rows[j]]; the next position or an error."""
    m = rows.shape[0]
    code, w, delta, exp, base, q, nxt = _desc(buf, p, m, False)
    if nxt < 0:
        return nxt
    if code == C_SCALED:
        _ints(buf, q, m, w, delta, base, scratch)
        down = math.ldexp(1.0, -exp)
        for j in range(m):
            col[row0 + rows[j]] = np.float64(scratch[j]) * down
    elif code == C_F64:
        for j in range(m):
            col[row0 + rows[j]] = _f64_from_bits(_le64(buf, q + 8 * j))
    else:
        for j in range(m):
            col[row0 + rows[j]] = np.float64(_f32_from_bits(_le32(buf, q + 4 * j)))
    return nxt


@njit(cache=True)
def decode_index(buf, count, kind, ts_recv, instrument):
    """kind, ts_recv and instrument of every row; 0 or a negative error."""
    n, nt, nq, nb, no, olen = _head(buf)
    if n < 0:
        return n
    if n != count:
        return E_HEAD
    for r in range(n):
        kind[r] = buf[HEAD_SIZE + r]
    scratch = np.empty(n, np.int64)
    p = (HEAD_SIZE + n + 7) & ~7
    p = _int_col(buf, p, n, ts_recv, scratch)
    code, w, delta, exp, base, q, p = _desc(buf, p, n, True)  # ts_event: skipped
    p = _int_col(buf, p, n, instrument, scratch)
    return min(p, 0)


@njit(cache=True)
def decode_columns(buf, count, row0, first_seq, obj_base, kind, seq, ts_event, ts_recv,
                   instrument, price, size, side, bid, bid_size, ask, ask_size, action, level,
                   orders, flags, obj, work):
    """Fill rows row0..row0+count of the columns (every column written); returns the offset
    of the object table (its length is in the head) or a negative error. `work`: scratch,
    int64 of shape (6, at least count)."""
    n, nt, nq, nb, no, olen = _head(buf)
    if n < 0:
        return n
    if n != count:
        return E_HEAD
    r1 = row0 + n
    if work.shape[0] < 6 or work.shape[1] < n:
        return E_HEAD
    counts = np.zeros(4, np.int64)
    rows = work[:4]
    for i in range(n):
        k = buf[HEAD_SIZE + i]
        kind[row0 + i] = k
        s = _SLOT[k]
        rows[s, counts[s]] = i
        counts[s] += 1
    if counts[0] != nt or counts[1] != nq or counts[2] != nb:
        return E_KINDS
    ti, qi, bi, oi = rows[0, :nt], rows[1, :nq], rows[2, :nb], rows[3, :no]
    nan = np.nan
    for c in (price, size, bid, bid_size, ask, ask_size):
        c[row0:r1] = nan
    side[row0:r1] = 0
    action[row0:r1] = -1
    level[row0:r1] = -1
    orders[row0:r1] = 0
    flags[row0:r1] = 0
    obj[row0:r1] = -1
    for j in range(no):
        obj[row0 + oi[j]] = obj_base + j
    for i in range(n):
        seq[row0 + i] = first_seq + i if first_seq >= 0 else -1
    scratch = work[4]
    values = work[5].view(np.float64)
    p = (HEAD_SIZE + n + 7) & ~7
    p = _int_col(buf, p, n, ts_recv[row0:r1], scratch)
    p = _int_col(buf, p, n, ts_event[row0:r1], scratch)
    if p >= 0:
        for i in range(row0, r1):
            ts_event[i] = np.int64(np.uint64(ts_event[i]) + np.uint64(ts_recv[i]))
    p = _int_col(buf, p, n, instrument[row0:r1], scratch)
    p = _scatter_float(buf, p, ti, row0, price, scratch, values)
    p = _scatter_float(buf, p, ti, row0, size, scratch, values)
    p = _scatter_int(buf, p, ti, row0, side, scratch)
    p = _scatter_float(buf, p, qi, row0, bid, scratch, values)
    p = _scatter_float(buf, p, qi, row0, bid_size, scratch, values)
    p = _scatter_float(buf, p, qi, row0, ask, scratch, values)
    p = _scatter_float(buf, p, qi, row0, ask_size, scratch, values)
    p = _scatter_int(buf, p, bi, row0, side, scratch)
    p = _scatter_float(buf, p, bi, row0, price, scratch, values)
    p = _scatter_float(buf, p, bi, row0, size, scratch, values)
    p = _scatter_int(buf, p, bi, row0, action, scratch)
    p = _scatter_int(buf, p, bi, row0, level, scratch)
    p = _scatter_int(buf, p, bi, row0, orders, scratch)
    p = _scatter_int(buf, p, bi, row0, flags, scratch)
    if p < 0:
        return p
    if p + olen != buf.shape[0]:
        return E_TRAILING
    return p


@njit(cache=True)
def decode_frames(buf, starts, counts, first_seqs, row0, obj_base, obj_at, kind, seq, ts_event,
                  ts_recv, instrument, price, size, side, bid, bid_size, ask, ask_size, action,
                  level, orders, flags, obj):
    """Frames back to back: frame i's payload is buf[starts[i]:starts[i + 1]], its rows follow
    the previous frame's from row0, its object rows number on from obj_base. obj_at[i] gets the
    offset of frame i's object table in buf. Returns the number of frames decoded: fewer than
    all when one does not decode (that one and those after it are left to the caller)."""
    r = row0
    o = obj_base
    work = np.empty((6, max(counts.max(), 1) if counts.shape[0] else 1), np.int64)
    for i in range(counts.shape[0]):
        part = buf[starts[i]:starts[i + 1]]
        at = decode_columns(part, counts[i], r, first_seqs[i], o, kind, seq, ts_event, ts_recv,
                            instrument, price, size, side, bid, bid_size, ask, ask_size, action,
                            level, orders, flags, obj, work)
        if at < 0:
            return i
        obj_at[i] = starts[i] + at
        o += np.int64(_le32(part, 24))
        r += counts[i]
    return counts.shape[0]
