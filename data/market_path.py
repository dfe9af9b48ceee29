"""One seeded price path both simulators follow, so SPX (Polygon) moves with ES (DTC).

The path is a per-second random walk with fat-tailed steps for one UTC day, drawn from
(seed, day) and interpolated linearly inside each second: a pure function of (seed, t_ns).

Volatility follows the same path: the VIX index moves inversely with the S&P (VIX_BETA times the
log return of ES since the day's start, plus a small path of its own), and one curve gives both
the VX futures and the option chains' ATM implied volatility: the expected VIX at horizon tau
reverts from today's VIX towards VIX_LONG_RUN at VIX_REVERSION a year, so with VIX below its long
run mean the VX curve is in contango (VX1 > VIX, rising with expiry) and the SPX ATM IV term
structure slopes upward, as on most days.
"""

from __future__ import annotations

import functools
import math

import numpy as np

NS_PER_S = 1_000_000_000
SECONDS_PER_DAY = 86_400

# name: (level at the UTC day's start, typical 1-second move in points)
BASES: dict[str, tuple[float, float]] = {
    "ES": (6000.0, 0.35),
    "NQ": (21500.0, 1.6),
    "VIX": (16.0, 0.003),  # VIX's own noise around the level the S&P implies
}
VIX_BETA = 5.0  # VIX log change per S&P log return, negative: a 1% drop lifts VIX about 5%
VIX_LONG_RUN = 20.0  # the level the VX curve reverts to
VIX_REVERSION = 2.5  # per year
ATM_IV_PER_VIX = 0.9 / 100.0  # 30-day SPX ATM IV as a fraction of VIX (VIX prices the skew too)
YEAR_S = 365.0 * SECONDS_PER_DAY
# index = futures - basis (fair-value premium of the December future)
INDEX_BASIS: dict[str, tuple[str, float]] = {"SPX": ("ES", 28.5), "NDX": ("NQ", 102.0)}


@functools.lru_cache(maxsize=16)
def _day_path(seed: int, root: str, day: int) -> np.ndarray:
    level, step = BASES[root]
    rng = np.random.default_rng([seed, day, sum(map(ord, root))])
    moves = rng.standard_t(df=4, size=SECONDS_PER_DAY + 1) * step / np.sqrt(2.0)
    moves[0] = 0.0
    path = level + np.cumsum(moves)
    if root == "VIX":  # mean-reverting, stays positive
        path = np.clip(path, 9.0, 80.0)
    return path


def _interp(seed: int, root: str, t_ns: int) -> float:
    day, rem = divmod(int(t_ns), SECONDS_PER_DAY * NS_PER_S)
    sec, frac = divmod(rem, NS_PER_S)
    path = _day_path(seed, root, day)
    w = frac / NS_PER_S
    return float(path[sec] * (1.0 - w) + path[sec + 1] * w)


def vix_at(seed: int, t_ns: int) -> float:
    """The VIX index: inverse to the S&P's move since the UTC day's start, with noise of its own."""
    day_start = int(t_ns) - int(t_ns) % (SECONDS_PER_DAY * NS_PER_S)
    ret = math.log(_interp(seed, "ES", t_ns) / _interp(seed, "ES", day_start))
    own = _interp(seed, "VIX", t_ns) / BASES["VIX"][0]
    return min(max(BASES["VIX"][0] * own * math.exp(-VIX_BETA * ret), 9.0), 80.0)


def vix_expected(vix: float, tau_years: float) -> float:
    """The expected VIX `tau_years` ahead: the VX futures price for that expiry."""
    return VIX_LONG_RUN + (vix - VIX_LONG_RUN) * math.exp(-VIX_REVERSION * max(tau_years, 0.0))


def vx_at(seed: int, expiry_ns: int, t_ns: int) -> float:
    """A VX future settling at expiry_ns: the VIX curve at its horizon (contango below the long run)."""
    return vix_expected(vix_at(seed, t_ns), (int(expiry_ns) - int(t_ns)) / NS_PER_S / YEAR_S)


def atm_iv_at(seed: int, t_ns: int, tau_years: np.ndarray) -> np.ndarray:
    """SPX ATM implied volatility for maturities tau_years: the average expected VIX over them."""
    vix = vix_at(seed, t_ns)
    k = VIX_REVERSION * np.maximum(np.asarray(tau_years, dtype=np.float64), 1e-9)
    mean = VIX_LONG_RUN + (vix - VIX_LONG_RUN) * (1.0 - np.exp(-k)) / k
    return ATM_IV_PER_VIX * mean


def price_at(seed: int, root: str, t_ns: int) -> float:
    """The path's level for a futures root (ES, NQ), an index (SPX, NDX) or VIX at t_ns."""
    if root == "VIX":
        return vix_at(seed, t_ns)
    basis = 0.0
    if root in INDEX_BASIS:
        root, basis = INDEX_BASIS[root]
    day, rem = divmod(int(t_ns), SECONDS_PER_DAY * NS_PER_S)
    sec, frac = divmod(rem, NS_PER_S)
    path = _day_path(seed, root, day)
    w = frac / NS_PER_S
    return float(path[sec] * (1.0 - w) + path[sec + 1] * w) - basis
