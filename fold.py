"""The standard fold: one owner of the reducers every mode runs.

`mia record`, `mia replay`, `mia levels`, `mia report`, `mia health` (and multi-day studies and
imported days) all build one `Fold` from the config and feed it the day's input rows in log
order. The fold owns

- the standard reducers (order flow with its book, gamma, data-quality monitor), built from
  their config tables, in a fixed order that breaks `ts_recv` ties between their outputs;
- their warm-up: a recording that ran through UTC midnight carried its state into the next day,
  so a day is folded after the earlier days of that chain (`history_dates`), live on start and
  in every replay alike — which is why live and replay start each day from the same state;
- the window: a replay of [start, end) folds the day from its first row (state needs it) but
  summarises only the window;
- the derived events of each batch, merged across reducers by `ts_recv` (stable).

It joins `analytics` (pure reducers) with `data` (the Polygon chain and indices parsers the gamma
and volatility reducers are handed, the CFE calendar of VX expiries), which is why it lives at
the top of the package and not in either.
"""

from __future__ import annotations

import logging
from typing import Iterator

import numpy as np

from mia.analytics.flow import FlowReducer
from mia.analytics.gamma import GammaReducer
from mia.analytics.monitor import MonitorReducer
from mia.analytics.orderflow import InstrumentSummary, OrderflowReducer
from mia.analytics.volatility import IvSurfaceReducer, TermStructureReducer
from mia.config import AnalyticsConfig, Config
from mia.data.cfe import vx_expiry
from mia.data.polygon.models import chain_columns, index_values
from mia.engine.clock import previous_day
from mia.engine.columns import ColumnBatch
from mia.engine.errors import NoDataError
from mia.engine.events import K_INSTRUMENT, Event
from mia.engine.log import EventLog

logger = logging.getLogger(__name__)

__all__ = ["Fold", "history_dates", "LIVE_STREAMS", "INPUT_STREAMS"]

LIVE_STREAMS = ("live",)  # what the live reducers saw; what `--check` recomputes from
# every input a replay folds by default: what the sources sent live, history imported from
# Sierra or Databento files, gaps backfilled after the fact (ts_recv = ts_event for both), and
# the ChainSnapshots `mia migrate` wrote for a day recorded before the poller logged them (each
# at its chain's final page: the reducers read them instead of parsing the pages)
INPUT_STREAMS = ("live", "import", "backfill", "chains")


def history_dates(log: EventLog, date: str) -> list[str]:
    """Earlier days whose input the live reducers had already folded when `date` began: the
    chain of days over which one recording ran through UTC midnight into `date`, oldest first."""
    known = set(log.dates())
    out: list[str] = []
    day = date
    while True:
        prev = previous_day(day)
        if prev not in known or day not in known:
            return out
        firsts = [s for s in log.segments(day) if s.stream == "live"]
        if not firsts:
            return out
        first = min(firsts, key=lambda s: s.created_ns)
        if not any(s.stream == "live" and s.recording_id == first.recording_id
                   for s in log.segments(prev)):
            return out
        out.insert(0, prev)
        day = prev


def _by_ts_recv(ev: Event) -> int:
    return ev.ts_recv


class Fold:
    """The standard reducers of one configuration, their warm-up and their window.

    A `Reducer` itself (`on_batch(batch) -> derived events`), so the `Pipeline` drives it live
    and in replay alike.
    """

    def __init__(self, config: AnalyticsConfig | Config | None = None) -> None:
        if isinstance(config, Config):
            config = config.analytics
        self.config: AnalyticsConfig = config or AnalyticsConfig()
        self.orderflow = OrderflowReducer(self.config.orderflow)
        self.gamma = GammaReducer(chain_columns, self.config.gamma, index_values=index_values,
                                  flow=self.config.flow)
        self.monitor = MonitorReducer(self.config.monitor)
        vol = self.config.volatility
        self.term = TermStructureReducer(vol, index_values=index_values, vx_expiry=vx_expiry)
        self.surface = IvSurfaceReducer(chain_columns, vol, rate=self.config.gamma.rate,
                                        dividend_yield=self.config.gamma.dividend_yield,
                                        index_values=index_values)
        # option flow takes each contract's greeks from the chains the gamma reducer computed
        # in the same batch (at their rows): it runs after it
        self.flow = FlowReducer(self.config.flow, greeks=self.gamma)
        # the order is part of the output: it breaks ts_recv ties between derived events
        # (new reducers go last, so the derived events of earlier ones keep their order)
        self.reducers = (self.orderflow, self.gamma, self.monitor, self.term, self.surface, self.flow)
        self.warmup_days: list[str] = []
        self.warmup_rows = 0
        self.rows = 0
        self._warmed_up: str | None = None
        self._window_start: int | None = None
        self._window_flow: OrderflowReducer | None = None

    # --- the fold ----------------------------------------------------------------------------

    def on_batch(self, batch: ColumnBatch) -> list[Event]:
        """Fold one batch of input rows; the derived events, merged by ts_recv (stable)."""
        derived: list[Event] = []
        for reducer in self.reducers:
            derived.extend(reducer.on_batch(batch))
        if len(derived) > 1:
            derived.sort(key=_by_ts_recv)
        if self._window_flow is not None:
            self._fold_window(batch)
        self.rows += len(batch)
        return derived

    def warm_up(self, log: EventLog, date: str, *, through_date: bool = False,
                end: int | None = None) -> list[str]:
        """Fold the earlier days one recording ran through into `date` (and, with
        `through_date`, what `date` already holds: a recorder restarting mid-day). Their derived
        events were logged when they were computed; here only the state matters. `end`
        (exclusive, ts_recv ns): only rows received before it — a recorder warms up in the
        background after its own segments exist, and must not fold its own rows twice."""
        if self._warmed_up is not None:
            raise RuntimeError(f"fold already warmed up for {self._warmed_up}")
        self._warmed_up = date
        days = history_dates(log, date)
        if through_date and date in log.dates():
            days = days + [date]
        for day in days:
            try:
                for batch in log.read_batches(day, end=end, streams=list(LIVE_STREAMS)):
                    for reducer in self.reducers:
                        reducer.on_batch(batch)
                    self.warmup_rows += len(batch)
            except NoDataError:  # a day folder with no input segment
                continue
        self.warmup_days = [d for d in days if d != date]
        if self.warmup_rows:
            logger.info("warm-up date=%s days=%s rows=%d", date, days, self.warmup_rows)
        return days

    def day_batches(self, log: EventLog, date: str, *, end: int | None = None,
                    max_rows: int | None = None,
                    streams: tuple[str, ...] = LIVE_STREAMS) -> Iterator[ColumnBatch]:
        """Warm up (unless done), then the day's input batches of `streams`, merged by ts_recv,
        up to `end` (exclusive) for the caller to fold (through `on_batch` or a `Pipeline`).
        `max_rows=1`: one frame a batch."""
        if self._warmed_up is None:
            self.warm_up(log, date)
        rows = {} if max_rows is None else {"max_rows": max_rows}
        yield from log.read_batches(date, end=end, streams=list(streams), **rows)

    # --- the window --------------------------------------------------------------------------

    def open_window(self, start: int | None) -> None:
        """Summarise only rows at or after `start` (None: everything folded from here on).

        The reducers keep folding every row; a separate order-flow reducer sees the window
        alone (with the instrument declarations before it, which name its instruments)."""
        self._window_start = start
        self._window_flow = OrderflowReducer(self.config.orderflow)

    def _fold_window(self, batch: ColumnBatch) -> None:
        start = self._window_start
        if start is None or (len(batch) and int(batch.ts_recv[0]) >= start):
            self._window_flow.on_batch(batch)
            return
        keep = (batch.ts_recv >= start) | (batch.kind == K_INSTRUMENT)
        if keep.any():
            self._window_flow.on_batch(batch.take(keep))

    def summary(self) -> dict[int, InstrumentSummary]:
        """Order-flow totals per instrument: of the window when one is open, else of the day
        (without the days folded in warm-up: a window is opened after them)."""
        flow = self._window_flow or self.orderflow
        return flow.summary()

    # --- start-up ----------------------------------------------------------------------------

    @staticmethod
    def compile_rows() -> list[Event]:
        """A few typed input rows that reach every order-flow, book and option-flow kernel
        (`compile`, and `mia warmup`'s trip through a real log)."""
        from mia.engine.events import (
            BATCH_BEGIN,
            BATCH_END,
            BOOK_SNAPSHOT,
            BOOK_UPSERT,
            BookLevel,
            Instrument,
            OptionQuote,
            OptionTrade,
            Quote,
            RecordingEnded,
            Trade,
        )

        t = 1_700_000_000_000_000_000
        occ, expiry = "O:SPXW231115C04500000", t + 86_400 * 10**9
        return [
            Instrument(t, t, 1, "ESZ6", "warm-up", tick_size=0.25),
            BookLevel(t, t, 1, 1, 99.75, 5.0, BOOK_SNAPSHOT, 0, 1, BATCH_BEGIN),
            BookLevel(t, t, 1, -1, 100.25, 5.0, BOOK_SNAPSHOT, 0, 1, BATCH_END),
            Quote(t, t, 1, 99.75, 5.0, 100.25, 5.0),
            Trade(t, t, 1, 100.25, 2.0, 0),
            BookLevel(t + 1, t + 1, 1, 1, 99.75, 3.0, BOOK_UPSERT, 0, 1, BATCH_BEGIN | BATCH_END),
            OptionQuote(t + 2, t + 2, occ, "SPX", 1, 4500.0, expiry, 10.0, 5.0, 10.5, 5.0),
            OptionTrade(t + 3, t + 3, occ, "SPX", 1, 4500.0, expiry, 10.5, 2.0),
            Trade(t + 61 * 10**9, t + 61 * 10**9, 1, 100.0, 1.0, -1),
            RecordingEnded(t + 62 * 10**9, t + 62 * 10**9, "warm-up", "stopped"),
        ]

    @staticmethod
    def compile(config: AnalyticsConfig | Config | None = None) -> None:
        """Compile (or load from numba's cache) every reducer kernel on a throwaway fold.

        The recorder runs this in a background thread while its sources and log start (on a
        cold cache the first batch would otherwise stall the event loop, and the DTC
        heartbeats, for seconds); `mia warmup` runs it ahead of time."""
        from mia.analytics._gamma_synth import synthetic_chain
        from mia.analytics._vol_kernels import curve_figures
        from mia.analytics.gamma import compute_gamma
        from mia.analytics.volatility import compute_surface

        fold = Fold(config)
        rows = Fold.compile_rows()
        fold.on_batch(ColumnBatch.from_events(rows, np.arange(len(rows))))
        chain = synthetic_chain(200, seed=0)
        compute_gamma(chain, fold.config.gamma)
        compute_surface(chain, chain.spot, fold.config.volatility)  # IV inversion, smiles
        curve_figures(np.array([10.0, 40.0]), np.array([15.0, 16.0]), 14.0, 30.0)
