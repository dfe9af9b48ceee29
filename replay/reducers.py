"""The standard reducer set, built the same way for `mia record` and `mia replay`.

Lives beside replay because both modes need it and it joins `analytics` (pure reducers) with
`data` (the Polygon chain parser the gamma reducer is handed).
"""

from __future__ import annotations

import datetime as dt
import logging

from mia.config import Config
from mia.engine.events import Event, GammaLevels, OrderflowBar

logger = logging.getLogger(__name__)


def standard_reducers(config: Config) -> list:
    """[OrderflowReducer, GammaReducer, MonitorReducer] configured from `config`; the order is
    part of the output (it breaks ts_recv ties between their derived events)."""
    from mia.analytics.gamma import GammaReducer
    from mia.analytics.monitor import MonitorReducer
    from mia.analytics.orderflow import OrderflowReducer
    from mia.data.polygon.models import chain_columns

    orderflow = OrderflowReducer(config.orderflow)
    gamma = GammaReducer(chain_columns, config.gamma)
    return [orderflow, gamma, MonitorReducer(config.monitor)]


def compile_kernels(config: Config) -> None:
    """Compile (or load from numba's cache) every reducer kernel on throwaway instances.

    The recorder calls this before any source connects: on a cold cache the first batch would
    otherwise stall the event loop (and the DTC heartbeats) for seconds while numba compiles.
    """
    from mia.analytics._gamma_synth import synthetic_chain
    from mia.analytics.gamma import compute_gamma
    from mia.engine.columns import ColumnBatch
    from mia.engine.events import (
        BATCH_BEGIN,
        BATCH_END,
        BOOK_SNAPSHOT,
        BOOK_UPSERT,
        BookLevel,
        Instrument,
        Quote,
        RecordingEnded,
        Trade,
    )

    t = 1_700_000_000_000_000_000
    rows = [
        Instrument(t, t, 1, "ESZ6", "warm-up", tick_size=0.25),
        BookLevel(t, t, 1, 1, 99.75, 5.0, BOOK_SNAPSHOT, 0, 1, BATCH_BEGIN),
        BookLevel(t, t, 1, -1, 100.25, 5.0, BOOK_SNAPSHOT, 0, 1, BATCH_END),
        Quote(t, t, 1, 99.75, 5.0, 100.25, 5.0),
        Trade(t, t, 1, 100.25, 2.0, 0),
        BookLevel(t + 1, t + 1, 1, 1, 99.75, 3.0, BOOK_UPSERT, 0, 1, BATCH_BEGIN | BATCH_END),
        Trade(t + 61 * 10**9, t + 61 * 10**9, 1, 100.0, 1.0, -1),
        RecordingEnded(t + 62 * 10**9, t + 62 * 10**9, "warm-up", "stopped"),
    ]
    batch = ColumnBatch.from_events(rows, range(len(rows)))
    for reducer in standard_reducers(config):
        reducer.on_batch(batch)
    compute_gamma(synthetic_chain(200, seed=0), config.gamma)


def find_reducer(reducers: list, cls_name: str):
    for r in reducers:
        if type(r).__name__ == cls_name:
            return r
    return None


class LevelsSink:
    """Keeps a Sierra Chart levels file current from derived events (atomic rewrite)."""

    def __init__(self, path: str, orderflow=None) -> None:
        self.path = path
        self.orderflow = orderflow
        self.gamma: dict[str, GammaLevels] = {}
        self.writes = 0

    def __call__(self, derived: list[Event]) -> None:
        from mia.analytics.levels import build_levels, write_levels_file

        touched = False
        last_ts = 0
        for ev in derived:
            if isinstance(ev, GammaLevels):
                self.gamma[ev.underlying] = ev
                touched = True
            elif isinstance(ev, OrderflowBar):
                touched = True
            last_ts = max(last_ts, ev.ts_event)
        if not touched:
            return
        date = dt.datetime.fromtimestamp(last_ts / 1e9, dt.timezone.utc).date().isoformat()
        flows = None
        if self.orderflow is not None:
            flows = {v.get("symbol") or str(k): v for k, v in self.orderflow.summary().items()}
        write_levels_file(self.path, build_levels(self.gamma, flows, date=date))
        self.writes += 1
