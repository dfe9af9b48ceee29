"""Sinks the recorder hangs on the pipeline: they see each batch's derived events."""

from __future__ import annotations

from mia.analytics.levels import build_levels, write_levels_file
from mia.analytics.orderflow import OrderflowReducer
from mia.engine.clock import utc_day
from mia.engine.events import Event, GammaLevels, OrderflowBar, TermStructure


class LevelsSink:
    """Keeps a Sierra Chart levels file current from derived events (atomic rewrite)."""

    def __init__(self, path: str, orderflow: OrderflowReducer | None = None) -> None:
        self.path = path
        self.orderflow = orderflow
        self.gamma: dict[str, GammaLevels] = {}
        self.term: TermStructure | None = None
        self.writes = 0

    def __call__(self, derived: list[Event]) -> None:
        touched = False
        last_ts = 0
        for ev in derived:
            if isinstance(ev, GammaLevels):
                self.gamma[ev.underlying] = ev
                touched = True
            elif isinstance(ev, TermStructure):
                self.term = ev
                touched = True
            elif isinstance(ev, OrderflowBar):
                touched = True
            last_ts = max(last_ts, ev.ts_event)
        if not touched:
            return
        flows = None
        if self.orderflow is not None:
            flows = {s.symbol or str(inst): s for inst, s in self.orderflow.summary().items()}
        write_levels_file(self.path, build_levels(self.gamma, flows, date=utc_day(last_ts),
                                                  term=self.term))
        self.writes += 1
