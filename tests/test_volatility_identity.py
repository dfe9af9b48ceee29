"""Live/replay identity of the volatility reducers: the same rows cut into random batches give
the same derived events, byte for byte (the log's encoding)."""

from __future__ import annotations

import random

import msgspec
import numpy as np

from mia.analytics._gamma_synth import synthetic_chain
from mia.analytics.volatility import IvSurfaceReducer, TermStructureReducer, VolatilityConfig
from mia.engine.columns import ColumnBatch
from mia.engine.events import (
    FALLBACK_NONE,
    FALLBACK_OTHER_SOURCE,
    FALLBACK_PREVIOUS,
    EventCodec,
    Heartbeat,
    Instrument,
    PolygonResponse,
    Quote,
    SourceError,
    Trade,
)
from tests.test_term_structure import T0, cfe_rule, fake_index_values, indices

MS = 10**6


def stream(seed: int) -> tuple[list, dict]:
    """A scripted hour of VIX/VX/ES rows, indices snapshots, chain snapshots and fallbacks."""
    rng = random.Random(seed)
    chains = {}
    rows: list = [
        Instrument(T0, T0, 1, "VIX", "dtc", kind="index"),
        Instrument(T0, T0, 2, "VXZ6", "dtc"),
        Instrument(T0, T0, 3, "VXF7", "dtc"),
        Instrument(T0, T0, 4, "ESZ6", "dtc"),
    ]
    px = {1: 16.0, 2: 17.5, 3: 18.6, 4: 6000.0}
    t = T0
    snap = 0
    for step in range(3000):
        t += rng.randint(1, 400) * MS
        inst = rng.choice([1, 2, 3, 4, 4, 4])
        px[inst] += rng.choice([-1, 0, 1]) * (0.05 if inst < 4 else 0.25)
        if rng.random() < 0.5:
            rows.append(Trade(t, t, inst, px[inst], 1.0, rng.choice([-1, 1])))
        else:
            tick = 0.05 if inst < 4 else 0.25
            rows.append(Quote(t, t, inst, px[inst] - tick, 3.0, px[inst] + tick, 4.0))
        if step % 250 == 0:
            rows.append(Heartbeat(t, t))
        if step % 400 == 7:
            rows.append(indices(t, px[1] + 0.1))
        if step % 700 == 11:
            snap += 1
            chains[snap] = synthetic_chain(300, seed=snap, ts_ns=t, spot=6000.0 + snap)
            for page in range(2):
                rows.append(PolygonResponse(t, t, "SPX", "/v3/snapshot/options/I:SPX", "", 200, "r", 1, b"{}",
                                            snap, page, page == 1))
        if step == 1500:
            rows.append(SourceError(t, t, "dtc", "VIX silent", "Polygon I:VIX", 0, "VIX", 0, FALLBACK_OTHER_SOURCE))
            rows.append(SourceError(t, t, "polygon", "HTTP 502", "using chain", 30 * 10**9, "SPX", 502,
                                    FALLBACK_PREVIOUS))
        if step == 2200:
            rows.append(SourceError(t, t, "dtc", "VIX back", "", 0, "VIX", 0, FALLBACK_NONE))
    return rows, chains


def run(rows: list, chains: dict, cuts: list[int]) -> bytes:
    cfg = VolatilityConfig()
    reducers = [TermStructureReducer(cfg, index_values=fake_index_values, vx_expiry=cfe_rule),
                IvSurfaceReducer(lambda pages: chains[pages[-1].snapshot_id], cfg, rate=0.04,
                                 dividend_yield=0.012, index_values=fake_index_values)]
    out = []
    bounds = [0, *cuts, len(rows)]
    for lo, hi in zip(bounds, bounds[1:]):
        batch = ColumnBatch.from_events(rows[lo:hi], np.arange(lo, hi))
        derived = []
        for red in reducers:
            derived.extend(red.on_batch(batch))
        out.extend(sorted(derived, key=lambda e: e.ts_recv))  # merged as the fold merges them
    return EventCodec().encode_many(out)


def test_random_batch_cuts_give_identical_bytes():
    rows, chains = stream(seed=11)
    whole = run(rows, chains, [])
    events = msgspec.msgpack.decode(whole)
    kinds = {e[0] for e in events}
    assert kinds == {32, 33} and len(events) > 20  # both kinds, a real workload
    rng = random.Random(5)
    for trial in range(6):
        n_cuts = [1, 5, 50, 400, len(rows) - 1, 3][trial]
        cuts = sorted(rng.sample(range(1, len(rows)), n_cuts))
        assert run(rows, chains, cuts) == whole, trial
