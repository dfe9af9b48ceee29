"""The numba Black-Scholes greeks against py_vollib (an independent implementation).

py_vollib's black_scholes_merton analytical greeks use: gamma per $1 (same as ours), vega per
1 vol point (x0.01, same as ours), theta per calendar day. It has no vanna or charm, so those are
checked against central finite differences of py_vollib's delta: vanna = d delta / d sigma
(sigma as a decimal), charm per day = -(d delta / d t) / 365.
"""

from __future__ import annotations

import itertools
import math
import warnings

import pytest

from mia.analytics import _gamma_kernels as kern

with warnings.catch_warnings():
    # py_vollib is a transition package that warns on import; its code is vollib's.
    warnings.simplefilter("ignore", DeprecationWarning)
    from py_vollib.black_scholes_merton.greeks import analytical as vollib

MINUTE = 1.0 / (365 * 24 * 60)
SPOTS = [6000.0]
STRIKES = [5400.0, 5900.0, 5995.0, 6000.0, 6010.0, 6100.0, 6600.0]
TIMES = [1 * MINUTE, 5 * MINUTE, 45 * MINUTE, 6.5 * 60 * MINUTE, 1.0 / 365, 30.0 / 365, 1.0]
SIGMAS = [0.08, 0.2, 0.6]
RATES = [(0.0, 0.0), (0.045, 0.013)]
GRID = list(itertools.product(SPOTS, STRIKES, TIMES, SIGMAS, RATES, (1, -1)))


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


@pytest.mark.parametrize("spot,strike,t,sigma,rq,right", GRID)
def test_gamma_delta_vega_match_py_vollib(spot, strike, t, sigma, rq, right):
    # Arrange
    r, q = rq
    flag = "c" if right > 0 else "p"
    # Act
    delta, gamma, vega, _, _ = kern.bs_greeks(spot, strike, t, sigma, r, q, right)
    ref_delta = vollib.delta(flag, spot, strike, t, r, sigma, q)
    ref_gamma = vollib.gamma(flag, spot, strike, t, r, sigma, q)
    ref_vega = vollib.vega(flag, spot, strike, t, r, sigma, q)
    # Assert: 1e-9 relative wherever the value is representable; far tails underflow to 0 in both.
    for ours, ref in ((delta, ref_delta), (gamma, ref_gamma), (vega, ref_vega)):
        if abs(ref) < 1e-280:
            assert abs(ours) < 1e-250
        else:
            assert _rel(ours, ref) < 1e-9, (ours, ref)


@pytest.mark.parametrize("spot,strike,t,sigma,rq,right", [g for g in GRID if g[3] == 0.2])
def test_vanna_charm_match_finite_differences_of_py_vollib_delta(spot, strike, t, sigma, rq, right):
    r, q = rq
    flag = "c" if right > 0 else "p"
    _, _, _, vanna, charm = kern.bs_greeks(spot, strike, t, sigma, r, q, right)
    hs = 1e-5
    fd_vanna = (vollib.delta(flag, spot, strike, t, r, sigma + hs, q)
                - vollib.delta(flag, spot, strike, t, r, sigma - hs, q)) / (2 * hs)
    ht = t * 1e-4
    fd_charm = -(vollib.delta(flag, spot, strike, t + ht, r, sigma, q)
                 - vollib.delta(flag, spot, strike, t - ht, r, sigma, q)) / (2 * ht) / 365.0
    # Finite differences carry ~1e-7 of step and rounding error; skip values lost in that noise.
    if abs(fd_vanna) > 1e-6:
        assert _rel(vanna, fd_vanna) < 1e-4, (vanna, fd_vanna)
    else:
        assert abs(vanna) < 1e-5
    if abs(fd_charm) > 1e-6:
        assert _rel(charm, fd_charm) < 1e-4, (charm, fd_charm)
    else:
        assert abs(charm) < 1e-5


def test_zero_dte_minutes_away_still_has_gamma():
    # At the money, one minute left: gamma = phi(d1) / (S sigma sqrt(T)), large but finite.
    _, gamma, _, _, _ = kern.bs_greeks(6000.0, 6000.0, MINUTE, 0.15, 0.0, 0.0, 1)
    expected = math.exp(-0.5 * (0.5 * 0.15 * math.sqrt(MINUTE)) ** 2) / math.sqrt(2 * math.pi) / (
        6000.0 * 0.15 * math.sqrt(MINUTE))
    assert gamma == pytest.approx(expected, rel=1e-12)
    assert gamma > 0.1


def test_unusable_inputs_give_nan():
    for args in ((6000.0, 6000.0, 0.0, 0.2), (6000.0, 6000.0, 0.1, math.nan), (math.nan, 6000.0, 0.1, 0.2),
                 (6000.0, 0.0, 0.1, 0.2)):
        out = kern.bs_greeks(*args, 0.0, 0.0, 1)
        assert all(math.isnan(v) for v in out)
