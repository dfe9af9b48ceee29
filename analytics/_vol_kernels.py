"""numba kernels behind mia.analytics.volatility: Black-Scholes prices, implied volatility, the
per-expiry smile (forward, ATM IV, 25-delta wings) and the VX curve's figures.

Pure functions over numpy arrays: no I/O, no clock, no logging. No fastmath and no parallel
loops, so every output is the same bits on every run, live or in replay. Conventions are those of
mia.analytics._gamma_kernels (Black-Scholes-Merton with continuous r and q; delta per 1 point).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._gamma_kernels import norm_cdf

IV_LOW = 1e-4  # the inversion's bracket of sigma (annualised decimal)
IV_HIGH = 10.0
IV_MAX_ITER = 100


@njit(cache=True)
def bs_price(spot, strike, t_years, sigma, r, q, right):
    """Black-Scholes-Merton price of a European call (right +1) or put (-1)."""
    if not (spot > 0.0 and strike > 0.0 and t_years > 0.0 and sigma > 0.0):
        return math.nan
    sqrt_t = math.sqrt(t_years)
    vol_t = sigma * sqrt_t
    d1 = (math.log(spot / strike) + (r - q + 0.5 * sigma * sigma) * t_years) / vol_t
    d2 = d1 - vol_t
    disc_q = math.exp(-q * t_years)
    disc_r = math.exp(-r * t_years)
    if right > 0:
        return spot * disc_q * norm_cdf(d1) - strike * disc_r * norm_cdf(d2)
    return strike * disc_r * norm_cdf(-d2) - spot * disc_q * norm_cdf(-d1)


@njit(cache=True)
def bs_delta(spot, strike, t_years, sigma, r, q, right):
    """Black-Scholes-Merton delta (per 1 point of the underlying)."""
    if not (spot > 0.0 and strike > 0.0 and t_years > 0.0 and sigma > 0.0):
        return math.nan
    vol_t = sigma * math.sqrt(t_years)
    d1 = (math.log(spot / strike) + (r - q + 0.5 * sigma * sigma) * t_years) / vol_t
    disc_q = math.exp(-q * t_years)
    if right > 0:
        return disc_q * norm_cdf(d1)
    return -disc_q * norm_cdf(-d1)


@njit(cache=True)
def implied_vol(price, spot, strike, t_years, r, q, right):
    """The sigma whose Black-Scholes-Merton price is `price`; NaN outside the no-arbitrage bounds
    or the bracket [IV_LOW, IV_HIGH].

    Newton steps kept inside a bisection bracket that shrinks on every evaluation: always
    converges, and the same steps (the same bits) on every run.
    """
    if not (price > 0.0 and spot > 0.0 and strike > 0.0 and t_years > 0.0):
        return math.nan
    disc_q = math.exp(-q * t_years)
    disc_r = math.exp(-r * t_years)
    if right > 0:
        lower = max(spot * disc_q - strike * disc_r, 0.0)
        upper = spot * disc_q
    else:
        lower = max(strike * disc_r - spot * disc_q, 0.0)
        upper = strike * disc_r
    if not (lower < price < upper):
        return math.nan
    lo, hi = IV_LOW, IV_HIGH
    if bs_price(spot, strike, t_years, lo, r, q, right) > price:
        return math.nan
    if bs_price(spot, strike, t_years, hi, r, q, right) < price:
        return math.nan
    sqrt_t = math.sqrt(t_years)
    # Brenner-Subrahmanyam start, clamped into the bracket
    sigma = math.sqrt(2.0 * math.pi / t_years) * price / (spot * disc_q)
    if not (lo < sigma < hi):
        sigma = 0.5
    for _ in range(IV_MAX_ITER):
        diff = bs_price(spot, strike, t_years, sigma, r, q, right) - price
        if diff == 0.0:
            return sigma
        if diff > 0.0:
            hi = sigma
        else:
            lo = sigma
        vol_t = sigma * sqrt_t
        d1 = (math.log(spot / strike) + (r - q + 0.5 * sigma * sigma) * t_years) / vol_t
        vega = spot * disc_q * math.exp(-0.5 * d1 * d1) * sqrt_t / math.sqrt(2.0 * math.pi)
        nxt = sigma - diff / vega if vega > 0.0 else math.nan
        if not (lo < nxt < hi):
            nxt = 0.5 * (lo + hi)
        if abs(nxt - sigma) <= 1e-15 * sigma or hi - lo <= 1e-15 * hi:
            return nxt
        sigma = nxt
    return sigma


@njit(cache=True)
def chain_ivs(spot, strike, t_years, iv, bid, ask, right, r, q):
    """Each contract's IV: the source's where finite and positive, else inverted from the mid
    ((bid + ask) / 2, both finite, ask >= bid > 0... a zero bid is kept: the mid is still a price)."""
    n = strike.shape[0]
    out = np.full(n, np.nan)
    for i in range(n):
        s = iv[i]
        if s > 0.0 and math.isfinite(s):
            out[i] = s
            continue
        b, a = bid[i], ask[i]
        if math.isfinite(b) and math.isfinite(a) and a >= b and b >= 0.0 and a > 0.0:
            out[i] = implied_vol(0.5 * (b + a), spot, strike[i], t_years[i], r, q, right[i])
    return out


@njit(cache=True)
def _crossing(x0, y0, x1, y1, target):
    return y0 + (y1 - y0) * (target - x0) / (x1 - x0) if x1 != x0 else y0


@njit(cache=True)
def expiry_smile(spot, t_years, r, q, strikes, call_iv, put_iv, call_mid, put_mid,
                 n_forward, wing_delta, smile_min_delta):
    """One expiry's figures from its strikes (ascending, unique) and per-strike call/put IVs and
    mids (NaN where the chain has none).

    Returns (forward, atm_iv, put_wing_iv, call_wing_iv, smile_iv, keep):
    - forward: mean of K + e^{rT} (C - P) over the `n_forward` strikes nearest spot with both
      mids (ties: the lower strike first); S e^{(r-q)T} when no strike has both;
    - smile_iv[k]: the out-of-the-money side's IV at strike k (puts below the forward, calls at
      or above it), the other side's where that one is missing;
    - atm_iv: the smile interpolated linearly in strike at the forward (NaN outside the strikes);
    - call_wing_iv: call IVs interpolated linearly in call delta at +wing_delta, at the first
      crossing going up in strike; put_wing_iv likewise at -wing_delta going down in strike;
      deltas from each contract's own IV;
    - keep[k]: smile points whose out-of-the-money option has |delta| >= smile_min_delta.
    """
    n = strikes.shape[0]
    # forward: put-call parity at the strikes nearest spot
    both = np.empty(n, dtype=np.int64)
    nb = 0
    for k in range(n):
        if math.isfinite(call_mid[k]) and math.isfinite(put_mid[k]):
            both[nb] = k
            nb += 1
    growth = math.exp(r * t_years)
    forward = spot * math.exp((r - q) * t_years)
    if nb > 0:
        dist = np.empty(nb)
        for j in range(nb):
            dist[j] = abs(strikes[both[j]] - spot)
        order = np.argsort(dist, kind="mergesort")  # stable: ties keep ascending strikes
        m = min(n_forward, nb)
        acc = 0.0
        for j in range(m):
            k = both[order[j]]
            acc += strikes[k] + growth * (call_mid[k] - put_mid[k])
        forward = acc / m
    # smile: the out-of-the-money side
    smile = np.full(n, np.nan)
    for k in range(n):
        first, second = (put_iv[k], call_iv[k]) if strikes[k] < forward else (call_iv[k], put_iv[k])
        smile[k] = first if math.isfinite(first) else second
    # ATM: linear in strike at the forward, between the finite smile points straddling it
    atm = math.nan
    prev = -1
    for k in range(n):
        if not math.isfinite(smile[k]):
            continue
        if strikes[k] == forward:
            atm = smile[k]
            break
        if strikes[k] > forward:
            if prev >= 0:
                atm = _crossing(strikes[prev], smile[prev], strikes[k], smile[k], forward)
            break
        prev = k
    # wings: linear in delta
    call_wing = math.nan
    prev = -1
    prev_d = math.nan
    for k in range(n):
        d = bs_delta(spot, strikes[k], t_years, call_iv[k], r, q, 1)
        if not math.isfinite(d):
            continue
        if d == wing_delta:
            call_wing = call_iv[k]
            break
        if prev >= 0 and prev_d > wing_delta > d:
            call_wing = _crossing(prev_d, call_iv[prev], d, call_iv[k], wing_delta)
            break
        prev, prev_d = k, d
    put_wing = math.nan
    prev = -1
    prev_d = math.nan
    for k in range(n - 1, -1, -1):
        d = bs_delta(spot, strikes[k], t_years, put_iv[k], r, q, -1)
        if not math.isfinite(d):
            continue
        if d == -wing_delta:
            put_wing = put_iv[k]
            break
        if prev >= 0 and prev_d < -wing_delta < d:
            put_wing = _crossing(prev_d, put_iv[prev], d, put_iv[k], -wing_delta)
            break
        prev, prev_d = k, d
    keep = np.zeros(n, dtype=np.bool_)
    for k in range(n):
        if not math.isfinite(smile[k]):
            continue
        right = -1 if strikes[k] < forward else 1
        d = bs_delta(spot, strikes[k], t_years, smile[k], r, q, right)
        keep[k] = abs(d) >= smile_min_delta
    return forward, atm, put_wing, call_wing, smile, keep


@njit(cache=True)
def curve_figures(days, prices, vix, cm_days):
    """(basis, contango, constant-maturity) of a VX curve sorted by days to expiry.

    basis = VX1 - VIX; contango = VX2 / VX1 - 1; constant maturity at `cm_days`: linear in days
    between the two contracts straddling it (the contract itself when one is exactly there);
    NaN when the curve does not reach across it.
    """
    n = days.shape[0]
    basis = prices[0] - vix if n > 0 else math.nan
    contango = prices[1] / prices[0] - 1.0 if n > 1 and prices[0] != 0.0 else math.nan
    cm = math.nan
    for j in range(n):
        if days[j] == cm_days:
            cm = prices[j]
            break
        if days[j] > cm_days:
            if j > 0:
                cm = _crossing(days[j - 1], prices[j - 1], days[j], prices[j], cm_days)
            break
    return basis, contango, cm
