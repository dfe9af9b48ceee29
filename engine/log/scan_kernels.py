"""Frame headers checked in bulk: a numba walk over a chunk of a segment (format.scan_run).

A day of a quiet stream holds hundreds of thousands of small frames (frames close every 100 ms);
reading them one by one costs a few microseconds of Python each, more than their events. This
kernel checks a whole chunk's frames at once with the rules of `format.scan_frames` (magic,
header CRC, field ranges, payload CRC) and stops at the first frame that is not whole and valid:
the caller walks that one frame by frame, so damage is met and reported exactly as before.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..fastdecode import _be_loader

_le32 = _be_loader(32, big_endian=False)
_le64 = _be_loader(64, big_endian=False)

HEADER = 48
MAGIC = 0x4641494D  # b"MIAF" as a little-endian u32
MAX_FRAME_BYTES = 1 << 28


def _crc_tables() -> np.ndarray:
    """zlib's CRC-32 (reflected 0xEDB88320) as slicing-by-8 tables."""
    t = np.zeros((8, 256), np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0xEDB88320 if c & 1 else 0)
        t[0, i] = c
    for i in range(256):
        for k in range(1, 8):
            t[k, i] = (t[k - 1, i] >> 8) ^ t[0, t[k - 1, i] & 0xFF]
    return t


_T = _crc_tables()


@njit(cache=True)
def crc32(buf, a, b, crc):
    """zlib.crc32(buf[a:b], crc)."""
    c = np.uint32(crc) ^ np.uint32(0xFFFFFFFF)
    i = a
    while i + 8 <= b:
        one = c ^ np.uint32(_le32(buf, i))
        two = np.uint32(_le32(buf, i + 4))
        c = np.uint32(_T[7, one & 0xFF] ^ _T[6, (one >> 8) & 0xFF] ^ _T[5, (one >> 16) & 0xFF]
                      ^ _T[4, one >> 24] ^ _T[3, two & 0xFF] ^ _T[2, (two >> 8) & 0xFF]
                      ^ _T[1, (two >> 16) & 0xFF] ^ _T[0, two >> 24])
        i += 8
    while i + 4 <= b:
        c = c ^ np.uint32(_le32(buf, i))
        c = np.uint32(_T[3, c & 0xFF] ^ _T[2, (c >> 8) & 0xFF] ^ _T[1, (c >> 16) & 0xFF]
                      ^ _T[0, c >> 24])
        i += 4
    while i < b:
        c = np.uint32(_T[0, (c ^ buf[i]) & 0xFF] ^ (c >> 8))
        i += 1
    return c ^ np.uint32(0xFFFFFFFF)


@njit(cache=True)
def scan_chunk(buf, offset, count, first_seq, ts_lo, ts_hi, clen, ulen):
    """Whole, valid frames from buf[0], back to back: their fields into the arrays (offset of
    the header in buf); returns how many (the walk stops at the first that is not)."""
    end = buf.shape[0]
    p = 0
    k = 0
    while p + HEADER <= end:
        if np.uint32(_le32(buf, p)) != MAGIC:
            break
        if crc32(buf, p, p + 44, np.uint32(0)) != np.uint32(_le32(buf, p + 44)):
            break
        c = np.int64(_le32(buf, p + 4))
        u = np.int64(_le32(buf, p + 8))
        n = np.int64(_le32(buf, p + 12))
        lo = np.int64(_le64(buf, p + 24))
        hi = np.int64(_le64(buf, p + 32))
        if not (0 < c <= MAX_FRAME_BYTES and 0 < u <= MAX_FRAME_BYTES and 0 < n <= u
                and lo <= hi):
            break
        if p + HEADER + c > end:
            break
        crc = crc32(buf, p + HEADER, p + HEADER + c, crc32(buf, p, p + 40, np.uint32(0)))
        if crc != np.uint32(_le32(buf, p + 40)):
            break
        offset[k] = p
        count[k] = n
        first_seq[k] = np.int64(_le64(buf, p + 16))
        ts_lo[k] = lo
        ts_hi[k] = hi
        clen[k] = c
        ulen[k] = u
        k += 1
        p += HEADER + c
    return k
