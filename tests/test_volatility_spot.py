"""The indices snapshot's true index value as the chains' spot (gamma and IV surface alike); the
results are bit-identical to before on days without one."""

from __future__ import annotations

import dataclasses
import math

from mia.analytics._gamma_synth import synthetic_chain
from mia.analytics.gamma import INDEX_SPOT_MAX_AGE_NS, GammaReducer, compute_gamma, gamma_levels
from mia.analytics.volatility import IvSurfaceReducer, compute_surface
from mia.engine.columns import ColumnBatch
from mia.engine.events import EventCodec, PolygonResponse
from tests.test_term_structure import fake_index_values, indices

CHAIN = synthetic_chain(400, seed=3)
TS = CHAIN.ts_ns


def page(ts: int) -> PolygonResponse:
    return PolygonResponse(ts, ts, "SPX", "/v3/snapshot/options/I:SPX", "", 200, "r", 1, b"{}", 1, 0, True)


def run(reducer, rows) -> list:
    return reducer.on_batch(ColumnBatch.from_events(rows))


def test_without_an_indices_snapshot_gamma_is_what_it_was():
    red = GammaReducer(lambda pages: CHAIN, index_values=fake_index_values)
    (got,) = run(red, [page(TS)])
    want = gamma_levels(compute_gamma(CHAIN), ts_recv=TS)
    assert EventCodec().encode(got) == EventCodec().encode(want)


def test_a_recent_index_value_is_the_spot_of_gamma_and_the_surface():
    # Arrange: I:SPX 6000.0 in the snapshot (the chain's own spot is 6000.0 too: move it)
    chain = dataclasses.replace(CHAIN, spot=5990.0)
    rows = [indices(TS - 60 * 10**9, 0.0), page(TS)]  # fake rows: I:SPX 6000, I:VIX ...
    gamma = GammaReducer(lambda pages: chain, index_values=fake_index_values)
    surface = IvSurfaceReducer(lambda pages: chain, index_values=fake_index_values)
    # Act
    (g,) = run(gamma, rows)
    (s,) = run(surface, rows)
    # Assert
    assert g.spot == 6000.0 and s.spot == 6000.0
    assert EventCodec().encode(g) == EventCodec().encode(
        gamma_levels(compute_gamma(dataclasses.replace(chain, spot=6000.0)), ts_recv=TS))
    assert s.atm_iv == compute_surface(chain, 6000.0, ts_recv=TS).atm_iv


def test_an_old_index_value_is_not_used():
    chain = dataclasses.replace(CHAIN, spot=5990.0)
    rows = [indices(TS - INDEX_SPOT_MAX_AGE_NS - 1, 0.0), page(TS)]
    (g,) = run(GammaReducer(lambda pages: chain, index_values=fake_index_values), rows)
    (s,) = run(IvSurfaceReducer(lambda pages: chain, index_values=fake_index_values), rows)
    assert g.spot == 5990.0 == s.spot
    assert not math.isnan(s.atm_iv[-1])
