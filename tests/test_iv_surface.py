"""IvSurface against values computed independently with vollib (py_vollib's canonical package):
a chain priced from known IVs gives back its forward, ATM IV, 25-delta wings, RR and BF; IVs
inverted from mids round-trip; the reducer re-emits a stale surface on a fallback."""

from __future__ import annotations

import math

import numpy as np
import pytest
from vollib.black_scholes_merton import black_scholes_merton as bsm_price
from vollib.black_scholes_merton.greeks.analytical import delta as bsm_delta

from mia.analytics._vol_kernels import implied_vol
from mia.analytics.volatility import IvSurfaceReducer, VolatilityConfig, compute_surface
from mia.engine.columns import RIGHT_CALL, RIGHT_PUT, ChainColumns, ColumnBatch
from mia.engine.events import FALLBACK_PREVIOUS, IvSurface, PolygonResponse, SourceError

NS_PER_DAY = 86_400 * 10**9
NS_PER_YEAR = 365 * NS_PER_DAY
TS = 1_750_082_400 * 10**9  # 2025-06-16 14:00 UTC
SPOT, R, Q = 5000.0, 0.03, 0.01
DAYS = (9.5, 44.25)  # two expiries, fractional days from TS
STRIKES = np.arange(4000.0, 6000.0 + 1, 25.0)


def smile(k: float, fwd: float, t: float) -> float:
    """The known IV: a skewed, convex smile in log-moneyness, steeper for the shorter expiry."""
    x = math.log(k / fwd) / math.sqrt(t)
    return 0.18 - 0.10 * x + 0.12 * x * x


def build_chain(*, with_iv: bool) -> ChainColumns:
    strike, expiry, right, iv, bid, ask = [], [], [], [], [], []
    for days in DAYS:
        t = days * NS_PER_DAY / NS_PER_YEAR
        fwd = SPOT * math.exp((R - Q) * t)
        for k in STRIKES:
            sigma = smile(k, fwd, t)
            for flag, rgt in (("c", RIGHT_CALL), ("p", RIGHT_PUT)):
                price = bsm_price(flag, SPOT, k, t, R, sigma, Q)
                strike.append(k)
                expiry.append(TS + int(days * NS_PER_DAY))
                right.append(rgt)
                iv.append(sigma if with_iv else math.nan)
                bid.append(price - 0.05 if price > 0.1 else 0.0)  # mid == price
                ask.append(price + 0.05 if price > 0.1 else 2 * price)
    n = len(strike)
    nan = np.full(n, np.nan)
    return ChainColumns(
        underlying="SPX", ts_ns=TS, spot=SPOT, strike=np.array(strike), expiry_ns=np.array(expiry, np.int64),
        right=np.array(right, np.int8), open_interest=np.ones(n), volume=np.ones(n), iv=np.array(iv),
        delta=nan.copy(), gamma=nan.copy(), theta=nan.copy(), vega=nan.copy(), bid=np.array(bid),
        ask=np.array(ask), multiplier=np.full(n, 100.0), am_settled=np.zeros(n, bool), snapshot_id=7)


def expected(days: float) -> dict:
    """The figures of one expiry, computed here from vollib greeks and plain Python."""
    t = days * NS_PER_DAY / NS_PER_YEAR
    fwd = SPOT * math.exp((R - Q) * t)  # parity with exact prices gives exactly this forward
    ivs = [smile(k, fwd, t) for k in STRIKES]
    atm = float(np.interp(fwd, STRIKES, ivs))

    def wing(flag: str, target: float) -> float:
        ks = list(range(len(STRIKES))) if flag == "c" else list(range(len(STRIKES) - 1, -1, -1))
        prev = None
        for j in ks:
            d = bsm_delta(flag, SPOT, STRIKES[j], t, R, ivs[j], Q)
            if prev is not None:
                dp, ivp = prev
                if (flag == "c" and dp > target > d) or (flag == "p" and dp < target < d):
                    return ivp + (ivs[j] - ivp) * (target - dp) / (d - dp)
            prev = (d, ivs[j])
        raise AssertionError("no crossing")

    c25, p25 = wing("c", 0.25), wing("p", -0.25)
    return {"forward": fwd, "atm": atm, "c25": c25, "p25": p25, "rr": c25 - p25, "bf": (c25 + p25) / 2 - atm}


@pytest.mark.parametrize("with_iv", [True, False], ids=["polygon-iv", "iv-from-mids"])
def test_surface_matches_an_independent_computation(with_iv):
    # Arrange
    chain = build_chain(with_iv=with_iv)
    # Act
    s = compute_surface(chain, SPOT, VolatilityConfig(), rate=R, dividend_yield=Q, ts_recv=TS + 5)
    # Assert
    assert s.expiries == [TS + int(d * NS_PER_DAY) for d in DAYS]
    assert (s.ts_event, s.ts_recv, s.snapshot_id, s.chain_ts, s.stale) == (TS, TS + 5, 7, TS, False)
    for j, days in enumerate(DAYS):
        want = expected(days)
        assert s.forwards[j] == pytest.approx(want["forward"], abs=1e-6)
        assert s.atm_iv[j] == pytest.approx(want["atm"], abs=1e-6)
        assert s.call25_iv[j] == pytest.approx(want["c25"], abs=1e-6)
        assert s.put25_iv[j] == pytest.approx(want["p25"], abs=1e-6)
        assert s.rr25[j] == pytest.approx(want["rr"], abs=1e-6)
        assert s.bf25[j] == pytest.approx(want["bf"], abs=1e-6)
        assert s.rr25[j] < 0 < s.bf25[j]  # put skew, convex smile
    # the smile: per expiry, ascending strikes, the known IVs, within the delta band
    start = 0
    for j, days in enumerate(DAYS):
        n = s.smile_count[j]
        ks, ivs = s.smile_strikes[start:start + n], s.smile_iv[start:start + n]
        start += n
        t = days * NS_PER_DAY / NS_PER_YEAR
        fwd = SPOT * math.exp((R - Q) * t)
        assert 10 < n <= VolatilityConfig().smile_max_points and ks == sorted(ks)
        assert ivs == pytest.approx([smile(k, fwd, t) for k in ks], abs=1e-6)
        assert min(ks) < fwd < max(ks)
    assert start == len(s.smile_iv) == len(s.smile_strikes)
    # a tighter cap thins evenly, keeping both ends of each expiry's band
    thin = compute_surface(chain, SPOT, VolatilityConfig(smile_max_points=5), rate=R, dividend_yield=Q)
    assert thin.smile_count == [5, 5]
    assert thin.smile_strikes[0] == s.smile_strikes[0] and thin.smile_strikes[4] == s.smile_strikes[s.smile_count[0] - 1]
    assert thin.atm_iv == s.atm_iv


def test_implied_vol_round_trips_vollib_prices():
    for flag, right in (("c", 1), ("p", -1)):
        for k in (80.0, 95.0, 100.0, 105.0, 125.0):
            for t in (1 / 365 / 24, 0.02, 0.5, 2.0):
                for sigma in (0.05, 0.2, 0.8, 2.5):
                    price = bsm_price(flag, 100.0, k, t, R, sigma, Q)
                    fwd_intrinsic = right * (100.0 * math.exp(-Q * t) - k * math.exp(-R * t))
                    if price - max(fwd_intrinsic, 0.0) < 1e-6:  # no time value left to read an IV from
                        continue
                    got = implied_vol(price, 100.0, k, t, R, Q, right)
                    assert got == pytest.approx(sigma, abs=1e-6), (flag, k, t, sigma)
    # outside the no-arbitrage bounds: no IV
    assert math.isnan(implied_vol(0.0, 100.0, 100.0, 0.5, R, Q, 1))
    assert math.isnan(implied_vol(100.0, 100.0, 100.0, 0.5, R, Q, 1))
    assert math.isnan(implied_vol(1.0, 100.0, 50.0, 0.5, R, Q, 1))  # below intrinsic


def test_reducer_emits_per_snapshot_and_a_stale_copy_on_fallback():
    chain = build_chain(with_iv=True)
    red = IvSurfaceReducer(lambda pages: chain, VolatilityConfig(), rate=R, dividend_yield=Q)
    page = PolygonResponse(TS, TS + 10, "SPX", "/v3/snapshot/options/I:SPX", "", 200, "r", 1, b"{}", 7, 0, True)
    err = SourceError(TS + 60, TS + 70, "polygon", "HTTP 500", "using chain from 14:00", 60 * 10**9, "SPX",
                      500, FALLBACK_PREVIOUS)
    out = red.on_batch(ColumnBatch.from_events([page, err]))
    assert [type(e) for e in out] == [IvSurface, IvSurface]
    fresh, stale = out
    assert not fresh.stale and stale.stale and stale.staleness_ns == 60 * 10**9 and stale.ts_recv == TS + 70
    assert stale.atm_iv == fresh.atm_iv and red.last()["SPX"] is stale
