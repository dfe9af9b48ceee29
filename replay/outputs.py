"""What a researcher takes out of a recorded day: the replayed state behind `mia levels` and
`mia report`.

    from mia.replay.outputs import replay_state, levels_at
    state = replay_state("./mia-data", "2026-11-20", end=None)
    state.gamma_last["SPX"].zero_gamma           # last GammaLevels of SPX
    levels = levels_at("./mia-data", "2026-11-20", at="15:30")

The day is folded through the standard fold exactly as `mia replay` and the recorder do (same
reducers, same warm-up through a recording that ran over UTC midnight), so the levels and figures
equal what the recorder computed live up to that moment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from mia.analytics.orderflow import InstrumentSummary
from mia.config import AnalyticsConfig, Config
from mia.engine.clock import parse_date, window_ns
from mia.engine.events import (
    K_TRADE,
    GammaLevels,
    IvSurface,
    OptionFlow,
    OrderflowBar,
    TermStructure,
    UnusualTrade,
)
from mia.fold import Fold
from mia.replay.day import Day, time_span

logger = logging.getLogger(__name__)

__all__ = ["ReplayState", "TradeSeries", "replay_state", "levels_at", "report_day", "health_of_day"]

Progress = Callable[[int, int], None]


@dataclass
class TradeSeries:
    """Every trade of one instrument in log order (sides as recorded: +1 buy, -1 sell, 0 unknown)."""

    symbol: str
    instrument: int
    ts: np.ndarray  # int64 ns, ts_event
    price: np.ndarray
    size: np.ndarray
    side: np.ndarray  # int8


@dataclass
class ReplayState:
    """The standard fold after a replay of [start of day, end), and what it emitted."""

    date: str
    end: int | None
    events: int
    fold: Fold
    gamma_history: list[GammaLevels] = field(default_factory=list)
    bars: list[OrderflowBar] = field(default_factory=list)
    term_history: list[TermStructure] = field(default_factory=list)
    surfaces: dict[str, IvSurface] = field(default_factory=dict)  # the last per underlying
    trades: dict[str, TradeSeries] = field(default_factory=dict)
    symbols: dict[int, str] = field(default_factory=dict)
    option_flows: list[OptionFlow] = field(default_factory=list)  # option flow bars (streams)
    unusual: list[UnusualTrade] = field(default_factory=list)

    @property
    def gamma_last(self) -> dict[str, GammaLevels]:
        """The last GammaLevels per underlying (what a levels file draws)."""
        out: dict[str, GammaLevels] = {}
        for g in self.gamma_history:
            out[g.underlying] = g
        return out

    def orderflow_summary(self) -> dict[str, InstrumentSummary]:
        """The fold's order-flow summary keyed by symbol (instruments that traded)."""
        return {s.symbol or self.symbols.get(inst, str(inst)): s
                for inst, s in self.fold.summary().items() if s.trades}


def replay_state(root: str, date: str, *, end: int | None = None,
                 config: Config | AnalyticsConfig | None = None, collect_trades: bool = False,
                 progress: Progress | None = None) -> ReplayState:
    """Fold the day's input up to `end` (ns, exclusive; None: the whole day) through the standard
    fold, warmed up as live was; keep every derived event, and each symbol's trades when asked."""
    day = Day(root, date)
    fold = Fold(config)
    lo, hi = time_span(day, None, end) if progress else (0, 0)
    state = ReplayState(date=day.date, end=end, events=0, fold=fold)
    parts: dict[int, list[tuple[np.ndarray, ...]]] = {}
    for batch in fold.day_batches(day.log, day.date, end=end, streams=day.input_streams()):
        for ev in fold.on_batch(batch):
            if isinstance(ev, GammaLevels):
                state.gamma_history.append(ev)
            elif isinstance(ev, OrderflowBar):
                state.bars.append(ev)
            elif isinstance(ev, TermStructure):
                state.term_history.append(ev)
            elif isinstance(ev, IvSurface):
                state.surfaces[ev.underlying] = ev
            elif isinstance(ev, OptionFlow):
                state.option_flows.append(ev)
            elif isinstance(ev, UnusualTrade):
                state.unusual.append(ev)
        if collect_trades:
            rows = np.flatnonzero(batch.kind == K_TRADE)
            if rows.size:
                inst = batch.instrument[rows]
                for i in np.unique(inst).tolist():
                    sel = rows[inst == i]
                    parts.setdefault(int(i), []).append((batch.ts_event[sel], batch.price[sel],
                                                         batch.size[sel], batch.side[sel]))
        state.events += len(batch)
        if progress is not None and len(batch):
            progress(min(int(batch.ts_recv[-1]) - lo, hi - lo), hi - lo)  # ns of the day's span
    state.symbols = day.symbols()
    for inst, chunks in sorted(parts.items()):
        sym = state.symbols.get(inst, str(inst))
        state.trades[sym] = TradeSeries(
            symbol=sym, instrument=inst,
            ts=np.concatenate([c[0] for c in chunks]).astype(np.int64),
            price=np.concatenate([c[1] for c in chunks]).astype(np.float64),
            size=np.concatenate([c[2] for c in chunks]).astype(np.float64),
            side=np.concatenate([c[3] for c in chunks]).astype(np.int8))
    logger.debug("replayed date=%s events=%d gamma=%d bars=%d", state.date, state.events,
                 len(state.gamma_history), len(state.bars))
    return state


def levels_at(root: str, date: str, at: str | int | None = None, *, config: Config | AnalyticsConfig | None = None,
              progress: Progress | None = None):
    """The Sierra Chart levels of a recorded day at `at` (HH:MM UTC, or int ns, exclusive;
    None: the end of the day), as
    `mia.analytics.levels.Level`s: the last GammaLevels per underlying and the order-flow summary
    of everything replayed up to then (the same inputs the live levels file is built from)."""
    from mia.analytics.levels import build_levels

    date = parse_date(date)
    end = at if isinstance(at, int) else window_ns(date, None, at)[1]
    state = replay_state(root, date, end=end, config=config, progress=progress)
    return build_levels(state.gamma_last, state.orderflow_summary(), date=date, term=state.fold.term.last())


def report_day(root: str, date: str, *, end: int | None = None, config: Config | AnalyticsConfig | None = None,
               progress: Progress | None = None, figure_progress: Progress | None = None):
    """Replay the day (up to `end`) and build its HTML report (`mia.analytics.report.Report`).

    `progress` follows the replay, `figure_progress` the drawing."""
    from mia.analytics.report import FlowInput, GammaInput, _pyplot, build_report

    _pyplot()  # fail before the replay when matplotlib is missing
    state = replay_state(root, date, end=end, config=config, collect_trades=True, progress=progress)
    bars_of: dict[int, list[OrderflowBar]] = {}
    for b in state.bars:
        bars_of.setdefault(b.instrument, []).append(b)
    flows = []
    for sym, tr in state.trades.items():
        prof = state.fold.orderflow.profile(tr.instrument, session=False)
        flows.append(FlowInput(symbol=sym, ts=tr.ts, price=tr.price, size=tr.size, side=tr.side,
                               profile_prices=prof.prices, profile_volume=prof.volume,
                               poc=prof.poc, va_low=prof.va_low, va_high=prof.va_high,
                               bars=bars_of.get(tr.instrument, [])))
    gammas = [GammaInput(levels=g, result=state.fold.gamma.last_result(u))
              for u, g in sorted(state.gamma_last.items())]
    subtitle = (f"{state.events:,} events replayed through the standard fold; "
                f"{len(state.gamma_history)} GammaLevels, {len(state.bars)} OrderflowBars")
    return build_report(state.date, flows, gammas, state.gamma_history, subtitle=subtitle,
                        progress=figure_progress, term_history=state.term_history,
                        surfaces=[state.surfaces[u] for u in sorted(state.surfaces)],
                        option_flows=state.option_flows)


def health_of_day(root: str, date: str, *, config: Config | AnalyticsConfig | None = None):
    """`mia health`: the data-quality metrics of a recorded day, from the standard fold's monitor
    (warmed up as live was, so they equal what the recorder saw)."""
    day = Day(root, date)
    fold = Fold(config)
    for batch in fold.day_batches(day.log, day.date):
        fold.on_batch(batch)
    return fold.monitor.metrics()
