"""The simulators' volatility: VIX inverse to the S&P, VX in contango, chain IVs with skew and term."""

from __future__ import annotations

import numpy as np

from mia.data.dtc.server import _Market, root_of, vx_contract_expiry_ns
from mia.data.market_path import price_at, vix_at, vx_at
from mia.data.polygon.server import build_chain

NS = 1_000_000_000
DAY0 = 1_790_035_200 * NS  # 2026-09-22 00:00 UTC


def test_vix_moves_inversely_with_spx_and_vx_is_in_contango():
    # Arrange: a minute grid over a day, for a few seeds
    for seed in (0, 1, 2):
        ts = [DAY0 + k * 60 * NS for k in range(1, 1440)]
        spx = np.array([price_at(seed, "SPX", t) for t in ts])
        vix = np.array([vix_at(seed, t) for t in ts])
        # Assert: returns negatively correlated
        assert np.corrcoef(np.diff(np.log(spx)), np.diff(np.log(vix)))[0, 1] < -0.5
        # the front 6 VX months above VIX on average and rising with expiry
        expiries = [vx_contract_expiry_ns(s, DAY0) for s in ("VXV6", "VXX6", "VXZ6", "VXF7", "VXG7", "VXH7")]
        curve = np.array([[vx_at(seed, e, t) for e in expiries] for t in ts[::60]])
        assert (curve[:, 0] > np.array([vix_at(seed, t) for t in ts[::60]])).mean() > 0.9
        assert (np.diff(curve.mean(axis=0)) > 0).all()


def test_dtc_simulator_serves_the_vix_index_and_vx_curve():
    assert root_of("VIX") == root_of("$VIX") == "VIXIDX" and root_of("VXZ6") == "VIX"
    t = DAY0 + 15 * 3600 * NS
    vix = _Market("$VIX", "VIXIDX", 0, t)
    fronts = [_Market(s, "VIX", 0, t) for s in ("VXV6", "VXX6", "VXZ6")]
    assert abs(vix.mid() - vix_at(0, t)) < 0.02
    mids = [m.mid() for m in fronts]
    assert mids == sorted(mids) and mids[0] > vix.mid()


def test_chain_ivs_carry_put_skew_and_an_upward_term_structure():
    t = DAY0 + 15 * 3600 * NS
    c = build_chain(0, "SPX", t)
    spot = c.spot
    expiries = sorted(set(c.expiry))
    atm = []
    for e in (expiries[1], expiries[len(expiries) // 2], expiries[-1]):
        rows = c.expiry == e
        k = c.strike[rows]
        iv = c.iv[rows]
        atm.append(iv[np.argmin(np.abs(k - spot))])
        # puts 5% below richer than calls 5% above
        assert iv[np.argmin(np.abs(k - 0.95 * spot))] > iv[np.argmin(np.abs(k - 1.05 * spot))]
    assert atm == sorted(atm)
    # and the level follows VIX (30-day ATM near 0.9 x VIX / 100)
    assert 0.6 < atm[1] / (vix_at(0, t) / 100) < 1.2
