"""numba kernels behind mia.analytics.gamma: Black-Scholes greeks, the gamma profile, group sums.

Pure functions over numpy arrays: no I/O, no clock, no logging. No fastmath and no parallel
loops, so every output is the same bits on every run, live or in replay.

Units (the Black-Scholes convention Polygon and py_vollib use):
- gamma: change of delta per 1 point of the underlying;
- vega: change of price per 1 vol point (0.01 of sigma);
- vanna: d delta / d sigma, sigma as a decimal (so per 1 vol point is vanna * 0.01);
- charm: change of delta per calendar day as time passes (-d delta / d T / 365).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
SQRT1_2 = 1.0 / math.sqrt(2.0)
# Beyond |d1| = 37 a contract's gamma is under exp(-684) of its peak: nothing a float64 sum keeps.
D1_SKIP = 37.0
ANCHOR = 64  # profile levels between exact exp() re-anchors of the recurrence (a multiple of 4)
MAX_RECURRENCE_STEP = 4.0  # d1 step per level above which the recurrence could overflow


@njit(cache=True)
def norm_cdf(x: float) -> float:
    # erfc keeps full relative precision in the lower tail, where 1 + erf(x) would cancel.
    return 0.5 * math.erfc(-x * SQRT1_2)


@njit(cache=True)
def bs_greeks(spot, strike, t_years, sigma, r, q, right):
    """(delta, gamma, vega per vol point, vanna, charm per day) of one European option.

    `right` is +1 for a call, -1 for a put. NaN everywhere when an input is unusable.
    """
    if not (spot > 0.0 and strike > 0.0 and t_years > 0.0 and sigma > 0.0):
        return math.nan, math.nan, math.nan, math.nan, math.nan
    sqrt_t = math.sqrt(t_years)
    vol_t = sigma * sqrt_t
    d1 = (math.log(spot / strike) + (r - q + 0.5 * sigma * sigma) * t_years) / vol_t
    d2 = d1 - vol_t
    disc_q = math.exp(-q * t_years)
    pdf_d1 = INV_SQRT_2PI * math.exp(-0.5 * d1 * d1)
    gamma = disc_q * pdf_d1 / (spot * vol_t)
    vega = spot * disc_q * pdf_d1 * sqrt_t * 0.01
    vanna = -disc_q * pdf_d1 * d2 / sigma
    common = disc_q * pdf_d1 * (2.0 * (r - q) * t_years - d2 * vol_t) / (2.0 * t_years * vol_t)
    if right > 0:
        delta = disc_q * norm_cdf(d1)
        charm = q * disc_q * norm_cdf(d1) - common
    else:
        delta = -disc_q * norm_cdf(-d1)
        charm = -q * disc_q * norm_cdf(-d1) - common
    return delta, gamma, vega, vanna, charm / 365.0


@njit(cache=True)
def chain_greeks(spot, strike, t_years, iv, right, r, q):
    """Greeks of every contract at one spot; rows with no usable IV stay NaN."""
    n = strike.shape[0]
    delta = np.full(n, np.nan)
    gamma = np.full(n, np.nan)
    vega = np.full(n, np.nan)
    vanna = np.full(n, np.nan)
    charm = np.full(n, np.nan)
    for i in range(n):
        d, g, v, va, ch = bs_greeks(spot, strike[i], t_years[i], iv[i], r, q, right[i])
        delta[i] = d
        gamma[i] = g
        vega[i] = v
        vanna[i] = va
        charm[i] = ch
    return delta, gamma, vega, vanna, charm


@njit(cache=True)
def profile_grid(spot, half_width, points):
    """`points` spot levels from spot*(1-half_width) to spot*(1+half_width), evenly spaced in ln.

    Log spacing makes d1 an arithmetic progression along the grid, which the profile kernel
    uses; the endpoints are exactly the +/- half_width band.
    """
    log_start = math.log(spot * (1.0 - half_width))
    log_step = (math.log(spot * (1.0 + half_width)) - log_start) / (points - 1) if points > 1 else 0.0
    grid = np.empty(points)
    for j in range(points):
        grid[j] = math.exp(log_start + j * log_step)
    return grid, log_start, log_step


@njit(cache=True)
def gamma_profile(log_start, log_step, points, strike, t_years, iv, weight, r, q):
    """Total GEX ($ per 1% move) at each level L_j = exp(log_start + j*log_step), sticky strike.

    G(L) = sum_i weight_i * gamma_i(L) * L^2 * 0.01, weight = sign * OI * multiplier, gamma
    re-priced at L from each contract's own IV and time to expiry; equal to
    L * 0.01 * sum_i c_i * exp(-d1_i(L)^2 / 2) with d1 linear in ln L. On the log grid d1 steps
    by a constant, so exp(-d1^2/2) follows a multiply-only recurrence, re-anchored with a real exp
    every ANCHOR levels so rounding cannot build up (relative error ~1e-14). Levels where a
    contract's |d1| > D1_SKIP hold less than exp(-684) of its peak and are skipped.
    Contracts are summed in row order at every level: the same bits on every run.
    """
    acc = np.zeros(points)
    for i in range(strike.shape[0]):
        w = weight[i]
        sigma = iv[i]
        t = t_years[i]
        if w == 0.0 or not (sigma > 0.0 and t > 0.0 and strike[i] > 0.0) or not math.isfinite(w):
            continue
        vol_t = sigma * math.sqrt(t)
        a = 1.0 / vol_t
        b = ((r - q + 0.5 * sigma * sigma) * t - math.log(strike[i])) * a
        c = w * math.exp(-q * t) * a * INV_SQRT_2PI
        # d1_j = d0 + j * step
        d0 = a * log_start + b
        step = a * log_step
        if step > 0.0:
            j0 = max(0, int(math.ceil((-D1_SKIP - d0) / step)))
            j1 = min(points, int(math.floor((D1_SKIP - d0) / step)) + 1)
        else:
            j0, j1 = (0, points) if abs(d0) <= D1_SKIP else (0, 0)
        if step > MAX_RECURRENCE_STEP:
            # So steep that only a few levels matter; a direct exp avoids overflow in rho.
            for j in range(j0, j1):
                d1 = d0 + j * step
                acc[j] += c * math.exp(-0.5 * d1 * d1)
            continue
        # Four interleaved recurrences (levels j, j+1, j+2, j+3 stepping by 4) keep the CPU's
        # multipliers busy instead of waiting on one chain of dependent multiplies.
        rho_shrink = math.exp(-step * step)
        lane_ratio = math.exp(-4.0 * step * step)
        lane_shrink = math.exp(-16.0 * step * step)
        for anchor in range(j0, j1, ANCHOR):
            end = min(anchor + ANCHOR, j1)
            d1 = d0 + anchor * step
            e0 = math.exp(-0.5 * d1 * d1)
            rho = math.exp(-d1 * step - 0.5 * step * step)  # e_{j+1} / e_j
            e1 = e0 * rho
            rho *= rho_shrink
            e2 = e1 * rho
            rho *= rho_shrink
            e3 = e2 * rho
            r0 = math.exp(-4.0 * d1 * step - 8.0 * step * step)  # e_{j+4} / e_j
            r1 = r0 * lane_ratio
            r2 = r1 * lane_ratio
            r3 = r2 * lane_ratio
            stop4 = anchor + (end - anchor) // 4 * 4
            for j in range(anchor, stop4, 4):
                acc[j] += c * e0
                acc[j + 1] += c * e1
                acc[j + 2] += c * e2
                acc[j + 3] += c * e3
                e0 *= r0
                e1 *= r1
                e2 *= r2
                e3 *= r3
                r0 *= lane_shrink
                r1 *= lane_shrink
                r2 *= lane_shrink
                r3 *= lane_shrink
            for j in range(stop4, end):
                d1 = d0 + j * step
                acc[j] += c * math.exp(-0.5 * d1 * d1)
    grid = np.empty(points)
    out = np.empty(points)
    for j in range(points):
        grid[j] = math.exp(log_start + j * log_step)
        out[j] = acc[j] * grid[j] * 0.01
    return grid, out


@njit(cache=True)
def zero_crossings(grid, curve):
    """Every level where `curve` changes sign, linearly interpolated between grid points."""
    m = grid.shape[0]
    out = np.empty(m)
    k = 0
    for j in range(m):
        g0 = curve[j]
        if g0 == 0.0:
            out[k] = grid[j]
            k += 1
            continue
        if j + 1 < m:
            g1 = curve[j + 1]
            if g1 != 0.0 and (g0 < 0.0) != (g1 < 0.0):
                lo = grid[j]
                hi = grid[j + 1]
                out[k] = hi - (hi - lo) * g1 / (g1 - g0)
                k += 1
    return out[:k]


@njit(cache=True)
def group_sum(index, values, groups):
    """Sum of `values` per group `index` (0..groups-1) in row order; NaN values count as 0."""
    out = np.zeros(groups)
    for i in range(index.shape[0]):
        v = values[i]
        if v == v:
            out[index[i]] += v
    return out


@njit(cache=True)
def max_pain_curve(candidates, strike, right, oi_mult):
    """Intrinsic value paid to holders if the underlying settles at each candidate price.

    pain(P) = sum_calls OI*M*max(P-K, 0) + sum_puts OI*M*max(K-P, 0).
    """
    out = np.zeros(candidates.shape[0])
    for p in range(candidates.shape[0]):
        price = candidates[p]
        total = 0.0
        for i in range(strike.shape[0]):
            w = oi_mult[i]
            if not (w > 0.0):
                continue
            if right[i] > 0:
                if price > strike[i]:
                    total += w * (price - strike[i])
            elif strike[i] > price:
                total += w * (strike[i] - price)
        out[p] = total
    return out
