"""compute_gamma against a plain numpy/Python reference written here, and a chain checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mia.analytics.gamma import ChainDataError, GammaConfig, compute_gamma, gamma_levels
from mia.engine.columns import ChainColumns

NS_PER_YEAR = 365 * 24 * 3600 * 10**9
NS_PER_MIN = 60 * 10**9
TS = 1_750_082_400 * 10**9


def make_chain(spot, strike, expiry_ns, right, oi, volume, iv, *, gamma=None, multiplier=None, ts=TS,
               underlying="SPX") -> ChainColumns:
    n = len(strike)
    nan = np.full(n, np.nan)
    return ChainColumns(
        underlying=underlying, ts_ns=ts, spot=spot, strike=np.asarray(strike, float),
        expiry_ns=np.asarray(expiry_ns, np.int64), right=np.asarray(right, np.int8),
        open_interest=np.asarray(oi, float), volume=np.asarray(volume, float), iv=np.asarray(iv, float),
        delta=nan.copy(), gamma=nan.copy() if gamma is None else np.asarray(gamma, float), theta=nan.copy(),
        vega=nan.copy(), bid=nan.copy(), ask=nan.copy(),
        multiplier=np.full(n, 100.0) if multiplier is None else np.asarray(multiplier, float),
        am_settled=np.zeros(n, bool),
    )


# --- a tiny chain, worked out by hand ---------------------------------------------------------
#
# S = 100, T = exactly 1 year, sigma = 0.2 for all, r = q = 0, multiplier 100, so
# gamma(K) = phi(d1) / (S sigma sqrt T) = phi(d1) / 20 with d1 = (ln(100/K) + 0.02) / 0.2:
#   K=95:  d1 = 0.356466472, phi = 0.374384211, gamma = 0.0187192106
#   K=100: d1 = 0.1,         phi = 0.396952547, gamma = 0.0198476274
#   K=105: d1 = -0.143950821, phi = 0.394830211, gamma = 0.0197415105
# GEX per contract of OI 1 = gamma * 100 * 100^2 * 0.01 = gamma * 10_000:
#   call 100 (OI 10): +198.476273739 * 10 = +1984.76273739
#   call 105 (OI 30): +197.415105390 * 30 = +5922.45316171
#   put   95 (OI 20): -187.192105637 * 20 = -3743.84211273
#   put  100 (OI 20): -198.476273739 * 20 = -3969.52547477
#   put  105 (OI  5): -197.415105390 *  5 =  -987.07552695
#   total = 7907.21589910 - 8700.44311445 = -793.22721536
# Call wall 105 (5922 > 1985); put wall 100 (|-3970| > |-3744|).
# Max pain over strikes {95, 100, 105}, paid = OI * 100 * intrinsic:
#   P=95:  puts 100: 20*100*5 + puts 105: 5*100*10 = 15000
#   P=100: puts 105: 5*100*5 = 2500
#   P=105: calls 100: 10*100*5 = 5000            -> max pain 100
# PCR OI = (20+20+5)/(10+30) = 1.125; PCR volume = (50+150+25)/(100+300) = 0.5625.
# Unusual (ratio 2, min volume 100): call 100 (100/10), call 105 (300/30), put 100 (150/20) -> {100, 105}.
# Pins (2% of spot = 98..102, nearest expiry): only 100.
HAND = dict(
    spot=100.0,
    strike=[100, 105, 95, 100, 105],
    expiry_ns=[TS + NS_PER_YEAR] * 5,
    right=[1, 1, -1, -1, -1],
    oi=[10, 30, 20, 20, 5],
    volume=[100, 300, 50, 150, 25],
    iv=[0.2] * 5,
)


def test_hand_chain():
    result = compute_gamma(make_chain(**HAND), GammaConfig(unusual_min_volume=100))
    np.testing.assert_allclose(result.gex, [1984.76273739, 5922.45316171, -3743.84211273, -3969.52547477,
                                            -987.07552695], rtol=1e-10)
    assert result.total_gex == pytest.approx(-793.22721536, rel=1e-10)
    assert result.call_gex == pytest.approx(7907.21589910, rel=1e-10)
    assert result.put_gex == pytest.approx(-8700.44311445, rel=1e-10)
    assert result.call_wall == 105.0
    assert result.put_wall == 100.0
    assert result.max_pain == 100.0
    assert result.pcr_oi == 1.125
    assert result.pcr_volume == 0.5625
    assert result.unusual_strikes == (100.0, 105.0)
    assert result.pin_strikes == (100.0,)
    np.testing.assert_allclose(result.net_gex_by_strike, [-3743.84211273, 1984.76273739 - 3969.52547477,
                                                          5922.45316171 - 987.07552695], rtol=1e-10)
    assert list(result.strikes) == [95.0, 100.0, 105.0]


def test_hand_chain_conventions_flip_signs():
    base = compute_gamma(make_chain(**HAND))
    short_calls = compute_gamma(make_chain(**HAND), GammaConfig(dealer_convention="short_calls_long_puts"))
    all_short = compute_gamma(make_chain(**HAND), GammaConfig(dealer_convention="all_short"))
    assert short_calls.total_gex == pytest.approx(-base.total_gex, rel=1e-12)
    assert all_short.total_gex == pytest.approx(-(base.call_gex - base.put_gex), rel=1e-12)
    assert all_short.call_wall == base.call_wall and all_short.put_wall == base.put_wall


def test_no_crossing_is_none():
    # Calls only: dealers long gamma everywhere, the profile never crosses zero.
    chain = make_chain(100.0, [95, 100, 105], [TS + NS_PER_YEAR] * 3, [1, 1, 1], [10, 10, 10], [0, 0, 0],
                       [0.2] * 3)
    result = compute_gamma(chain)
    assert math.isnan(result.zero_gamma)
    assert result.zero_gamma_crossings.size == 0
    assert (result.profile_gex > 0).all()
    assert result.dealer_bias > 0


def test_missing_iv_and_gamma_contributes_nothing_and_expired_is_dropped():
    chain = make_chain(100.0, [100, 100, 100], [TS + NS_PER_YEAR, TS + NS_PER_YEAR, TS - NS_PER_MIN],
                       [1, -1, -1], [10, 10, 10], [0, 0, 0], [0.2, np.nan, 0.2])
    result = compute_gamma(chain)
    assert result.gex[1] == 0.0 and result.gex[2] == 0.0
    assert result.contracts_live == 2 and result.contracts_no_gamma == 1
    assert result.total_gex == pytest.approx(1984.76273739, rel=1e-10)


def test_zero_dte_floor_counts_last_minute():
    # 30 s to expiry is priced as 1 minute: gamma of a 1-minute ATM option, not zero.
    chain = make_chain(100.0, [100], [TS + 30 * 10**9], [1], [1], [0], [0.2])
    result = compute_gamma(chain)
    assert result.t_years[0] == 60 / (365 * 24 * 3600)
    assert result.gex[0] > 0


def test_bad_chains_raise_chain_data_error():
    with pytest.raises(ChainDataError):
        compute_gamma(make_chain(np.nan, [100], [TS + NS_PER_YEAR], [1], [1], [0], [0.2]))
    with pytest.raises(ChainDataError):
        compute_gamma(make_chain(100.0, [], [], [], [], [], []))


def test_futures_levels_add_the_basis():
    result = compute_gamma(make_chain(**HAND), futures_mid=101.5)
    levels = gamma_levels(result, ts_recv=TS + 5, futures_symbol="ESU5")
    assert levels.basis == pytest.approx(1.5)
    assert levels.call_wall_fut == 106.5 and levels.put_wall_fut == 101.5 and levels.max_pain_fut == 101.5
    assert levels.futures_symbol == "ESU5" and levels.ts_event == TS and levels.ts_recv == TS + 5
    no_fut = gamma_levels(compute_gamma(make_chain(**HAND)), ts_recv=TS, futures_symbol="ESU5")
    assert math.isnan(no_fut.basis) and math.isnan(no_fut.call_wall_fut) and no_fut.futures_symbol == ""


# --- random chains against a numpy reference --------------------------------------------------


def random_chain(seed: int) -> tuple[ChainColumns, GammaConfig]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 300))
    spot = float(rng.uniform(3000, 7000))
    strike = np.round(spot * rng.uniform(0.8, 1.2, n) / 5) * 5
    offsets = np.array([-3600, 30, 180, 3 * 3600, 86400, 3 * 86400, 30 * 86400, 200 * 86400]) * 10**9
    expiry = TS + rng.choice(offsets, n)
    right = rng.choice([1, -1], n)
    oi = np.round(rng.gamma(1.0, 500.0, n))
    oi[rng.random(n) < 0.1] = np.nan
    oi[rng.random(n) < 0.1] = 0
    volume = np.round(rng.gamma(1.0, 700.0, n))
    volume[rng.random(n) < 0.1] = np.nan
    iv = rng.uniform(0.05, 1.0, n)
    iv[rng.random(n) < 0.1] = np.nan
    src_gamma = np.where(rng.random(n) < 0.2, rng.uniform(0, 0.01, n), np.nan)
    mult = rng.choice([100.0, 100.0, 100.0, 10.0, np.nan], n)
    chain = make_chain(spot, strike, expiry, right, oi, volume, iv, gamma=src_gamma, multiplier=mult)
    rq = [(0.0, 0.0), (0.04, 0.015)][seed % 2]
    conv = ["long_calls_short_puts", "short_calls_long_puts", "all_short"][seed % 3]
    return chain, GammaConfig(dealer_convention=conv, rate=rq[0], dividend_yield=rq[1],
                              max_pain_expiry=["nearest", "all"][(seed // 2) % 2])


def np_gamma(S, K, T, sigma, r, q):
    with np.errstate(all="ignore"):
        d1 = (np.log(S / K) + (r - q + sigma**2 / 2) * T) / (sigma * np.sqrt(T))
        return np.exp(-q * T) * np.exp(-d1**2 / 2) / np.sqrt(2 * np.pi) / (S * sigma * np.sqrt(T))


def reference(chain: ChainColumns, cfg: GammaConfig) -> dict:
    S = chain.spot
    T = np.maximum(chain.expiry_ns - chain.ts_ns, 60 * 10**9) / NS_PER_YEAR
    live = chain.expiry_ns > chain.ts_ns
    csign, psign = {"long_calls_short_puts": (1, -1), "short_calls_long_puts": (-1, 1), "all_short": (-1, -1)}[
        cfg.dealer_convention]
    sign = np.where(chain.right == 1, csign, psign)
    oi = np.nan_to_num(chain.open_interest)
    vol = np.nan_to_num(chain.volume)
    mult = np.where(np.isnan(chain.multiplier), 100.0, chain.multiplier)
    iv_ok = ~np.isnan(chain.iv)
    bs = np.where(iv_ok, np_gamma(S, chain.strike, T, chain.iv, cfg.rate, cfg.dividend_yield), np.nan)
    gamma = np.where(np.isnan(chain.gamma), bs, chain.gamma)
    gex = np.where(live & ~np.isnan(gamma), sign * np.nan_to_num(gamma) * oi * mult * S * S * 0.01, 0.0)
    calls, puts = live & (chain.right == 1), live & (chain.right == -1)
    by_call, by_put = {}, {}
    for k, g, c, p in zip(chain.strike, gex, calls, puts):
        if c:
            by_call[k] = by_call.get(k, 0.0) + g
        if p:
            by_put[k] = by_put.get(k, 0.0) + g
    strikes = sorted(set(chain.strike[live]))
    call_k = np.array([by_call.get(k, 0.0) for k in strikes])
    put_k = np.array([by_put.get(k, 0.0) for k in strikes])
    nearest = chain.expiry_ns[live].min()
    mp_rows = live & (chain.expiry_ns == nearest) if cfg.max_pain_expiry == "nearest" else live
    cands = np.unique(chain.strike[mp_rows])
    w = oi * mult * mp_rows
    pain = (w * (chain.right == 1) * np.maximum(cands[:, None] - chain.strike, 0)).sum(1) + (
        w * (chain.right == -1) * np.maximum(chain.strike - cands[:, None], 0)).sum(1)
    grid = np.exp(np.linspace(np.log(S * 0.9), np.log(S * 1.1), 400))
    weight = np.where(live & iv_ok, sign * oi * mult, 0.0)
    curve = (np.nan_to_num(np_gamma(grid[:, None], chain.strike, T, chain.iv, cfg.rate, cfg.dividend_yield))
             * weight).sum(1) * grid**2 * 0.01
    crossings = []
    for j in range(len(grid) - 1):
        g0, g1 = curve[j], curve[j + 1]
        if g0 * g1 < 0:
            crossings.append(grid[j + 1] - (grid[j + 1] - grid[j]) * g1 / (g1 - g0))
    flip = min(crossings, key=lambda x: abs(x - S)) if crossings else math.nan
    return dict(
        gex=gex, strikes=np.array(strikes), call_k=call_k, put_k=put_k,
        call_wall=strikes[int(np.argmax(np.abs(call_k)))] if np.abs(call_k).max() > 0 else math.nan,
        put_wall=strikes[int(np.argmax(np.abs(put_k)))] if np.abs(put_k).max() > 0 else math.nan,
        max_pain=cands[int(np.argmin(pain))] if pain.max() > 0 else math.nan,
        pcr_oi=oi[puts].sum() / oi[calls].sum() if oi[calls].sum() > 0 else math.nan,
        pcr_volume=vol[puts].sum() / vol[calls].sum() if vol[calls].sum() > 0 else math.nan,
        grid=grid, curve=curve, flip=flip, total=gex.sum(),
    )


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@pytest.mark.parametrize("seed", range(40))
def test_random_chain_matches_numpy_reference(seed):
    chain, cfg = random_chain(seed)
    result = compute_gamma(chain, cfg)
    ref = reference(chain, cfg)
    np.testing.assert_allclose(result.gex, ref["gex"], rtol=1e-9, atol=1e-6)
    assert result.total_gex == pytest.approx(ref["total"], rel=1e-9, abs=1e-3)
    np.testing.assert_array_equal(result.strikes, ref["strikes"])
    np.testing.assert_allclose(result.call_gex_by_strike, ref["call_k"], rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(result.put_gex_by_strike, ref["put_k"], rtol=1e-9, atol=1e-6)
    assert same(result.call_wall, ref["call_wall"]) and same(result.put_wall, ref["put_wall"])
    assert same(result.max_pain, ref["max_pain"])
    assert result.pcr_oi == pytest.approx(ref["pcr_oi"], rel=1e-12, nan_ok=True)
    assert result.pcr_volume == pytest.approx(ref["pcr_volume"], rel=1e-12, nan_ok=True)
    np.testing.assert_allclose(result.profile_grid, ref["grid"], rtol=1e-14)
    scale = np.abs(ref["curve"]).max()
    np.testing.assert_allclose(result.profile_gex, ref["curve"], rtol=0, atol=max(scale, 1.0) * 1e-10)  # d1 ~ 30 near 0DTE amplifies rounding
    if math.isnan(ref["flip"]):
        assert math.isnan(result.zero_gamma)
    else:
        assert result.zero_gamma == pytest.approx(ref["flip"], rel=1e-8)


def test_dealer_bias_formula_and_monotonicity():
    from mia.analytics.gamma import dealer_bias_score

    # g = 50/100 = 0.5; f = clip((6030-6000)/(0.02*6030)) = 30/120.6; p = (1-1.5)/(1+1.5) = -0.2
    expected = 0.5 * 0.5 + 0.3 * (30 / 120.6) + 0.2 * -0.2
    assert dealer_bias_score(50.0, 100.0, 6030.0, 6000.0, 1.0, 1.5) == pytest.approx(expected, rel=1e-12)
    # no flip: the sign of the profile at spot stands in for f
    assert dealer_bias_score(50.0, 100.0, 6030.0, math.nan, -3.0, 1.0) == pytest.approx(
        (0.5 * 0.5 + 0.3 * -1.0) / 1.0)
    # missing terms drop out and the weights renormalise
    assert dealer_bias_score(0.0, 0.0, 6030.0, math.nan, math.nan, 0.0) == 1.0
    assert math.isnan(dealer_bias_score(0.0, 0.0, 6030.0, math.nan, math.nan, math.nan))
    # monotone in each input, always within [-1, 1]
    gex = [dealer_bias_score(t, 100.0, 6000.0, 5990.0, 1.0, 1.0) for t in np.linspace(-100, 100, 21)]
    flip = [dealer_bias_score(0.0, 100.0, 6000.0, z, 1.0, 1.0) for z in np.linspace(6300, 5700, 21)]
    pcr = [dealer_bias_score(0.0, 100.0, 6000.0, 6000.0, 1.0, x) for x in np.linspace(5, 0, 21)]
    for seq in (gex, flip, pcr):
        assert all(b >= a for a, b in zip(seq, seq[1:])) and -1 <= min(seq) and max(seq) <= 1
