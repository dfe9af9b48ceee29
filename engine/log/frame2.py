"""Format-2 frame payloads: per event kind fixed-width little-endian columns (docs/log-format.md).

A payload is a 32-byte head, the kind column (u8 per row), then numeric columns, each a 16-byte
descriptor and its values: ts_recv, ts_event - ts_recv and instrument for every row, then the
Trade, Quote and BookLevel tables (their rows in frame order), then the object table: every
other row's event as msgpack (`EventCodec.encode_many` of them, byte for byte the writer's
encodings). Ints are stored as offsets from a base, or as deltas, in the narrowest signed width
that holds them; floats as scaled ints (value = int * 2**-exp), float32 or float64, whichever is
narrowest AND gives back the very float64 bits. A frame whose market ints do not fit their
columns (the writer never meets one from a source) is stored as a msgpack payload instead
(mode 0), so every frame round-trips exactly.

Encoding runs over the columns the format-1 walker (engine.fastdecode) reads out of the frame's
msgpack encoding; decoding is one numba call per frame that reads the columns and scatters them
into a ColumnBatch, then one msgspec call for the object table. Typed events are built from the
columns (`events_from_batch`).
"""

from __future__ import annotations

import math
import struct
from operator import itemgetter

import numpy as np
from numba import njit

from ..columns import ColumnBatch
from ..events import K_BOOK_LEVEL, K_QUOTE, K_TRADE, BookLevel, Event, Quote, Trade
from ..fastdecode import (
    _be_loader,
    _f32_from_bits,
    _f64_from_bits,
    columns_and_objects,
    empty_batch,
)

MODE_MSGPACK = 0
MODE_COLUMNS = 1
# mode, 7 reserved bytes, rows, Trade rows, Quote rows, BookLevel rows, object rows, object bytes
HEAD = struct.Struct("<B7xIIIIII")
# column codes
C_INT = 0  # int64 = base + offset, or base + running sum of deltas
C_SCALED = 1  # float64 = float64(the int as C_INT) * 2**-exp
C_F32 = 2
C_F64 = 3
DESCRIPTOR_SIZE = 16  # code u8, width u8, delta u8, exp u8, count u32, base i64
N_COLUMNS = 3 + 3 + 4 + 7

_le16 = _be_loader(16, big_endian=False)
_le32 = _be_loader(32, big_endian=False)
_le64 = _be_loader(64, big_endian=False)

# decode error codes
E_HEAD = -1
E_KINDS = -2
E_COLUMN = -3
E_BOUNDS = -4
E_TRAILING = -5
ERRORS = {E_HEAD: "bad columnar head", E_KINDS: "kind counts differ from the head",
          E_COLUMN: "bad column descriptor", E_BOUNDS: "column runs past the payload",
          E_TRAILING: "object table does not end the payload"}


class Frame2Error(ValueError):
    """A format-2 payload that does not decode (the frame CRC passed: a writer bug)."""


# --- encoding ----------------------------------------------------------------------------------


@njit(cache=True)
def _width(lo, hi):
    if lo >= -128 and hi <= 127:
        return 1
    if lo >= -32768 and hi <= 32767:
        return 2
    if lo >= -2147483648 and hi <= 2147483647:
        return 4
    return 8


@njit(cache=True)
def _put_ints(out, p, v, code, exp):
    """Write int column `v` at out[p] (descriptor, values, zero padding to 8); next position."""
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
    out[p] = code
    out[p + 1] = w
    out[p + 2] = 1 if delta else 0
    out[p + 3] = exp
    for b in range(4):
        out[p + 4 + b] = (m >> (8 * b)) & 0xFF
    for b in range(8):
        out[p + 8 + b] = (base >> np.uint64(8 * b)) & np.uint64(0xFF)
    p += DESCRIPTOR_SIZE
    prev = base
    for i in range(m):
        u = np.uint64(v[i])
        s = u - prev if delta else u - base
        prev = u
        for b in range(w):
            out[p + b] = (s >> np.uint64(8 * b)) & np.uint64(0xFF)
        p += w
    while p & 7:
        out[p] = 0
        p += 1
    return p


@njit(cache=True)
def _put_raw_floats(out, p, v, code):
    m = v.shape[0]
    w = 4 if code == C_F32 else 8
    out[p] = code
    out[p + 1] = w
    out[p + 2] = 0
    out[p + 3] = 0
    for b in range(4):
        out[p + 4 + b] = (m >> (8 * b)) & 0xFF
    for b in range(8):
        out[p + 8 + b] = 0
    p += DESCRIPTOR_SIZE
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
    while p & 7:
        out[p] = 0
        p += 1
    return p


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
        while t != math.floor(t):
            t *= 2.0
            k += 1
            if k > 40:
                break
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
def _encode(out, kind, ts_event, ts_recv, instrument, price, size, side, bid, bid_size, ask,
            ask_size, action, level, orders, flags, src, obj_start, obj_end):
    """The columnar payload of one frame into `out`; returns its length."""
    n = kind.shape[0]
    nt = nq = nb = 0
    for r in range(n):
        k = kind[r]
        if k == K_TRADE:
            nt += 1
        elif k == K_QUOTE:
            nq += 1
        elif k == K_BOOK_LEVEL:
            nb += 1
    no = obj_start.shape[0]
    ti = np.empty(nt, np.int64)
    qi = np.empty(nq, np.int64)
    bi = np.empty(nb, np.int64)
    a = b_ = c = 0
    for r in range(n):
        k = kind[r]
        if k == K_TRADE:
            ti[a] = r
            a += 1
        elif k == K_QUOTE:
            qi[b_] = r
            b_ += 1
        elif k == K_BOOK_LEVEL:
            bi[c] = r
            c += 1
    # object table: a msgpack array header, then each object row's own bytes
    olen = 0
    for j in range(no):
        olen += obj_end[j] - obj_start[j]
    olen += 1 if no < 16 else (3 if no < 65536 else 5)
    p = 32
    for r in range(n):
        out[p + r] = kind[r]
    p += n
    while p & 7:
        out[p] = 0
        p += 1
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
    if no < 16:
        out[p] = 0x90 | no
        p += 1
    elif no < 65536:
        out[p] = 0xDC
        out[p + 1] = no >> 8
        out[p + 2] = no & 0xFF
        p += 3
    else:
        out[p] = 0xDD
        for b in range(4):
            out[p + 1 + b] = (no >> (8 * (3 - b))) & 0xFF
        p += 5
    for j in range(no):
        for q in range(obj_start[j], obj_end[j]):
            out[p] = src[q]
            p += 1
    # head
    out[0] = MODE_COLUMNS
    for b in range(1, 8):
        out[b] = 0
    _put_u32(out, 8, n)
    _put_u32(out, 12, nt)
    _put_u32(out, 16, nq)
    _put_u32(out, 20, nb)
    _put_u32(out, 24, no)
    _put_u32(out, 28, olen)
    return p


@njit(cache=True)
def _put_u32(out, at, x):
    for b in range(4):
        out[at + b] = (x >> (8 * b)) & 0xFF


def encode(msgpack_payload: bytes, count: int) -> bytes:
    """The format-2 payload of a frame from its format-1 payload (the msgpack array of its
    events); a mode-0 payload (that msgpack, behind one byte) when columns cannot hold it."""
    from ..fastdecode import FastDecodeError

    try:
        b, obj_start, obj_end = columns_and_objects(msgpack_payload, count)
    except FastDecodeError:
        return bytes((MODE_MSGPACK,)) + msgpack_payload
    src = np.frombuffer(msgpack_payload, np.uint8)
    out = np.empty(256 + DESCRIPTOR_SIZE * N_COLUMNS + count * 90 + len(msgpack_payload),
                   np.uint8)
    n = _encode(out, b.kind, b.ts_event, b.ts_recv, b.instrument, b.price, b.size, b.side,
                b.bid, b.bid_size, b.ask, b.ask_size, b.action, b.level, b.orders, b.flags, src,
                obj_start, obj_end)
    return out[:n].tobytes()


# --- decoding ----------------------------------------------------------------------------------


@njit(cache=True)
def _get(buf, p, end, m, out_i, out_f):
    """Read the column at buf[p] (`m` values) into out_i (C_INT) or out_f (float codes);
    returns the next position or a negative error."""
    if p + DESCRIPTOR_SIZE > end:
        return E_BOUNDS
    code = buf[p]
    w = np.int64(buf[p + 1])
    delta = buf[p + 2]
    exp = np.int64(buf[p + 3])
    if np.int64(_le32(buf, p + 4)) != m:
        return E_COLUMN
    base = _le64(buf, p + 8)
    p += DESCRIPTOR_SIZE
    if not (w == 1 or w == 2 or w == 4 or w == 8) or code > C_F64:
        return E_COLUMN
    if p + m * w > end:
        return E_BOUNDS
    if (out_i.shape[0] if code == C_INT else out_f.shape[0]) < m:
        return E_COLUMN
    if code == C_F64:
        if w != 8:
            return E_COLUMN
        for i in range(m):
            out_f[i] = _f64_from_bits(_le64(buf, p + 8 * i))
    elif code == C_F32:
        if w != 4:
            return E_COLUMN
        for i in range(m):
            out_f[i] = np.float64(_f32_from_bits(_le32(buf, p + 4 * i)))
    else:
        acc = base
        down = math.ldexp(1.0, -exp)
        for i in range(m):
            if w == 1:
                s = np.uint64(np.int64(np.int8(buf[p + i])))
            elif w == 2:
                s = np.uint64(np.int64(np.int16(_le16(buf, p + 2 * i))))
            elif w == 4:
                s = np.uint64(np.int64(np.int32(_le32(buf, p + 4 * i))))
            else:
                s = _le64(buf, p + 8 * i)
            if delta:
                acc += s
                v = np.int64(acc)
            else:
                v = np.int64(base + s)
            if code == C_INT:
                out_i[i] = v
            else:
                out_f[i] = np.float64(v) * down
    p += m * w
    return (p + 7) & ~7


@njit(cache=True)
def _head(buf):
    end = buf.shape[0]
    if end < 32 or buf[0] != MODE_COLUMNS:
        return np.int64(E_HEAD), 0, 0, 0, 0, 0
    n = np.int64(_le32(buf, 8))
    nt = np.int64(_le32(buf, 12))
    nq = np.int64(_le32(buf, 16))
    nb = np.int64(_le32(buf, 20))
    no = np.int64(_le32(buf, 24))
    if nt + nq + nb + no != n or 32 + n > end:
        return np.int64(E_HEAD), 0, 0, 0, 0, 0
    return n, nt, nq, nb, no, np.int64(_le32(buf, 28))


@njit(cache=True)
def _index(buf, count, kind, ts_recv, instrument):
    """kind, ts_recv and instrument of every row; 0 or a negative error."""
    end = buf.shape[0]
    n, nt, nq, nb, no, olen = _head(buf)
    if n < 0:
        return n
    if n != count:
        return E_HEAD
    for r in range(n):
        kind[r] = buf[32 + r]
    p = (32 + n + 7) & ~7
    none = np.empty(0, np.float64)
    p = _get(buf, p, end, n, ts_recv, none)
    if p < 0:
        return p
    rel = np.empty(n, np.int64)
    p = _get(buf, p, end, n, rel, none)
    if p < 0:
        return p
    inst = np.empty(n, np.int64)
    p = _get(buf, p, end, n, inst, none)
    if p < 0:
        return p
    for r in range(n):
        instrument[r] = inst[r]
    return 0


@njit(cache=True)
def _decode(buf, count, row0, first_seq, obj_base, kind, seq, ts_event, ts_recv, instrument,
            price, size, side, bid, bid_size, ask, ask_size, action, level, orders, flags, obj):
    """Fill rows row0..row0+count of the columns (every column written); returns the offset
    of the object table (its length is in the head) or a negative error."""
    end = buf.shape[0]
    n, nt, nq, nb, no, olen = _head(buf)
    if n < 0:
        return n
    if n != count:
        return E_HEAD
    ct = cq = cb = 0
    for r in range(n):
        k = buf[32 + r]
        if k == K_TRADE:
            ct += 1
        elif k == K_QUOTE:
            cq += 1
        elif k == K_BOOK_LEVEL:
            cb += 1
    if ct != nt or cq != nq or cb != nb:
        return E_KINDS
    p = (32 + n + 7) & ~7
    none_f = np.empty(0, np.float64)
    none_i = np.empty(0, np.int64)
    recv = np.empty(n, np.int64)
    rel = np.empty(n, np.int64)
    inst = np.empty(n, np.int64)
    t_px = np.empty(nt, np.float64)
    t_sz = np.empty(nt, np.float64)
    t_sd = np.empty(nt, np.int64)
    q_bid = np.empty(nq, np.float64)
    q_bsz = np.empty(nq, np.float64)
    q_ask = np.empty(nq, np.float64)
    q_asz = np.empty(nq, np.float64)
    b_sd = np.empty(nb, np.int64)
    b_px = np.empty(nb, np.float64)
    b_sz = np.empty(nb, np.float64)
    b_ac = np.empty(nb, np.int64)
    b_lv = np.empty(nb, np.int64)
    b_or = np.empty(nb, np.int64)
    b_fl = np.empty(nb, np.int64)
    p = _get(buf, p, end, n, recv, none_f)
    if p >= 0:
        p = _get(buf, p, end, n, rel, none_f)
    if p >= 0:
        p = _get(buf, p, end, n, inst, none_f)
    if p >= 0:
        p = _get(buf, p, end, nt, none_i, t_px)
    if p >= 0:
        p = _get(buf, p, end, nt, none_i, t_sz)
    if p >= 0:
        p = _get(buf, p, end, nt, t_sd, none_f)
    if p >= 0:
        p = _get(buf, p, end, nq, none_i, q_bid)
    if p >= 0:
        p = _get(buf, p, end, nq, none_i, q_bsz)
    if p >= 0:
        p = _get(buf, p, end, nq, none_i, q_ask)
    if p >= 0:
        p = _get(buf, p, end, nq, none_i, q_asz)
    if p >= 0:
        p = _get(buf, p, end, nb, b_sd, none_f)
    if p >= 0:
        p = _get(buf, p, end, nb, none_i, b_px)
    if p >= 0:
        p = _get(buf, p, end, nb, none_i, b_sz)
    if p >= 0:
        p = _get(buf, p, end, nb, b_ac, none_f)
    if p >= 0:
        p = _get(buf, p, end, nb, b_lv, none_f)
    if p >= 0:
        p = _get(buf, p, end, nb, b_or, none_f)
    if p >= 0:
        p = _get(buf, p, end, nb, b_fl, none_f)
    if p < 0:
        return p
    if p + olen != end:
        return E_TRAILING
    nan = np.nan
    a = b = c = o = 0
    for i in range(n):
        r = row0 + i
        k = buf[32 + i]
        kind[r] = k
        seq[r] = first_seq + i if first_seq >= 0 else -1
        tr = recv[i]
        ts_recv[r] = tr
        ts_event[r] = np.int64(np.uint64(tr) + np.uint64(rel[i]))
        instrument[r] = inst[i]
        if k == K_TRADE:
            price[r] = t_px[a]
            size[r] = t_sz[a]
            side[r] = t_sd[a]
            bid[r] = nan
            bid_size[r] = nan
            ask[r] = nan
            ask_size[r] = nan
            action[r] = -1
            level[r] = -1
            orders[r] = 0
            flags[r] = 0
            obj[r] = -1
            a += 1
        elif k == K_QUOTE:
            price[r] = nan
            size[r] = nan
            side[r] = 0
            bid[r] = q_bid[b]
            bid_size[r] = q_bsz[b]
            ask[r] = q_ask[b]
            ask_size[r] = q_asz[b]
            action[r] = -1
            level[r] = -1
            orders[r] = 0
            flags[r] = 0
            obj[r] = -1
            b += 1
        elif k == K_BOOK_LEVEL:
            price[r] = b_px[c]
            size[r] = b_sz[c]
            side[r] = b_sd[c]
            bid[r] = nan
            bid_size[r] = nan
            ask[r] = nan
            ask_size[r] = nan
            action[r] = b_ac[c]
            level[r] = b_lv[c]
            orders[r] = b_or[c]
            flags[r] = b_fl[c]
            obj[r] = -1
            c += 1
        else:
            price[r] = nan
            size[r] = nan
            side[r] = 0
            bid[r] = nan
            bid_size[r] = nan
            ask[r] = nan
            ask_size[r] = nan
            action[r] = -1
            level[r] = -1
            orders[r] = 0
            flags[r] = 0
            obj[r] = obj_base + o
            o += 1
    return p


def decode_into(batch: ColumnBatch, offset: int, data: bytes, count: int, first_seq: int,
                decode_objects) -> None:
    """Decode a mode-1 payload into rows offset..offset+count of `batch` (every column written,
    objects appended through `decode_objects(bytes-like) -> list`). Frame2Error when it does
    not decode; then the rows hold garbage and `batch.objects` is unchanged."""
    if offset < 0 or offset + count > len(batch):
        raise ValueError(f"rows {offset}..{offset + count} do not fit a batch of {len(batch)}")
    buf = np.frombuffer(data, np.uint8)
    b = batch
    at = _decode(buf, count, offset, first_seq, len(b.objects), b.kind, b.seq, b.ts_event,
                 b.ts_recv, b.instrument, b.price, b.size, b.side, b.bid, b.bid_size, b.ask,
                 b.ask_size, b.action, b.level, b.orders, b.flags, b.obj)
    if at < 0:
        raise Frame2Error(ERRORS.get(at, f"error {at}"))
    n_obj = HEAD.unpack_from(data)[5]
    if n_obj:
        objects = decode_objects(memoryview(data)[at:])
        if len(objects) != n_obj:
            raise Frame2Error(f"{len(objects)} objects, head says {n_obj}")
        b.objects.extend(objects)


def decode(data: bytes, count: int, first_seq: int, decode_objects) -> ColumnBatch:
    batch = empty_batch(count)
    decode_into(batch, 0, data, count, first_seq, decode_objects)
    return batch


def index(data: bytes, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kind, ts_recv, instrument) of a mode-1 payload's rows, without the other columns."""
    kind = np.empty(count, np.uint8)
    ts_recv = np.empty(count, np.int64)
    instrument = np.empty(count, np.int32)
    rc = _index(np.frombuffer(data, np.uint8), count, kind, ts_recv, instrument)
    if rc < 0:
        raise Frame2Error(ERRORS.get(rc, f"error {rc}"))
    return kind, ts_recv, instrument


def events_from_batch(b: ColumnBatch) -> list[Event]:
    """The typed events of a decoded batch, in row order: market rows built from the columns
    (one C-level `map` per kind), the others are its objects."""
    n = len(b)
    kind = b.kind
    ts_event, ts_recv, inst = b.ts_event, b.ts_recv, b.instrument
    parts: list[list] = []
    where: list[np.ndarray] = []
    for k in (K_TRADE, K_QUOTE, K_BOOK_LEVEL):
        idx = np.flatnonzero(kind == k)
        if not len(idx):
            continue
        head = (ts_event[idx].tolist(), ts_recv[idx].tolist(), inst[idx].tolist())
        if k == K_TRADE:
            cols = (b.price[idx].tolist(), b.size[idx].tolist(), b.side[idx].tolist())
            parts.append(list(map(Trade, *head, *cols)))
        elif k == K_QUOTE:
            cols = (b.bid[idx].tolist(), b.bid_size[idx].tolist(), b.ask[idx].tolist(),
                    b.ask_size[idx].tolist())
            parts.append(list(map(Quote, *head, *cols)))
        else:
            cols = (b.side[idx].tolist(), b.price[idx].tolist(), b.size[idx].tolist(),
                    b.action[idx].tolist(), b.level[idx].tolist(), b.orders[idx].tolist(),
                    b.flags[idx].tolist())
            parts.append(list(map(BookLevel, *head, *cols)))
        where.append(idx)
        if len(idx) == n:
            return parts[0]
    obj_rows = np.flatnonzero(b.obj >= 0)
    if len(obj_rows):
        parts.append(itemgetter(*b.obj[obj_rows].tolist())(b.objects) if len(obj_rows) > 1
                     else [b.objects[int(b.obj[obj_rows[0]])]])
        where.append(obj_rows)
    if len(parts) == 1:
        return list(parts[0])
    flat = [ev for part in parts for ev in part]
    order = np.empty(n, np.int64)
    order[np.concatenate(where)] = np.arange(n)
    return list(itemgetter(*order.tolist())(flat))


def warm_up() -> None:
    """Compile (or load from the numba cache) the encoder and decoder now."""
    from ..events import EventCodec, RecordingEnded

    codec = EventCodec()
    events = [Trade(1, 2, 1, 1.5, 2.0, 1), Quote(1, 2, 1, 1.0, 2.0, 3.0, 4.0),
              BookLevel(1, 2, 1, 1, 1.0, 2.0, 1, 0, 1, 0), RecordingEnded(1, 2, "r", "x")]
    data = encode(codec.encode_many(events), len(events))
    decode(data, len(events), 0, codec.decode_many)
    index(data, len(events))
