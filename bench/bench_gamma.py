"""Gamma benchmark: the numba gamma profile against a vectorised numpy reference, and the numba
cache (first call with a cold cache vs a warm one, each in a fresh subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from mia.analytics import _gamma_kernels as kern
from mia.analytics._gamma_synth import synthetic_chain
from mia.analytics.gamma import MIN_T_NS, NS_PER_YEAR, GammaConfig, compute_gamma

CONTRACTS = 20_000
POINTS = 400
TARGET_MS = 25.0
TARGET_RATIO = 5.0

_COLD_SCRIPT = """
import json, time
t0 = time.perf_counter()
from mia.analytics.gamma import compute_gamma
from mia.analytics._gamma_synth import synthetic_chain
t1 = time.perf_counter()
chain = synthetic_chain(2000)
t2 = time.perf_counter()
compute_gamma(chain, futures_mid=6030.0)
t3 = time.perf_counter()
compute_gamma(chain, futures_mid=6030.0)
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_s": t3 - t2, "second_s": t4 - t3}))
"""


def numpy_profile(grid, strike, t_years, iv, weight, r=0.0, q=0.0, chunk=50):
    """The textbook vectorised profile: re-price every contract's gamma at every level."""
    ok = (weight != 0) & (iv > 0)
    strike, t_years, iv, weight = strike[ok], t_years[ok], iv[ok], weight[ok]
    vol_t = iv * np.sqrt(t_years)
    drift = (r - q + 0.5 * iv * iv) * t_years
    disc = np.exp(-q * t_years)
    out = np.empty(grid.size)
    for s in range(0, grid.size, chunk):
        L = grid[s:s + chunk, None]
        d1 = (np.log(L / strike) + drift) / vol_t
        gamma = disc * np.exp(-0.5 * d1 * d1) / np.sqrt(2 * np.pi) / (L * vol_t)
        out[s:s + chunk] = (gamma * weight).sum(axis=1) * grid[s:s + chunk] ** 2 * 0.01
    return out


def numpy_profile_tuned(grid, strike, t_years, iv, weight, r=0.0, q=0.0, chunk=50):
    """A hand-tuned numpy profile: ln L - ln K by outer subtraction, exp, then one matrix-vector
    product per chunk (BLAS) for the weighted sum. Same maths, fewer temporaries."""
    ok = (weight != 0) & (iv > 0)
    strike, t_years, iv, weight = strike[ok], t_years[ok], iv[ok], weight[ok]
    vol_t = iv * np.sqrt(t_years)
    inv_vol = 1.0 / vol_t
    shift = ((r - q + 0.5 * iv * iv) * t_years - np.log(strike)) * inv_vol
    coef = np.exp(-q * t_years) * weight * inv_vol / np.sqrt(2 * np.pi)
    log_grid = np.log(grid)
    out = np.empty(grid.size)
    for s in range(0, grid.size, chunk):
        d1 = np.multiply.outer(log_grid[s:s + chunk], inv_vol)
        d1 += shift
        np.square(d1, out=d1)
        d1 *= -0.5
        np.exp(d1, out=d1)
        out[s:s + chunk] = (d1 @ coef) * grid[s:s + chunk] * 0.01
    return out


def _best_ms(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return min(times)


def _cache_run(cache_dir: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    proc = subprocess.run([sys.executable, "-c", _COLD_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool) -> str:
    reps_numba, reps_numpy = (5, 1) if quick else (30, 5)
    chain = synthetic_chain(CONTRACTS, seed=7)
    t_years = np.maximum(chain.expiry_ns - chain.ts_ns, MIN_T_NS) / NS_PER_YEAR
    weight = np.where(chain.right > 0, 1.0, -1.0) * chain.open_interest * chain.multiplier
    grid, log_start, log_step = kern.profile_grid(chain.spot, 0.10, POINTS)

    def numba_profile():
        return kern.gamma_profile(log_start, log_step, POINTS, chain.strike, t_years, chain.iv, weight, 0.0, 0.0)

    _, curve = numba_profile()  # compile / load the cache outside the timing
    ref = numpy_profile(grid, chain.strike, t_years, chain.iv, weight)
    max_err = float(np.max(np.abs(curve - ref)) / np.max(np.abs(ref)))
    numba_ms = _best_ms(numba_profile, reps_numba)
    numpy_ms = _best_ms(lambda: numpy_profile(grid, chain.strike, t_years, chain.iv, weight), reps_numpy)
    tuned = numpy_profile_tuned(grid, chain.strike, t_years, chain.iv, weight)
    tuned_err = float(np.max(np.abs(tuned - ref)) / np.max(np.abs(ref)))
    tuned_ms = _best_ms(lambda: numpy_profile_tuned(grid, chain.strike, t_years, chain.iv, weight), reps_numpy)
    compute_gamma(chain, GammaConfig(), 6030.0)
    full_ms = _best_ms(lambda: compute_gamma(chain, GammaConfig(), 6030.0), max(3, reps_numba // 3))
    ratio = numpy_ms / numba_ms

    with tempfile.TemporaryDirectory(prefix="mia-numba-cache-") as cache_dir:
        cold = _cache_run(cache_dir)
        warm = _cache_run(cache_dir)

    ok_time = "met" if numba_ms <= TARGET_MS else "MISSED"
    ok_ratio = "met" if ratio >= TARGET_RATIO else "MISSED"
    return f"""## Gamma (bench_gamma)

Gamma profile, {CONTRACTS:,} contracts x {POINTS} spot levels (synthetic SPX chain, 0DTE to 1 year,
sticky strike, r = q = 0), best of {reps_numba} (numba) / {reps_numpy} (numpy) runs:

| | ms | vs numpy |
|---|---|---|
| numba `gamma_profile` (log grid, exp recurrence) | {numba_ms:.2f} | {ratio:.1f}x |
| numpy vectorised reference (broadcast d1, exp; chunks of 50 levels) | {numpy_ms:.1f} | 1.0x |
| numpy hand-tuned (outer ln L - ln K, in-place exp, BLAS mat-vec), for context | {tuned_ms:.1f} | {numpy_ms / tuned_ms:.1f}x (numba is {tuned_ms / numba_ms:.1f}x this) |
| whole `compute_gamma` (greeks, GEX by strike/expiry, profile, walls, max pain, pins, skew) | {full_ms:.2f} | |

Max |numba - numpy| / max |profile| = {max_err:.1e} (tuned numpy: {tuned_err:.1e}).
Target: profile <= {TARGET_MS:.0f} ms ({ok_time}) and >= {TARGET_RATIO:.0f}x the vectorised numpy reference ({ok_ratio}).
The numba kernel's speed comes from the log-spaced grid: d1 steps by a constant, so exp(-d1^2/2)
is a multiply-only recurrence (four interleaved lanes, re-anchored by a real exp every 64 levels),
and levels where a contract's |d1| > 37 (below exp(-684) of its peak) are skipped.

Numba cache (`@njit(cache=True)`), each a fresh interpreter with `NUMBA_CACHE_DIR` at a new
temporary directory, then again with the same directory; `compute_gamma` on a 2,000-contract chain:

| | import s | first call s | second call s |
|---|---|---|---|
| cold cache (compiles) | {cold['import_s']:.2f} | {cold['first_s']:.2f} | {cold['second_s']:.4f} |
| warm cache (loads) | {warm['import_s']:.2f} | {warm['first_s']:.2f} | {warm['second_s']:.4f} |

A warm cache makes the first call {cold['first_s'] / max(warm['first_s'], 1e-9):.0f}x faster than a cold one.
"""


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
