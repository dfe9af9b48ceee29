"""numba kernels of the data-quality monitor: the per-row arithmetic of a run of market rows in
one pass each, without the numpy temporaries (the monitor's state stays in Python).

Both compute exactly what the numpy expressions they replace computed (integer maxima, sums
and counts; the latency bin from the same `frexp` of the same float64), so the monitor's
figures do not change by a bit.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True)
def market_rows(ts_recv, ts_event, instrument, table, now, sub):
    """Per row of a run of market rows: the event clock (running max of ts_recv from `now`),
    the source index (`table[instrument]`, -1 when unknown), the latency ts_recv - ts_event,
    its histogram bin (0 for <= 0, else e * sub + floor((m - 0.5) * 2 * sub) with
    v = m * 2**e) and whether ts_event is set. Returns them and whether any source is -1."""
    n = ts_recv.shape[0]
    # sub a power of two (the monitor's 64): the bin straight from the float64's bits, the
    # same as frexp's (v >= 1 is normal: m = (1 + mant / 2**52) / 2, e = exponent - 1022, so
    # (m - 0.5) * 2 * sub = mant * sub / 2**52, exact), ~5x faster than a libm frexp call
    shift = -1
    if sub > 0 and (sub & (sub - 1)) == 0:
        shift = 52
        while (np.int64(1) << (52 - shift)) < sub:
            shift -= 1
    fbuf = np.empty(1, np.float64)
    ibuf = fbuf.view(np.int64)
    clock = np.empty(n, np.int64)
    src = np.empty(n, np.int64)
    lat = np.empty(n, np.int64)
    bins = np.empty(n, np.int64)
    valid = np.empty(n, np.bool_)
    cap = table.shape[0]
    c = now
    unknown = False
    for r in range(n):
        t = ts_recv[r]
        if t > c:
            c = t
        clock[r] = c
        i = np.int64(instrument[r])
        s = np.int64(-1)
        if i >= 0 and i < cap:
            s = table[i]
        if s < 0:
            unknown = True
        src[r] = s
        e_ns = ts_event[r]
        v = t - e_ns
        lat[r] = v
        if v <= 0:
            bins[r] = 0
        elif shift >= 0:
            fbuf[0] = np.float64(v)
            u = ibuf[0]
            bins[r] = (((u >> 52) & 0x7FF) - 1022) * sub + ((u & 0xFFFFFFFFFFFFF) >> shift)
        else:
            m, e = math.frexp(np.float64(v))
            bins[r] = np.int64(e) * sub + np.int64((m - 0.5) * (2 * sub))
        valid[r] = e_ns > 0
    return clock, src, lat, bins, valid, unknown


@njit(cache=True)
def count_latency(src, lat, bins, valid, k, hist):
    """Over rows of source `k` (every row: k < 0): (rows, rows with a latency, their latency
    sum, their latency max); their bins counted into `hist`."""
    count = 0
    n = 0
    total = np.int64(0)
    vmax = np.int64(0)
    for r in range(src.shape[0]):
        if k >= 0 and src[r] != k:
            continue
        count += 1
        if not valid[r]:
            continue
        v = lat[r]
        if n == 0 or v > vmax:
            vmax = v
        n += 1
        total += v
        hist[bins[r]] += 1
    return count, n, total, vmax
