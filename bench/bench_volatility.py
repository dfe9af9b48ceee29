"""Volatility benchmark: the IV surface of a chain (Polygon IVs, and every IV inverted from mids)
against vollib's LetsBeRational inversion, and the term-structure reducer's rate over a day's
rows where VIX/VX are a small share of the traffic."""

from __future__ import annotations

import math
import sys

import numpy as np

from bench._timing import best_of
from mia.analytics._gamma_synth import synthetic_chain
from mia.analytics._vol_kernels import bs_price, chain_ivs, implied_vol
from mia.analytics.gamma import MIN_T_NS, NS_PER_YEAR
from mia.analytics.volatility import TermStructureReducer, VolatilityConfig, compute_surface
from mia.data.cfe import vx_expiry
from mia.engine.columns import ColumnBatch
from mia.engine.events import Heartbeat, Instrument, Quote, Trade

CONTRACTS = 20_000
ROWS = 500_000
TARGET_SURFACE_MS = 100.0  # a 20k-contract chain, every IV inverted from its mid


def _ms(fn, reps: int) -> float:
    return best_of(fn, reps) * 1e3


def _chain_with_mids(chain):
    """The chain with bid/ask around its Black-Scholes price and no Polygon IV."""
    t = np.maximum(chain.expiry_ns - chain.ts_ns, MIN_T_NS) / NS_PER_YEAR
    price = np.array([bs_price(chain.spot, k, tt, s, 0.0, 0.0, int(r))
                      for k, tt, s, r in zip(chain.strike, t, chain.iv, chain.right)])
    half = np.maximum(0.0005 * price, 0.0)
    import dataclasses

    return dataclasses.replace(chain, iv=np.full(len(chain), np.nan), bid=price - half, ask=price + half)


def _day_rows(n: int) -> list:
    t0 = 1_795_186_800_000_000_000
    rows: list = [Instrument(t0, t0, 1, "VIX", "dtc", kind="index"), Instrument(t0, t0, 2, "VXZ6", "dtc"),
                  Instrument(t0, t0, 3, "VXF7", "dtc"), Instrument(t0, t0, 4, "ESZ6", "dtc")]
    rng = np.random.default_rng(1)
    inst = rng.choice([1, 2, 3, 4], size=n, p=[0.02, 0.04, 0.04, 0.90])
    step = rng.integers(1, 2_000_000, size=n).cumsum()
    for i in range(n):
        t = t0 + int(step[i])
        k = int(inst[i])
        p = 6000.0 + (i % 40) * 0.25 if k == 4 else 16.0 + (i % 20) * 0.05
        rows.append(Quote(t, t, k, p - 0.05, 5.0, p + 0.05, 5.0) if i % 2 else Trade(t, t, k, p, 1.0, 1))
        if i % 5000 == 0:
            rows.append(Heartbeat(t, t))
    return rows


def run(quick: bool) -> str:
    reps = 2 if quick else 5
    chain = synthetic_chain(CONTRACTS, seed=7)
    priced = _chain_with_mids(chain)
    compute_surface(priced, priced.spot)  # compile / load the cache outside the timing
    iv_ms = _ms(lambda: compute_surface(chain, chain.spot), reps)
    mid_ms = _ms(lambda: compute_surface(priced, priced.spot), reps)
    s = compute_surface(priced, priced.spot)
    # round trip per contract, where the mid holds time value enough to read an IV from
    t_all = np.maximum(priced.expiry_ns - priced.ts_ns, MIN_T_NS) / NS_PER_YEAR
    inverted = chain_ivs(priced.spot, priced.strike, t_all, priced.iv, priced.bid, priced.ask, priced.right,
                         0.0, 0.0)
    mid_all = 0.5 * (priced.bid + priced.ask)
    intrinsic = np.maximum(priced.right * (priced.spot - priced.strike), 0.0)
    readable = (priced.expiry_ns > priced.ts_ns) & (mid_all - intrinsic > 0.01)
    rt_err = float(np.nanmax(np.abs(inverted[readable] - chain.iv[readable])))

    # one IV: numba vs vollib (LetsBeRational), on the same 2,000 contracts
    from vollib.black_scholes_merton.implied_volatility import implied_volatility as lbr

    t = np.maximum(priced.expiry_ns - priced.ts_ns, MIN_T_NS) / NS_PER_YEAR
    sel = np.flatnonzero(readable)[:2000]
    mids = 0.5 * (priced.bid + priced.ask)
    args = [(float(mids[i]), float(priced.spot), float(priced.strike[i]), float(t[i]), int(priced.right[i]))
            for i in sel]

    def ours():
        return [implied_vol(p, s_, k, tt, 0.0, 0.0, r) for p, s_, k, tt, r in args]

    def theirs():
        out = []
        for p, s_, k, tt, r in args:
            try:
                out.append(lbr(p, s_, k, tt, 0.0, 0.0, "c" if r > 0 else "p"))
            except Exception:  # below intrinsic and the like
                out.append(math.nan)
        return out

    ours_ms = _ms(ours, reps)
    theirs_ms = _ms(theirs, max(1, reps // 2))
    diff = np.abs(np.array(ours()) - np.array(theirs()))
    iv_err = float(np.nanmax(diff)) if np.isfinite(diff).any() else math.nan

    rows = _day_rows(ROWS // (5 if quick else 1))
    batches = [ColumnBatch.from_events(rows[i:i + 16_384]) for i in range(0, len(rows), 16_384)]

    def fold_day():
        red = TermStructureReducer(VolatilityConfig(), vx_expiry=vx_expiry)
        return sum(len(red.on_batch(b)) for b in batches)

    emitted = fold_day()
    term_ms = _ms(fold_day, reps)
    ok = "met" if mid_ms <= TARGET_SURFACE_MS else "MISSED"
    return f"""## Volatility (bench_volatility)

IV surface of a synthetic SPX chain, {CONTRACTS:,} contracts, {len(s.expiries)} expiries, best of {reps}:

| | ms |
|---|---|
| `compute_surface`, Polygon IVs (forward, smile, ATM, 25-delta wings, RR, BF) | {iv_ms:.1f} |
| `compute_surface`, every IV inverted from its mid | {mid_ms:.1f} |

IV round trip (inverted from mids priced with the chain's IVs), {int(readable.sum()):,} contracts whose
mid holds at least 0.01 of time value: max error {rt_err:.1e}. (Below that, e.g. deep in the money
minutes from expiry, the price is the intrinsic value to the last bits and no IV can be read.)
Target: a chain inverted from mids <= {TARGET_SURFACE_MS:.0f} ms ({ok}).

One IV at a time, {len(args):,} of those contracts: numba `implied_vol` (bracketed Newton) {ours_ms:.1f} ms,
vollib's LetsBeRational (Python wrapper per call) {theirs_ms:.1f} ms; max difference {iv_err:.1e}.

Term structure: {len(rows):,} rows (VIX 2%, two VX contracts 8%, ES 90%) in batches of 16,384:
{term_ms:.1f} ms ({len(rows) / term_ms * 1e3 / 1e6:.1f} M rows/s), {emitted:,} TermStructure events
(at most one a second of log time).
"""


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
