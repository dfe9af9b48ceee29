"""numba kernels behind mia.analytics.flow: trade signing against the NBBO, the day's signed volume
per contract, and the per-underlying flow bars.

Pure functions over numpy arrays (no I/O, clock or logging), no fastmath, no parallel loops: the
rows are folded one by one in log order, so results do not depend on where batches are cut.

Rows are the option rows of a batch, extracted once by mia.analytics.flow (`FlowRows`):
`rk` the row kind (R_*), `cidx` the contract (-1 for an index value or a recording end), `und`
the underlying, `a`/`b` price and size for a trade, bid and ask for a quote, value for an index
value, `flags` (F_*) what the Python side read from the event (sweep or cancel conditions).
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
from numba import njit

from ._orderflow_kernels import bar_bounds

R_TRADE: Final = 0
R_QUOTE: Final = 1
R_INDEX: Final = 2
R_ENDED: Final = 3

F_SWEEP: Final = 1  # the trade carries an intermarket-sweep condition
F_CANCEL: Final = 2  # the trade carries a cancel condition: left out everywhere

# UnusualTrade reasons (bits of the `reason` output)
U_PREMIUM: Final = 1
U_SIZE: Final = 2
U_SWEEP: Final = 4

# contract signing state, c_s[i, S_*] (float64) and c_k[i, K_*] (int64)
S_BID: Final = 0
S_ASK: Final = 1
S_LAST: Final = 2
S_VOL: Final = 3  # the day's signed customer contracts (day signed-volume state only)
S_DELTA: Final = 4
S_GAMMA: Final = 5
S_BAR_C: Final = 6  # bar accumulators (flow state only): signed contracts, premium, delta, gamma
S_BAR_P: Final = 7
S_BAR_D: Final = 8
S_BAR_G: Final = 9
N_S: Final = 10
K_SIGN: Final = 0  # the sign given to the contract's previous trade
K_HAS_LAST: Final = 1
K_UND: Final = 2
K_RIGHT: Final = 3
K_TOUCHED: Final = 4  # traded in the open bar of its underlying
N_K: Final = 5

# underlying state u_i[u, UI_*] / u_f[u, UF_*]
UI_BAR_OPEN: Final = 0
UI_BAR_START: Final = 1
UI_BAR_END: Final = 2
UI_HAS_SESS: Final = 3
UI_SESS_START: Final = 4
UI_SESS_END: Final = 5
UI_TRADES: Final = 6
UI_UNUSUAL: Final = 7
N_UI: Final = 8
UF_SPOT: Final = 0  # the last index value (NaN before one)
UF_CHAIN_SPOT: Final = 1  # the spot of the last chain (NaN before one)
UF_CONTRACTS: Final = 2
UF_PREMIUM: Final = 3
UF_SC: Final = 4
UF_SP: Final = 5
UF_SD: Final = 6
UF_SG: Final = 7
UF_CALL_P: Final = 8
UF_PUT_P: Final = 9
N_UF: Final = 10

# closed bars: out_i[k, O_*], out_f[k, UF_CONTRACTS..UF_PUT_P] (same columns as u_f)
O_TS_EVENT: Final = 0
O_TS_RECV: Final = 1
O_UND: Final = 2
O_BAR_START: Final = 3
O_TRADES: Final = 4
O_UNUSUAL: Final = 5
O_POS: Final = 6  # the closing row (index into the rows)
O_C0: Final = 7  # its contracts: out_c[O_C0 : O_C0 + O_CN]
O_CN: Final = 8
N_O: Final = 9

DONE: Final = 0
NEED_SESSIONS: Final = 1


@njit(cache=True)
def sign_trade(p, c_s, c_k, i):
    """The customer side of a trade at price p of contract i, and the contract's state updated.

    Quote rule against the contract's NBBO (bid and ask finite, 0 <= bid <= ask, ask > 0):
    p >= ask +1, p <= bid -1, above the midpoint +1, below -1; at the midpoint (or with no usable
    NBBO) the tick rule against the contract's previous trade: up +1, down -1, unchanged the
    previous trade's sign; 0 for a first trade with neither.
    """
    bid = c_s[i, S_BID]
    ask = c_s[i, S_ASK]
    s = 0
    if not math.isnan(bid) and not math.isnan(ask) and bid >= 0.0 and ask >= bid and ask > 0.0:
        if p >= ask:
            s = 1
        elif p <= bid:
            s = -1
        else:
            mid = 0.5 * (bid + ask)
            if p > mid:
                s = 1
            elif p < mid:
                s = -1
    if s == 0 and c_k[i, K_HAS_LAST] != 0:
        last = c_s[i, S_LAST]
        if p > last:
            s = 1
        elif p < last:
            s = -1
        else:
            s = c_k[i, K_SIGN]
    c_s[i, S_LAST] = p
    c_k[i, K_SIGN] = s
    c_k[i, K_HAS_LAST] = 1
    return s


@njit(cache=True)
def day_volume_run(rk, cidx, ts, a, b, flags, lo, hi, c_s, c_k, sess, sess_starts):
    """Fold rows [lo, hi): quotes set the NBBO, trades are signed and their signed size added to
    the contract's day volume (S_VOL). `sess` = [has, start, end, trades this session]: a trade
    at or past the session's end zeroes every contract's day volume first.
    Returns (status, row): DONE, or NEED_SESSIONS at a trade outside the session table."""
    for r in range(lo, hi):
        k = rk[r]
        i = cidx[r]
        if i < 0:
            continue
        if k == R_QUOTE:
            c_s[i, S_BID] = a[r]
            c_s[i, S_ASK] = b[r]
            continue
        if k != R_TRADE or (flags[r] & F_CANCEL) != 0:
            continue
        p = a[r]
        q = b[r]
        if not (q > 0.0) or math.isnan(p):
            continue
        t = ts[r]
        if sess[0] == 0 or t >= sess[2]:
            sk = np.searchsorted(sess_starts, t, side="right") - 1
            if sk < 0 or sk + 1 >= sess_starts.shape[0]:
                return NEED_SESSIONS, r
            if sess[0] == 0 or sess_starts[sk] > sess[1]:
                c_s[:, S_VOL] = 0.0
                sess[3] = 0
            sess[0] = 1
            sess[1] = sess_starts[sk]
            sess[2] = sess_starts[sk + 1]
        s = sign_trade(p, c_s, c_k, i)
        c_s[i, S_VOL] += s * q
        sess[3] += 1
    return DONE, hi


@njit(cache=True)
def _close_bar(u, ts_recv, pos, u_i, u_f, c_s, c_k, out_i, out_f, n_out, out_c, out_cf, n_c):
    k = n_out[0]
    out_i[k, O_TS_EVENT] = u_i[u, UI_BAR_END]
    out_i[k, O_TS_RECV] = ts_recv
    out_i[k, O_UND] = u
    out_i[k, O_BAR_START] = u_i[u, UI_BAR_START]
    out_i[k, O_TRADES] = u_i[u, UI_TRADES]
    out_i[k, O_UNUSUAL] = u_i[u, UI_UNUSUAL]
    out_i[k, O_POS] = pos
    out_i[k, O_C0] = n_c[0]
    for j in range(UF_CONTRACTS, N_UF):
        out_f[k, j] = u_f[u, j]
        u_f[u, j] = 0.0
    for i in range(c_k.shape[0]):
        if c_k[i, K_TOUCHED] != 0 and c_k[i, K_UND] == u:
            m = n_c[0]
            out_c[m] = i
            out_cf[m, 0] = c_s[i, S_BAR_C]
            out_cf[m, 1] = c_s[i, S_BAR_P]
            out_cf[m, 2] = c_s[i, S_BAR_D]
            out_cf[m, 3] = c_s[i, S_BAR_G]
            c_s[i, S_BAR_C] = 0.0
            c_s[i, S_BAR_P] = 0.0
            c_s[i, S_BAR_D] = 0.0
            c_s[i, S_BAR_G] = 0.0
            c_k[i, K_TOUCHED] = 0
            n_c[0] = m + 1
    out_i[k, O_CN] = n_c[0] - out_i[k, O_C0]
    u_i[u, UI_BAR_OPEN] = 0
    u_i[u, UI_TRADES] = 0
    u_i[u, UI_UNUSUAL] = 0
    n_out[0] = k + 1


@njit(cache=True)
def flow_run(rk, cidx, und, ts, ts_recv, a, b, flags, lo, hi, c_s, c_k, u_i, u_f, sess_starts,
             interval_ns, multiplier, min_premium, min_size,
             sign_out, reason_out, out_i, out_f, n_out, out_c, out_cf, n_c):
    """Fold rows [lo, hi) into the flow state; closed bars go to out_* (capacity: the caller's).

    Per trade: its customer sign (`sign_trade`) in sign_out[r] and its unusual reasons in
    reason_out[r]. Bars per underlying: [start, end) on trade ts_event, aligned to interval_ns
    since the epoch and clipped to the trade date (as OrderflowBar); a later row of the
    underlying (trade, quote, index value) with ts_event >= end closes the bar with its ts_recv;
    a recording end closes every open bar.
    Returns (status, row): DONE, or NEED_SESSIONS at a trade outside the session table.
    """
    n_und = u_i.shape[0]
    for r in range(lo, hi):
        k = rk[r]
        if k == R_ENDED:
            for u in range(n_und):
                if u_i[u, UI_BAR_OPEN] != 0:
                    _close_bar(u, ts_recv[r], r, u_i, u_f, c_s, c_k, out_i, out_f, n_out,
                               out_c, out_cf, n_c)
            continue
        u = und[r]
        if u < 0:
            continue
        t = ts[r]
        i = cidx[r]
        if k == R_TRADE:
            if (flags[r] & F_CANCEL) != 0 or not (b[r] > 0.0) or math.isnan(a[r]):
                continue
            if u_i[u, UI_HAS_SESS] == 0 or t >= u_i[u, UI_SESS_END]:
                sk = np.searchsorted(sess_starts, t, side="right") - 1
                if sk < 0 or sk + 1 >= sess_starts.shape[0]:
                    return NEED_SESSIONS, r
        # a later row of this underlying past the bar's end closes the bar
        if u_i[u, UI_BAR_OPEN] != 0 and t >= u_i[u, UI_BAR_END]:
            _close_bar(u, ts_recv[r], r, u_i, u_f, c_s, c_k, out_i, out_f, n_out, out_c, out_cf, n_c)
        if k == R_QUOTE:
            c_s[i, S_BID] = a[r]
            c_s[i, S_ASK] = b[r]
            continue
        if k == R_INDEX:
            if a[r] > 0.0:
                u_f[u, UF_SPOT] = a[r]
            continue
        if k != R_TRADE:
            continue
        # --- a trade ---
        if u_i[u, UI_HAS_SESS] == 0 or t >= u_i[u, UI_SESS_END]:
            sk = np.searchsorted(sess_starts, t, side="right") - 1
            u_i[u, UI_HAS_SESS] = 1
            u_i[u, UI_SESS_START] = sess_starts[sk]
            u_i[u, UI_SESS_END] = sess_starts[sk + 1]
        p = a[r]
        q = b[r]
        s = sign_trade(p, c_s, c_k, i)
        sign_out[r] = s
        premium = p * q * multiplier
        reason = 0
        if premium >= min_premium:
            reason |= U_PREMIUM
        if q >= min_size:
            reason |= U_SIZE
        if (flags[r] & F_SWEEP) != 0:
            reason |= U_SWEEP
        reason_out[r] = reason
        if u_i[u, UI_BAR_OPEN] == 0:
            bs, be = bar_bounds(t, interval_ns, u_i[u, UI_SESS_START], u_i[u, UI_SESS_END])
            u_i[u, UI_BAR_OPEN] = 1
            u_i[u, UI_BAR_START] = bs
            u_i[u, UI_BAR_END] = be
        spot = u_f[u, UF_SPOT]
        if math.isnan(spot):
            spot = u_f[u, UF_CHAIN_SPOT]
        sq = s * q
        sp = s * premium
        sd = 0.0
        sg = 0.0
        delta = c_s[i, S_DELTA]
        gamma = c_s[i, S_GAMMA]
        if not math.isnan(delta) and not math.isnan(spot):
            sd = sq * delta * spot * multiplier
        if not math.isnan(gamma) and not math.isnan(spot):
            sg = sq * gamma * spot * spot * 0.01 * multiplier
        u_i[u, UI_TRADES] += 1
        if reason != 0:
            u_i[u, UI_UNUSUAL] += 1
        u_f[u, UF_CONTRACTS] += q
        u_f[u, UF_PREMIUM] += premium
        u_f[u, UF_SC] += sq
        u_f[u, UF_SP] += sp
        u_f[u, UF_SD] += sd
        u_f[u, UF_SG] += sg
        if c_k[i, K_RIGHT] > 0:
            u_f[u, UF_CALL_P] += premium
        else:
            u_f[u, UF_PUT_P] += premium
        c_k[i, K_TOUCHED] = 1
        c_s[i, S_BAR_C] += sq
        c_s[i, S_BAR_P] += sp
        c_s[i, S_BAR_D] += sd
        c_s[i, S_BAR_G] += sg
    return DONE, hi
