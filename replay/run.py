"""`mia replay`: a recorded day folded through the standard fold, optionally paced, published
and checked against what the recorder computed live."""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import msgspec
import numpy as np

from mia.analytics.flow import UnderlyingFlow, flow_summary
from mia.analytics.orderflow import InstrumentSummary
from mia.analytics.volatility import VolatilitySummary, volatility_summary
from mia.config import AnalyticsConfig, Config
from mia.data.polygon.stream import FrameCheck, check_stream_frames
from mia.engine.clock import NS_PER_S
from mia.engine.errors import UsageError
from mia.engine.events import (
    K_BOOK_LEVEL,
    K_INSTRUMENT,
    K_QUOTE,
    K_TRADE,
    Event,
    GammaLevels,
    IvSurface,
    TermStructure,
)
from mia.engine.pipeline import Pipeline
from mia.fold import LIVE_STREAMS, Fold
from mia.replay.check import ChainCheck, CrashedRun, check_chain_snapshots, check_derived
from mia.replay.day import Day, time_span

__all__ = ["replay_day", "ReplayResult", "GammaSummary", "SPEEDS", "summary_lines"]

SPEEDS = {"max": 0.0, "1": 1.0, "10": 10.0}  # --speed: market seconds per wall second (0: no pacing)
MARKET_KINDS = (K_TRADE, K_QUOTE, K_BOOK_LEVEL)


class GammaSummary(msgspec.Struct, frozen=True, kw_only=True):
    """The last GammaLevels of an underlying in the window (the `gamma` entry of --json)."""

    ts: int
    spot: float
    zero_gamma: float
    call_wall: float
    put_wall: float
    max_pain: float
    total_gex: float
    pcr_oi: float
    pcr_volume: float
    dealer_bias: float
    stale: bool

    @classmethod
    def of(cls, g: GammaLevels) -> "GammaSummary":
        return cls(ts=g.ts_event, spot=g.spot, zero_gamma=g.zero_gamma, call_wall=g.call_wall,
                   put_wall=g.put_wall, max_pain=g.max_pain, total_gex=g.total_gex,
                   pcr_oi=g.pcr_oi, pcr_volume=g.pcr_volume, dealer_bias=g.dealer_bias,
                   stale=g.stale)


class ReplayResult(msgspec.Struct, kw_only=True):
    """What `mia replay` found; `mia replay --json` prints `json()` (the public contract)."""

    date: str
    events: int
    instruments: dict[str, InstrumentSummary] = {}
    gamma: dict[str, GammaSummary] = {}
    volatility: VolatilitySummary = VolatilitySummary()
    flow: dict[str, UnderlyingFlow] = {}  # option flow per underlying (Polygon streams)
    check: str | None = None
    mismatch: str | None = None
    derived: int = 0
    seconds: float = 0.0
    warmup_days: list[str] = []  # earlier days folded first (a recording through midnight)
    crashed_runs: list[CrashedRun] = []  # with --check: runs verified in part
    chains: ChainCheck | None = None  # with --check --deep: ChainSnapshots against their pages
    frames: FrameCheck | None = None  # with --check --deep: Polygon stream frames against their events

    def json(self) -> dict:
        """The --json object: {"date", "events", "instruments", "gamma", "volatility", "flow",
        "check", "crashed_runs"} (an instrument's figures without its symbol: the symbol is its
        key). "flow": {UNDERLYING: {"trades", "signed_premium", "unusual", "flow_zero_gamma"}}
        over the window's OptionFlow bars and UnusualTrades, and the flow-adjusted zero gamma of
        the window's last GammaLevels; {} on a day without option streams."""
        instruments = {sym: {f: getattr(s, f) for f in s.__struct_fields__ if f != "symbol"}
                       for sym, s in self.instruments.items()}
        return {"date": self.date, "events": self.events, "instruments": instruments,
                "gamma": self.gamma, "volatility": self.volatility, "flow": self.flow,
                "check": self.check,
                "crashed_runs": self.crashed_runs}


def _live_derived(day: Day, config, start: int | None, end: int | None) -> list[Event]:
    """The derived events of a fold over the live stream alone (what `--check` compares when
    the replay itself also folded imported or backfilled rows)."""
    fold = Fold(config)
    out: list[Event] = []
    for batch in fold.day_batches(day.log, day.date, end=end, streams=LIVE_STREAMS):
        out.extend(d for d in fold.on_batch(batch) if start is None or d.ts_recv >= start)
    return out


def summary_lines(result: ReplayResult) -> list[str]:
    """The replay's figures for people: one line per instrument and per underlying."""
    lines = []
    for sym, s in result.instruments.items():
        lines.append(f"  {sym:8} trades {s.trades:>7,} vol {s.volume:>9,.0f} "
                     f"delta {s.cum_delta:>+9,.0f} vwap {s.vwap:.2f} poc {s.poc:.2f} "
                     f"va {s.va_low:.2f}-{s.va_high:.2f}")
    for u, g in result.gamma.items():
        zero = "none" if math.isnan(g.zero_gamma) else f"{g.zero_gamma:.2f}"
        lines.append(f"  {u:8} spot {g.spot:.2f} zero-gamma {zero} call wall {g.call_wall:.0f} "
                     f"put wall {g.put_wall:.0f} max pain {g.max_pain:.0f} "
                     f"GEX {g.total_gex / 1e9:+.2f}bn/1% P/C OI {g.pcr_oi:.2f} "
                     f"bias {g.dealer_bias:+.2f}" + (" STALE" if g.stale else ""))
    for u, f in result.flow.items():
        zero = "none" if math.isnan(f.flow_zero_gamma) else f"{f.flow_zero_gamma:.2f}"
        lines.append(f"  {u:8} option trades {f.trades:>7,} signed premium {f.signed_premium / 1e6:+,.2f}$m "
                     f"unusual {f.unusual:,} flow zero-gamma {zero}")
    return lines


def replay_day(
    root: str,
    date: str,
    *,
    start: int | None = None,
    end: int | None = None,
    symbols: Sequence[str] | None = None,
    speed: str = "max",
    publish: str | None = None,
    check: bool = False,
    config: Config | AnalyticsConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    live_only: bool = False,
    deep: bool = False,
) -> ReplayResult:
    """Fold a recorded day through the standard fold; optionally pace, publish and check.

    The fold always starts at the day's first row (after the days a recording carried into it):
    its state needs them (symbols, session totals, the last chain). [start, end) bounds what is
    summarised, paced, published and checked. Imported and backfilled history is folded with
    the live rows unless `live_only`; `check` always recomputes from the live stream alone, as
    the recorder computed it. `deep` (with `check`) also re-parses every chain snapshot's raw
    pages and proves the stored ChainSnapshots equal to them (`check_chain_snapshots`); the
    first difference makes the check a mismatch.
    """
    t0 = time.perf_counter()
    day = Day(root, date)
    ids = day._instrument_ids(symbols)
    factor = SPEEDS.get(str(speed))
    if factor is None:
        raise UsageError(f"bad speed {speed!r}: expected 1, 10 or max")
    streams = LIVE_STREAMS if live_only else day.input_streams()
    fold = Fold(config)
    fold.warm_up(day.log, day.date)
    if start is not None or fold.warmup_days:
        fold.open_window(start)  # the summary covers the window (or the day) alone
    publisher = None
    if publish:
        from mia.engine.bus import Publisher

        publisher = Publisher(publish)
    pipeline = Pipeline([fold], publisher=publisher)
    span_lo, span_hi = time_span(day, start, end) if progress else (0, 0)
    events = 0
    derived_in_window: list[Event] = []
    wall0 = first_ts = None
    try:
        # paced replays move frame by frame (~100 ms of market time), not in 16k-row batches
        for batch in fold.day_batches(day.log, day.date, end=end, max_rows=1 if factor else None,
                                      streams=streams):
            sel = None if start is None else batch.ts_recv >= start
            n_in = len(batch) if sel is None else int(sel.sum())
            if factor and n_in:
                if wall0 is None:
                    wall0 = time.monotonic()
                    first_ts = int(batch.ts_recv[0] if sel is None else batch.ts_recv[sel][0])
                ahead = (int(batch.ts_recv[-1]) - first_ts) / NS_PER_S / factor - (time.monotonic() - wall0)
                if ahead > 0:
                    time.sleep(ahead)
            if publisher is not None:
                # declarations before the window too: they name the topics of the window's rows
                rows = (range(len(batch)) if sel is None
                        else np.flatnonzero(sel | (batch.kind == K_INSTRUMENT)).tolist())
                for i in rows:
                    ev = batch.event(i)
                    if ids is None or int(batch.kind[i]) not in MARKET_KINDS or ev.instrument in ids:
                        publisher.publish("live", int(batch.seq[i]), ev)
            derived = pipeline.reduce(batch)
            events += n_in
            derived_in_window.extend(d for d in derived if start is None or d.ts_recv >= start)
            if progress and n_in:
                progress(min(int(batch.ts_recv[-1]) - span_lo, span_hi - span_lo), span_hi - span_lo)
    finally:
        if publisher is not None:
            publisher.close()

    result = ReplayResult(date=day.date, events=events, derived=len(derived_in_window),
                          warmup_days=fold.warmup_days)
    result.instruments = {s.symbol or str(inst): s for inst, s in fold.summary().items()
                          if ids is None or inst in ids}
    last_gamma: dict[str, GammaLevels] = {}
    for ev in derived_in_window:
        if isinstance(ev, GammaLevels):
            last_gamma[ev.underlying] = ev
    result.gamma = {u: GammaSummary.of(g) for u, g in last_gamma.items()}
    result.flow = flow_summary(derived_in_window, last_gamma)
    result.volatility = volatility_summary(
        d for d in derived_in_window if isinstance(d, (TermStructure, IvSurface)))
    if check:
        recomputed = (derived_in_window if streams == LIVE_STREAMS
                      else _live_derived(day, config, start, end))
        verdict = check_derived(day.log, day.date, recomputed, start=start, end=end)
        result.check, result.mismatch = verdict.check, verdict.mismatch
        result.crashed_runs = verdict.crashed_runs
        if deep:
            result.chains = check_chain_snapshots(day.log, day.date)
            if result.check == "ok" and result.chains.check != "ok":
                result.check, result.mismatch = result.chains.check, result.chains.mismatch
            result.frames = check_stream_frames(ev for _, ev in day.log.read(day.date, streams=LIVE_STREAMS))
            if result.check == "ok" and not result.frames.ok:
                result.check, result.mismatch = "mismatch", result.frames.mismatch
    result.seconds = time.perf_counter() - t0
    return result
