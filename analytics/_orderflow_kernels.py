"""numba kernels of the order-flow reducer. All state lives in arrays the wrapper owns.

Per instrument `i`:
- `istate[i, I_*]` (int64) and `fstate[i, F_*]` (float64): scalars (session, bar, totals).
- `levels[i, j, L_*]` (float64): volumes by price; column j is the price index `base + j`
  where price index = round(price / tick) and `base = istate[i, I_BASE]`. One row holds every
  volume of one price so a trade touches one cache line.
The kernel never grows an array: it returns a status and the row to resume from, the wrapper
grows and calls again. Everything a row does happens after every check that could stop it, so
resuming a row never applies it twice.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
from numba import njit

from ..engine.events import K_BOOK_LEVEL, K_INSTRUMENT, K_QUOTE, K_RECORDING_ENDED, K_TRADE
from ._book_kernels import book_apply, book_imbalance

# `book_apply` is inlined into `orderflow_run` (numba IR): numba's cache keys a kernel by its own
# file's contents alone, so a change to _book_kernels.py needs a change to this file's text too
# (last: the book's per-row helpers inlined, 2026-11-29).

# istate columns
I_SEEN: Final = 0  # a trade was seen: tick and base are fixed
I_BASE: Final = 1
I_LAST_SIDE: Final = 2
I_HAS_SESSION: Final = 3
I_SESS_START: Final = 4
I_SESS_END: Final = 5
I_TDATE: Final = 6
I_SESS_LO: Final = 7  # price-index range touched this session
I_SESS_HI: Final = 8
I_TOT_LO: Final = 9
I_TOT_HI: Final = 10
I_TRADES: Final = 11
I_BAR_OPEN: Final = 12
I_BAR_START: Final = 13
I_BAR_END: Final = 14
I_BAR_TRADES: Final = 15
I_BAR_LO: Final = 16
I_BAR_HI: Final = 17
I_BAR_LARGE: Final = 18
I_BAR_TDATE: Final = 19
I_HAS_GROUP: Final = 20
I_GRP_SIDE: Final = 21
I_GRP_TS: Final = 22
I_GRP_COUNTED: Final = 23
N_ISTATE: Final = 24

# fstate columns
F_TICK: Final = 0
F_LAST_PRICE: Final = 1
F_BID: Final = 2
F_ASK: Final = 3
F_SESS_VOL: Final = 4
F_SESS_PV: Final = 5
F_SESS_MEAN: Final = 6
F_SESS_M2: Final = 7
F_SESS_DELTA: Final = 8
F_TOT_VOL: Final = 9
F_TOT_BUY: Final = 10
F_TOT_SELL: Final = 11
F_TOT_PV: Final = 12
F_HIGH: Final = 13
F_LOW: Final = 14
F_BAR_O: Final = 15
F_BAR_H: Final = 16
F_BAR_L: Final = 17
F_BAR_C: Final = 18
F_BAR_VOL: Final = 19
F_BAR_BUY: Final = 20
F_BAR_SELL: Final = 21
F_BAR_LBUY: Final = 22
F_BAR_LSELL: Final = 23
F_GRP_PRICE: Final = 24
F_GRP_SIZE: Final = 25
N_FSTATE: Final = 26

# levels columns
L_SESS_VOL: Final = 0
L_SESS_BID: Final = 1  # sell-aggressor volume (hit the bid)
L_SESS_ASK: Final = 2  # buy-aggressor volume (lifted the ask)
L_TOT_VOL: Final = 3
L_TOT_BID: Final = 4
L_TOT_ASK: Final = 5
L_BAR_VOL: Final = 6
L_BAR_BID: Final = 7
L_BAR_ASK: Final = 8
N_LEVELS: Final = 9

# output columns of a closed bar
O_INST: Final = 0
O_TS_EVENT: Final = 1
O_TS_RECV: Final = 2
O_BAR_START: Final = 3
O_TRADES: Final = 4
O_BID_IMB: Final = 5
O_ASK_IMB: Final = 6
O_STACKED_BID: Final = 7
O_STACKED_ASK: Final = 8
O_LARGE: Final = 9
O_TDATE: Final = 10
N_OUT_I: Final = 11

OF_OPEN: Final = 0
OF_HIGH: Final = 1
OF_LOW: Final = 2
OF_CLOSE: Final = 3
OF_VOLUME: Final = 4
OF_BUY: Final = 5
OF_SELL: Final = 6
OF_DELTA: Final = 7
OF_CUM_DELTA: Final = 8
OF_BAR_POC: Final = 9
OF_POC: Final = 10
OF_VA_LOW: Final = 11
OF_VA_HIGH: Final = 12
OF_VWAP: Final = 13
OF_VWAP_SD: Final = 14
OF_BOOK_IMB: Final = 15
OF_LARGE_BUY: Final = 16
OF_LARGE_SELL: Final = 17
N_OUT_F: Final = 18

# kernel status
DONE: Final = 0
NEED_INSTRUMENTS: Final = 1  # a = instrument id
NEED_OUTPUT: Final = 2
NEED_PRICE_ROOM: Final = 3  # a = instrument id, b = price index
NEED_SESSIONS: Final = 4  # a = ts_event outside the session table

_K_TRADE: Final = K_TRADE
_K_QUOTE: Final = K_QUOTE
_K_BOOK: Final = K_BOOK_LEVEL
_K_INSTRUMENT: Final = K_INSTRUMENT
_K_ENDED: Final = K_RECORDING_ENDED


@njit(cache=True)
def bar_bounds(t, interval_ns, sess_start, sess_end):
    """[start, end) of the bar holding time t: the interval grid, clipped to the session (the
    first bar of a session starts at its start, the last ends at its end). Order flow and option
    flow bars share it."""
    aligned = (t // interval_ns) * interval_ns
    start = aligned
    if start < sess_start and sess_start <= t:
        start = sess_start
    end = aligned + interval_ns
    if end > sess_end:
        end = sess_end
    return start, end


@njit(cache=True)
def poc_value_area(vol, va_frac):
    """POC and value area over one profile (`vol[j]`: volume of row j, rows one tick apart).

    Returns (poc, va_lo, va_hi) as row indices, (-1, -1, -1) for an empty profile.
    POC: the row with most volume; ties go to the row nearest the middle of the profile's
    range, then to the lower price. Value area (CBOT two-row rule): from the POC, compare the
    sum of the next two rows above with the next two below and add the larger pair; a tie adds
    both pairs; a side with no rows left adds nothing; stop once the area holds >= va_frac of
    the volume (so it usually overshoots by part of a pair).
    """
    n = vol.shape[0]
    total = 0.0
    best = -1.0
    poc = -1
    for j in range(n):
        v = vol[j]
        total += v
        if v > best:
            best = v
            poc = j
        elif v == best and abs(2 * j - (n - 1)) < abs(2 * poc - (n - 1)):
            poc = j
    if total <= 0.0:
        return -1, -1, -1
    target = va_frac * total
    acc = vol[poc]
    lo = poc
    hi = poc
    while acc < target:
        up = 0.0
        nu = 0
        for k in range(1, 3):
            if hi + k < n:
                up += vol[hi + k]
                nu += 1
        dn = 0.0
        nd = 0
        for k in range(1, 3):
            if lo - k >= 0:
                dn += vol[lo - k]
                nd += 1
        if nu == 0 and nd == 0:
            break
        if nd == 0 or (nu > 0 and up > dn):
            hi += nu
            acc += up
        elif nu == 0 or dn > up:
            lo -= nd
            acc += dn
        else:
            hi += nu
            lo -= nd
            acc += up + dn
    return poc, lo, hi


@njit(cache=True)
def _close_bar(i, ts_recv, istate, fstate, levels, px, sz, nlev, bstate,
               out_i, out_f, n_out, interval_ns, ratio, min_vol, stacked_min, va_frac, book_n):
    base = istate[i, I_BASE]
    tick = fstate[i, F_TICK]
    blo = istate[i, I_BAR_LO]
    bhi = istate[i, I_BAR_HI]
    # diagonal imbalances: ask volume at p vs bid volume at p - tick, bid at p vs ask at p + tick
    bid_imb = 0
    ask_imb = 0
    run_b = 0
    run_a = 0
    stk_b = 0
    stk_a = 0
    for x in range(blo, bhi + 1):
        j = x - base
        a = levels[i, j, L_BAR_ASK]
        below = levels[i, j - 1, L_BAR_BID] if x > blo else 0.0
        if a > 0.0 and a >= min_vol and a >= ratio * below:
            ask_imb += 1
            run_a += 1
            if run_a == stacked_min:
                stk_a += 1
        else:
            run_a = 0
        b = levels[i, j, L_BAR_BID]
        above = levels[i, j + 1, L_BAR_ASK] if x < bhi else 0.0
        if b > 0.0 and b >= min_vol and b >= ratio * above:
            bid_imb += 1
            run_b += 1
            if run_b == stacked_min:
                stk_b += 1
        else:
            run_b = 0
    bar_poc, _, _ = poc_value_area(levels[i, blo - base : bhi - base + 1, L_BAR_VOL], va_frac)
    slo = istate[i, I_SESS_LO]
    shi = istate[i, I_SESS_HI]
    poc, va_lo, va_hi = poc_value_area(levels[i, slo - base : shi - base + 1, L_SESS_VOL], va_frac)
    k = n_out[0]
    out_i[k, O_INST] = i
    out_i[k, O_TS_EVENT] = istate[i, I_BAR_END]
    out_i[k, O_TS_RECV] = ts_recv
    out_i[k, O_BAR_START] = istate[i, I_BAR_START]
    out_i[k, O_TRADES] = istate[i, I_BAR_TRADES]
    out_i[k, O_BID_IMB] = bid_imb
    out_i[k, O_ASK_IMB] = ask_imb
    out_i[k, O_STACKED_BID] = stk_b
    out_i[k, O_STACKED_ASK] = stk_a
    out_i[k, O_LARGE] = istate[i, I_BAR_LARGE]
    out_i[k, O_TDATE] = istate[i, I_BAR_TDATE]
    out_f[k, OF_OPEN] = fstate[i, F_BAR_O]
    out_f[k, OF_HIGH] = fstate[i, F_BAR_H]
    out_f[k, OF_LOW] = fstate[i, F_BAR_L]
    out_f[k, OF_CLOSE] = fstate[i, F_BAR_C]
    out_f[k, OF_VOLUME] = fstate[i, F_BAR_VOL]
    out_f[k, OF_BUY] = fstate[i, F_BAR_BUY]
    out_f[k, OF_SELL] = fstate[i, F_BAR_SELL]
    out_f[k, OF_DELTA] = fstate[i, F_BAR_BUY] - fstate[i, F_BAR_SELL]
    out_f[k, OF_CUM_DELTA] = fstate[i, F_SESS_DELTA]
    out_f[k, OF_BAR_POC] = (blo + bar_poc) * tick
    out_f[k, OF_POC] = (slo + poc) * tick
    out_f[k, OF_VA_LOW] = (slo + va_lo) * tick
    out_f[k, OF_VA_HIGH] = (slo + va_hi) * tick
    sv = fstate[i, F_SESS_VOL]
    out_f[k, OF_VWAP] = fstate[i, F_SESS_PV] / sv
    out_f[k, OF_VWAP_SD] = math.sqrt(max(fstate[i, F_SESS_M2] / sv, 0.0))
    out_f[k, OF_BOOK_IMB] = book_imbalance(px, sz, nlev, bstate, i, book_n)
    out_f[k, OF_LARGE_BUY] = fstate[i, F_BAR_LBUY]
    out_f[k, OF_LARGE_SELL] = fstate[i, F_BAR_LSELL]
    n_out[0] = k + 1
    for x in range(blo, bhi + 1):
        j = x - base
        levels[i, j, L_BAR_VOL] = 0.0
        levels[i, j, L_BAR_BID] = 0.0
        levels[i, j, L_BAR_ASK] = 0.0
    istate[i, I_BAR_OPEN] = 0


@njit(cache=True)
def orderflow_run(kind, ts_event, ts_recv, instrument, price, size, side, bid, ask, action, flags,
                  row_tick, sess_starts, sess_dates,
                  istate, fstate, levels, px, sz, nlev, bstate, out_i, out_f, n_out,
                  interval_ns, ratio, min_vol, stacked_min, large_min, large_window_ns, book_n,
                  va_frac, start):
    """Fold rows [start, n) into the state; closed bars go to out_i/out_f at n_out[0].

    Returns (status, row, a, b): DONE, or what to grow before calling again from `row`.
    """
    n_inst = istate.shape[0]
    width = levels.shape[1]
    out_cap = out_i.shape[0]
    for r in range(start, kind.shape[0]):
        k = kind[r]
        if k == _K_ENDED:
            if n_out[0] + n_inst > out_cap:
                return NEED_OUTPUT, r, 0, 0
            for i in range(n_inst):
                if istate[i, I_BAR_OPEN] != 0:
                    _close_bar(i, ts_recv[r], istate, fstate, levels, px, sz, nlev, bstate,
                               out_i, out_f, n_out, interval_ns, ratio, min_vol, stacked_min,
                               va_frac, book_n)
            continue
        if k != _K_TRADE and k != _K_QUOTE and k != _K_BOOK and k != _K_INSTRUMENT:
            continue
        i = instrument[r]
        if i < 0:
            continue
        if i >= n_inst:
            return NEED_INSTRUMENTS, r, i, 0
        if n_out[0] >= out_cap:
            return NEED_OUTPUT, r, 0, 0
        t = ts_event[r]
        if k == _K_INSTRUMENT:
            if istate[i, I_SEEN] == 0 and row_tick[r] > 0.0:
                fstate[i, F_TICK] = row_tick[r]
            continue
        p = 0.0
        v = 0.0
        x = 0
        sk = -1
        if k == _K_TRADE:
            p = price[r]
            v = size[r]
            if not (v > 0.0) or math.isnan(p):
                continue
            x = np.int64(math.floor(p / fstate[i, F_TICK] + 0.5))
            if istate[i, I_SEEN] != 0:
                j = x - istate[i, I_BASE]
                if j < 0 or j >= width:
                    return NEED_PRICE_ROOM, r, i, x
            if istate[i, I_HAS_SESSION] == 0 or t >= istate[i, I_SESS_END]:
                sk = np.searchsorted(sess_starts, t, side="right") - 1
                if sk < 0 or sk + 1 >= sess_starts.shape[0]:
                    return NEED_SESSIONS, r, t, 0
        # a later row of this instrument past the bar's end closes the bar
        if istate[i, I_BAR_OPEN] != 0 and t >= istate[i, I_BAR_END]:
            _close_bar(i, ts_recv[r], istate, fstate, levels, px, sz, nlev, bstate,
                       out_i, out_f, n_out, interval_ns, ratio, min_vol, stacked_min,
                       va_frac, book_n)
        if k == _K_QUOTE:
            fstate[i, F_BID] = bid[r]
            fstate[i, F_ASK] = ask[r]
            continue
        if k == _K_BOOK:
            book_apply(px, sz, nlev, bstate, i, side[r], price[r], size[r], action[r], flags[r])
            continue

        # --- a trade -------------------------------------------------------------------------
        if istate[i, I_SEEN] == 0:
            istate[i, I_SEEN] = 1
            istate[i, I_BASE] = x - width // 2
            istate[i, I_TOT_LO] = x
            istate[i, I_TOT_HI] = x
            fstate[i, F_HIGH] = p
            fstate[i, F_LOW] = p
        base = istate[i, I_BASE]
        j = x - base
        if sk >= 0 and (istate[i, I_HAS_SESSION] == 0 or sess_starts[sk] > istate[i, I_SESS_START]):
            # a new CME trade date: reset delta, profile, VWAP
            if istate[i, I_HAS_SESSION] != 0:
                for xx in range(istate[i, I_SESS_LO], istate[i, I_SESS_HI] + 1):
                    levels[i, xx - base, L_SESS_VOL] = 0.0
                    levels[i, xx - base, L_SESS_BID] = 0.0
                    levels[i, xx - base, L_SESS_ASK] = 0.0
            istate[i, I_HAS_SESSION] = 1
            istate[i, I_SESS_START] = sess_starts[sk]
            istate[i, I_SESS_END] = sess_starts[sk + 1]
            istate[i, I_TDATE] = sess_dates[sk]
            istate[i, I_SESS_LO] = x
            istate[i, I_SESS_HI] = x
            fstate[i, F_SESS_VOL] = 0.0
            fstate[i, F_SESS_PV] = 0.0
            fstate[i, F_SESS_MEAN] = 0.0
            fstate[i, F_SESS_M2] = 0.0
            fstate[i, F_SESS_DELTA] = 0.0

        # aggressor: the source's flag, else the quote rule, else the tick rule
        s = side[r]
        if s > 0:
            s = 1
        elif s < 0:
            s = -1
        else:
            qb = fstate[i, F_BID]
            qa = fstate[i, F_ASK]
            if not math.isnan(qb) and not math.isnan(qa):
                if p >= qa:
                    s = 1
                elif p <= qb:
                    s = -1
                else:
                    mid = 0.5 * (qb + qa)
                    if p > mid:
                        s = 1
                    elif p < mid:
                        s = -1
            if s == 0 and istate[i, I_TRADES] > 0:
                lp = fstate[i, F_LAST_PRICE]
                if p > lp:
                    s = 1
                elif p < lp:
                    s = -1
                else:
                    s = istate[i, I_LAST_SIDE]

        # bar
        if istate[i, I_BAR_OPEN] == 0:
            bs, be = bar_bounds(t, interval_ns, istate[i, I_SESS_START], istate[i, I_SESS_END])
            istate[i, I_BAR_OPEN] = 1
            istate[i, I_BAR_START] = bs
            istate[i, I_BAR_END] = be
            istate[i, I_BAR_TRADES] = 0
            istate[i, I_BAR_LO] = x
            istate[i, I_BAR_HI] = x
            istate[i, I_BAR_LARGE] = 0
            istate[i, I_BAR_TDATE] = istate[i, I_TDATE]
            fstate[i, F_BAR_O] = p
            fstate[i, F_BAR_H] = p
            fstate[i, F_BAR_L] = p
            fstate[i, F_BAR_VOL] = 0.0
            fstate[i, F_BAR_BUY] = 0.0
            fstate[i, F_BAR_SELL] = 0.0
            fstate[i, F_BAR_LBUY] = 0.0
            fstate[i, F_BAR_LSELL] = 0.0
        if p > fstate[i, F_BAR_H]:
            fstate[i, F_BAR_H] = p
        if p < fstate[i, F_BAR_L]:
            fstate[i, F_BAR_L] = p
        fstate[i, F_BAR_C] = p
        fstate[i, F_BAR_VOL] += v
        istate[i, I_BAR_TRADES] += 1
        if x < istate[i, I_BAR_LO]:
            istate[i, I_BAR_LO] = x
        if x > istate[i, I_BAR_HI]:
            istate[i, I_BAR_HI] = x
        levels[i, j, L_BAR_VOL] += v
        levels[i, j, L_SESS_VOL] += v
        levels[i, j, L_TOT_VOL] += v
        if s == 1:
            fstate[i, F_BAR_BUY] += v
            fstate[i, F_TOT_BUY] += v
            fstate[i, F_SESS_DELTA] += v
            levels[i, j, L_BAR_ASK] += v
            levels[i, j, L_SESS_ASK] += v
            levels[i, j, L_TOT_ASK] += v
        elif s == -1:
            fstate[i, F_BAR_SELL] += v
            fstate[i, F_TOT_SELL] += v
            fstate[i, F_SESS_DELTA] -= v
            levels[i, j, L_BAR_BID] += v
            levels[i, j, L_SESS_BID] += v
            levels[i, j, L_TOT_BID] += v

        # session VWAP and volume-weighted variance (West's incremental update)
        w = fstate[i, F_SESS_VOL] + v
        d = p - fstate[i, F_SESS_MEAN]
        fstate[i, F_SESS_MEAN] += d * (v / w)
        fstate[i, F_SESS_M2] += v * d * (p - fstate[i, F_SESS_MEAN])
        fstate[i, F_SESS_VOL] = w
        fstate[i, F_SESS_PV] += p * v
        if x < istate[i, I_SESS_LO]:
            istate[i, I_SESS_LO] = x
        if x > istate[i, I_SESS_HI]:
            istate[i, I_SESS_HI] = x

        # totals over everything seen
        fstate[i, F_TOT_VOL] += v
        fstate[i, F_TOT_PV] += p * v
        if p > fstate[i, F_HIGH]:
            fstate[i, F_HIGH] = p
        if p < fstate[i, F_LOW]:
            fstate[i, F_LOW] = p
        if x < istate[i, I_TOT_LO]:
            istate[i, I_TOT_LO] = x
        if x > istate[i, I_TOT_HI]:
            istate[i, I_TOT_HI] = x
        istate[i, I_TRADES] += 1

        # large trades: consecutive fills at one price and side within the window from the
        # group's first fill are one order; counted in the bar where the group reaches the size
        gt = istate[i, I_GRP_TS]
        if (istate[i, I_HAS_GROUP] != 0 and s != 0 and s == istate[i, I_GRP_SIDE]
                and p == fstate[i, F_GRP_PRICE] and t >= gt and t - gt <= large_window_ns):
            fstate[i, F_GRP_SIZE] += v
        else:
            istate[i, I_HAS_GROUP] = 1
            istate[i, I_GRP_SIDE] = s
            istate[i, I_GRP_TS] = t
            istate[i, I_GRP_COUNTED] = 0
            fstate[i, F_GRP_PRICE] = p
            fstate[i, F_GRP_SIZE] = v
        if s != 0:
            add = 0.0
            if istate[i, I_GRP_COUNTED] != 0:
                add = v
            elif fstate[i, F_GRP_SIZE] >= large_min:
                istate[i, I_GRP_COUNTED] = 1
                istate[i, I_BAR_LARGE] += 1
                add = fstate[i, F_GRP_SIZE]
            if s == 1:
                fstate[i, F_BAR_LBUY] += add
            else:
                fstate[i, F_BAR_LSELL] += add

        fstate[i, F_LAST_PRICE] = p
        istate[i, I_LAST_SIDE] = s
    return DONE, kind.shape[0], 0, 0
