"""Seeded synthetic option chains for the gamma tests and benchmark (not market data)."""

from __future__ import annotations

import numpy as np

from ..engine.clock import NS_PER_DAY, NS_PER_MIN, NS_PER_S
from ..engine.columns import RIGHT_CALL, RIGHT_PUT, ChainColumns

# 2025-06-16 14:00 UTC (10:00 ET), a Monday.
DEFAULT_TS = 1_750_082_400 * NS_PER_S


def synthetic_chain(
    contracts: int,
    *,
    seed: int = 0,
    spot: float = 6000.0,
    ts_ns: int = DEFAULT_TS,
    underlying: str = "SPX",
    missing_iv_fraction: float = 0.0,
) -> ChainColumns:
    """A chain of about `contracts` rows: calls and puts over a strike ladder and expiries.

    Expiries run from 0DTE (16:00 ET today) out to a year; strikes cluster around spot; IV has
    a put skew; OI and volume are random but heavier near the money. Polygon greeks are left NaN,
    so mia computes them all.
    """
    rng = np.random.default_rng(seed)
    close_today = ts_ns + 6 * 60 * NS_PER_MIN  # 16:00 ET
    day_offsets = np.array([0, 1, 2, 3, 4, 7, 8, 9, 10, 11, 14, 21, 28, 35, 49, 63, 91, 182, 273, 365])
    n_exp = len(day_offsets)
    per_exp = max(2, contracts // n_exp)
    strikes_per_exp = max(1, per_exp // 2)
    strike_rows, expiry_rows, right_rows = [], [], []
    for k, days in enumerate(day_offsets):
        width = spot * (0.04 + 0.5 * np.sqrt(days / 365.0))
        ks = np.round((spot + np.linspace(-width, width, strikes_per_exp)) / 5.0) * 5.0
        ks = np.maximum(ks, 5.0)
        exp_ns = close_today + int(days) * NS_PER_DAY
        if days % 7 == 4 and days >= 4:  # a few AM-settled monthlies at 09:30 ET
            exp_ns -= int(6.5 * 60) * NS_PER_MIN
        for right in (RIGHT_CALL, RIGHT_PUT):
            strike_rows.append(ks)
            expiry_rows.append(np.full(ks.shape, exp_ns, dtype=np.int64))
            right_rows.append(np.full(ks.shape, right, dtype=np.int8))
    strike = np.concatenate(strike_rows).astype(np.float64)
    expiry = np.concatenate(expiry_rows)
    right = np.concatenate(right_rows)
    n = strike.shape[0]
    moneyness = np.log(strike / spot)
    iv = 0.16 - 0.35 * moneyness + 1.2 * moneyness**2 + rng.normal(0.0, 0.005, n)
    iv = np.clip(iv, 0.05, 2.0)
    near = np.exp(-((moneyness / 0.05) ** 2))
    oi = np.round(rng.gamma(1.5, 800.0, n) * (0.2 + near))
    volume = np.round(rng.gamma(1.0, 300.0, n) * (0.1 + near))
    if missing_iv_fraction > 0:
        iv[rng.random(n) < missing_iv_fraction] = np.nan
    nan = np.full(n, np.nan)
    return ChainColumns(
        underlying=underlying,
        ts_ns=int(ts_ns),
        spot=float(spot),
        strike=strike,
        expiry_ns=expiry.astype(np.int64),
        right=right.astype(np.int8),
        open_interest=oi,
        volume=volume,
        iv=iv,
        delta=nan.copy(),
        gamma=nan.copy(),
        theta=nan.copy(),
        vega=nan.copy(),
        bid=nan.copy(),
        ask=nan.copy(),
        multiplier=np.full(n, 100.0),
        am_settled=np.zeros(n, dtype=bool),
    )
