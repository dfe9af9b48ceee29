"""Replay mode: read a recorded day and drive the same pipeline; the researcher's Python API.

    import mia.replay
    day = mia.replay.open_day("./mia-data", "2026-11-20")
    for ev in day.events(kinds=["Trade"], symbols=["ESZ6"]):
        ...
    trades = day.columns("Trade")          # dict of numpy arrays
    df = day.to_pandas("Trade")            # when pandas is installed
    bars = day.run(MyReducer())            # your own reducer over the day

What `mia replay --check` proves, and where it cannot:

- Reducer state continues across UTC midnight when one recording runs through it, so a day whose
  first input segment continues a recording of the day before is replayed after the earlier days
  of that chain (`history_dates`); the recorder warms up from the same days on start, so live
  and replay always start a day from the same state.
- A run that was killed (no RecordingEnded) lost its open frames: the live reducers saw input rows
  that never reached the log, and derived events of its last moments may be missing from the
  derived log. For such a run (and for one still being written) the check compares derived events
  only up to the last row that survived in both of its segments, and excludes the span from there
  to the next run's start on both sides. The run is reported in `ReplayResult.crashed_runs` with
  the instant it was verified until; everything outside those spans must match bit for bit.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from mia.engine.columns import COLUMN_SPEC, ColumnBatch
from mia.config import Config
from mia.engine.errors import UsageError
from mia.engine.events import (
    DERIVED_KINDS,
    K_BOOK_LEVEL,
    K_INSTRUMENT,
    K_QUOTE,
    K_TRADE,
    KIND_BY_NAME,
    KIND_NAMES,
    TYPE_OF_KIND,
    BookLevel,
    Event,
    GammaLevels,
    Instrument,
    Quote,
    Trade,
    kind_of,
)
from mia.engine.log import EventLog
from mia.engine.pipeline import Pipeline

__all__ = ["open_day", "Day", "replay_day", "ReplayResult", "parse_date", "window_ns", "history_dates",
           "crashed_runs"]

NS = 1_000_000_000


def parse_date(date: str | dt.date) -> str:
    """'YYYY-MM-DD' (or a date) -> 'YYYY-MM-DD'; anything else is a UsageError."""
    if isinstance(date, dt.date):
        return date.isoformat()
    try:
        return dt.date.fromisoformat(str(date)).isoformat()
    except ValueError:
        raise UsageError(f"bad date {date!r}: expected YYYY-MM-DD") from None


def window_ns(date: str, start: str | None, end: str | None) -> tuple[int | None, int | None]:
    """--from/--to as HH:MM (UTC, on `date`) -> ns bounds of [start, end)."""

    def at(hhmm: str | None) -> int | None:
        if hhmm is None:
            return None
        try:
            t = dt.time.fromisoformat(hhmm)
        except ValueError:
            raise UsageError(f"bad time {hhmm!r}: expected HH:MM (UTC)") from None
        moment = dt.datetime.combine(dt.date.fromisoformat(date), t, tzinfo=dt.timezone.utc)
        return int(moment.timestamp()) * NS

    lo, hi = at(start), at(end)
    if lo is not None and hi is not None and hi <= lo:
        raise UsageError(f"empty window: --from {start} is not before --to {end}")
    return lo, hi


def _kinds(kinds: Iterable[str | int | type] | None) -> set[int] | None:
    if kinds is None:
        return None
    out = set()
    for k in kinds:
        if isinstance(k, int):
            out.add(k)
        elif isinstance(k, str):
            if k not in KIND_BY_NAME:
                raise UsageError(f"unknown event kind {k!r}; known: {', '.join(KIND_BY_NAME)}")
            out.add(KIND_BY_NAME[k])
        else:
            out.add(kind_of_type(k))
    return out


def kind_of_type(t: type) -> int:
    return t.__struct_config__.tag  # type: ignore[attr-defined]


def event_from_row(batch: ColumnBatch, i: int) -> Event:
    """Rebuild the event of row i (market rows from columns, others from objects)."""
    k = int(batch.kind[i])
    if k == K_TRADE:
        return Trade(int(batch.ts_event[i]), int(batch.ts_recv[i]), int(batch.instrument[i]),
                     float(batch.price[i]), float(batch.size[i]), int(batch.side[i]))
    if k == K_QUOTE:
        return Quote(int(batch.ts_event[i]), int(batch.ts_recv[i]), int(batch.instrument[i]),
                     float(batch.bid[i]), float(batch.bid_size[i]), float(batch.ask[i]),
                     float(batch.ask_size[i]))
    if k == K_BOOK_LEVEL:
        return BookLevel(int(batch.ts_event[i]), int(batch.ts_recv[i]), int(batch.instrument[i]),
                         int(batch.side[i]), float(batch.price[i]), float(batch.size[i]),
                         int(batch.action[i]), int(batch.level[i]), int(batch.orders[i]),
                         int(batch.flags[i]))
    return batch.objects[int(batch.obj[i])]


# --- the researcher's API ----------------------------------------------------------------------


class Day:
    """One recorded day: iterate events, take numpy columns per kind, run your own reducer."""

    def __init__(self, root: str, date: str | dt.date) -> None:
        self.root = str(root)
        self.date = parse_date(date)
        self.log = EventLog(self.root)
        if self.date not in self.log.dates():
            from mia.engine.errors import NoDataError

            raise NoDataError(f"no data for {self.date} under {self.root}")
        self._symbols: dict[int, str] | None = None

    def symbols(self) -> dict[int, str]:
        """instrument id -> symbol, from the day's Instrument events."""
        if self._symbols is None:
            self._symbols = {ev.instrument: ev.symbol
                             for _, ev in self.log.read(self.date, kinds=[Instrument])}
        return self._symbols

    def _instrument_ids(self, symbols: Sequence[str] | None) -> set[int] | None:
        if symbols is None:
            return None
        wanted = set(symbols)
        ids = {i for i, s in self.symbols().items() if s in wanted}
        unknown = wanted - set(self.symbols().values())
        if unknown:
            raise UsageError(f"no instrument {', '.join(sorted(unknown))} on {self.date}; "
                             f"known: {', '.join(sorted(set(self.symbols().values())))}")
        return ids

    def events(self, kinds=None, symbols: Sequence[str] | None = None, start=None, end=None,
               streams: Sequence[str] | None = None) -> Iterator[Event]:
        """Events in log order; `kinds` are names ("Trade"), kind ints or classes."""
        for _, ev in self.log.read(self.date, start=start, end=end, kinds=_kinds(kinds),
                                   instruments=self._instrument_ids(symbols), streams=streams):
            yield ev

    def __iter__(self) -> Iterator[Event]:
        return self.events()

    def batches(self, start=None, end=None, streams: Sequence[str] | None = ("live",)) -> Iterator[ColumnBatch]:
        return self.log.read_batches(self.date, start=start, end=end, streams=streams)

    def columns(self, kind: str | type, symbols: Sequence[str] | None = None, start=None,
                end=None) -> dict[str, np.ndarray]:
        """numpy columns of one kind: every field of the event, plus `seq` for market kinds."""
        k = next(iter(_kinds([kind])))
        ids = self._instrument_ids(symbols)
        if k in (K_TRADE, K_QUOTE, K_BOOK_LEVEL):
            parts = []
            streams = ("derived",) if k in DERIVED_KINDS else None
            for b in self.log.read_batches(self.date, start=start, end=end, kinds=[k],
                                           instruments=ids, streams=streams):
                sel = b.kind == k
                parts.append({name: getattr(b, name)[sel] for name in COLUMN_SPEC})
            names = ["seq", *TYPE_OF_KIND[k].__struct_fields__]
            return {n: (np.concatenate([p[n] for p in parts]) if parts
                        else np.empty(0, COLUMN_SPEC[n][0])) for n in names}
        rows = [ev for ev in self.events(kinds=[k], symbols=symbols, start=start, end=end)]
        cls = TYPE_OF_KIND[k]
        out: dict[str, np.ndarray] = {}
        for name in cls.__struct_fields__:
            values = [getattr(ev, name) for ev in rows]
            out[name] = np.array(values) if values and not isinstance(values[0], (list, bytes)) \
                else np.array(values, dtype=object)
        return out

    def to_pandas(self, kind: str | type, symbols: Sequence[str] | None = None, start=None, end=None):
        """A DataFrame of one kind, timestamps as UTC datetimes and a `symbol` column."""
        try:
            import pandas as pd
        except ImportError:
            raise UsageError("to_pandas needs pandas: pip install pandas") from None
        cols = self.columns(kind, symbols=symbols, start=start, end=end)
        df = pd.DataFrame(cols)
        for ts in ("ts_event", "ts_recv"):
            if ts in df:
                df[ts] = pd.to_datetime(df[ts], unit="ns", utc=True)
        if "instrument" in df:
            df["symbol"] = df["instrument"].map(self.symbols())
        return df

    def run(self, reducer: Any, start=None, end=None) -> list:
        """Run your own reducer over the day's input: an object with `on_batch(batch)` or a
        callable taking a ColumnBatch. Returns everything it returned, concatenated."""
        step: Callable[[ColumnBatch], Any] = getattr(reducer, "on_batch", reducer)
        out: list = []
        for batch in self.batches(start=start, end=end):
            got = step(batch)
            if got:
                out.extend(got)
        return out


def time_span(day: Day, start: int | None = None, end: int | None = None) -> tuple[int, int]:
    """Cheap ts_recv bounds of a day's input for progress bars (no frame is read): from the
    first live segment's creation (or `start`) to the last write of any live segment (or `end`)."""
    segs = [s for s in day.log.segments(day.date) if s.stream == "live"]
    lo = start if start is not None else min(s.created_ns for s in segs)
    hi = end if end is not None else max(s.path.stat().st_mtime_ns for s in segs)
    return lo, max(hi, lo + 1)


def open_day(root: str, date: str | dt.date) -> Day:
    """The researcher's entry point: one recorded day under `root`."""
    return Day(root, date)


# --- mia replay --------------------------------------------------------------------------------


def history_dates(log: EventLog, date: str) -> list[str]:
    """Earlier days whose input the live reducers had already folded when `date` began: the
    chain of days over which one recording ran through UTC midnight into `date`, oldest first."""
    import datetime as _dt

    known = set(log.dates())
    out: list[str] = []
    day = date
    while True:
        prev = (_dt.date.fromisoformat(day) - _dt.timedelta(days=1)).isoformat()
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


def crashed_runs(log: EventLog, date: str) -> list[dict]:
    """Runs of `date` whose input segment has no RecordingEnded (killed, torn or still open):
    recording id, state, `verified_until` (ts_recv of the last row that survived in both its
    input and derived segments) and `next_start` (the next run's first row, or None)."""
    stats = log.inspect(date)
    live = sorted((s for s in stats if s.info.stream == "live"), key=lambda s: s.info.created_ns)
    derived = {s.info.recording_id: s for s in stats if s.info.stream == "derived"}
    out = []
    for i, st in enumerate(live):
        if st.state == "clean":
            continue
        until = st.last_ts if st.last_ts is not None else st.info.created_ns
        d = derived.get(st.info.recording_id)
        if d is not None and d.state != "clean" and d.last_ts is not None:
            until = min(until, d.last_ts)
        nxt = next((s.first_ts for s in live[i + 1:] if s.first_ts is not None), None)
        out.append({"recording_id": st.info.recording_id, "state": st.state,
                    "verified_until": until, "next_start": nxt})
    return out


def _outside(spans: list[tuple[int, int | None]], ts: int) -> bool:
    return not any(lo <= ts and (hi is None or ts < hi) for lo, hi in spans)



@dataclass
class ReplayResult:
    date: str
    events: int
    instruments: dict[str, dict] = field(default_factory=dict)
    gamma: dict[str, dict] = field(default_factory=dict)
    check: str | None = None
    mismatch: str | None = None
    derived: int = 0
    seconds: float = 0.0
    warmup_days: list[str] = field(default_factory=list)  # earlier days folded first (midnight)
    crashed_runs: list[dict] = field(default_factory=list)  # with --check: runs verified in part

    def to_json(self) -> dict:
        return {"date": self.date, "events": self.events, "instruments": self.instruments,
                "gamma": self.gamma, "check": self.check, "crashed_runs": self.crashed_runs}


def _gamma_summary(g: GammaLevels) -> dict:
    return {"ts": g.ts_event, "spot": g.spot, "zero_gamma": g.zero_gamma, "call_wall": g.call_wall,
            "put_wall": g.put_wall, "max_pain": g.max_pain, "total_gex": g.total_gex,
            "pcr_oi": g.pcr_oi, "pcr_volume": g.pcr_volume, "dealer_bias": g.dealer_bias,
            "stale": g.stale}


def compare_derived(recorded: Sequence[Event], recomputed: Sequence[Event]) -> str | None:
    """None when equal, else a line naming the first difference (per kind, in order).

    Events are compared by their encodings: bitwise, so NaN equals NaN and -0.0 differs from 0.0.
    """
    from mia.engine.events import EventCodec

    encode = EventCodec().encode
    by_kind: dict[int, tuple[list, list]] = {}
    for ev in recorded:
        by_kind.setdefault(kind_of(ev), ([], []))[0].append(ev)
    for ev in recomputed:
        by_kind.setdefault(kind_of(ev), ([], []))[1].append(ev)
    for k, (rec, new) in sorted(by_kind.items()):
        for i, (a, b) in enumerate(zip(rec, new)):
            if encode(a) != encode(b):
                fields = [f for f in a.__struct_fields__ if repr(getattr(a, f)) != repr(getattr(b, f))]
                return (f"{KIND_NAMES[k]} #{i} at ts_recv {a.ts_recv} differs in "
                        f"{', '.join(fields) or 'encoding'}: recorded {[getattr(a, f) for f in fields][:3]} "
                        f"replayed {[getattr(b, f) for f in fields][:3]}")
        if len(rec) != len(new):
            i = min(len(rec), len(new))
            extra = (rec if len(rec) > len(new) else new)[i]
            side = "recorded only" if len(rec) > len(new) else "replayed only"
            return f"{KIND_NAMES[k]}: {len(rec)} recorded, {len(new)} replayed; first {side}: #{i} at ts_recv {extra.ts_recv}"
    return None


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
    config: Config | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Drive the standard reducers over a recorded day; optionally publish and check.

    With `check`, reducers start at the day's first event (their state needs it) and the derived
    events whose ts_recv falls in the window are compared with those recorded live.
    """
    from mia.replay.reducers import find_reducer, standard_reducers

    t0 = time.perf_counter()
    day = Day(root, date)
    config = config or Config()
    ids = day._instrument_ids(symbols)
    reducers = standard_reducers(config)
    publisher = None
    if publish:
        from mia.engine.bus import Publisher

        publisher = Publisher(publish)
    pipeline = Pipeline(reducers, publisher=publisher)
    factor = {"max": 0.0, "1": 1.0, "10": 10.0}.get(str(speed))
    if factor is None:
        raise UsageError(f"bad speed {speed!r}: expected 1, 10 or max")

    # the reducers always start at the day's first row (their state needs it: symbols, session
    # totals, the last chain); the window bounds what is summarised, paced, published, checked
    span_lo, span_hi = time_span(day, start, end) if progress else (0, 0)
    events = 0
    derived_in_window: list[Event] = []
    wall0 = None
    first_ts = None
    summary_of = find_reducer(reducers, "OrderflowReducer")
    history = history_dates(day.log, day.date)
    for earlier in history:  # live state ran through midnight: start from the same state
        for batch in day.log.read_batches(earlier, streams=["live"]):
            for reducer in reducers:
                reducer.on_batch(batch)
    window_flow = None
    if start is not None or history:
        # the summary covers the window (or the day) alone
        from mia.replay.reducers import standard_reducers as fresh

        window_flow = find_reducer(fresh(config), "OrderflowReducer")
    try:
        # paced replays move frame by frame (~100 ms of market time), not in 16k-row batches
        rows = {} if not factor else {"max_rows": 1}
        for batch in day.log.read_batches(day.date, end=end, streams=["live"], **rows):
            sel = None if start is None else batch.ts_recv >= start
            n_in = len(batch) if sel is None else int(sel.sum())
            if factor and n_in:
                ts = int(batch.ts_recv[-1])
                if wall0 is None:
                    first = int(batch.ts_recv[0] if sel is None else batch.ts_recv[sel][0])
                    wall0, first_ts = time.monotonic(), first
                ahead = (ts - first_ts) / NS / factor - (time.monotonic() - wall0)
                if ahead > 0:
                    time.sleep(ahead)
            if publisher is not None:
                # declarations before the window too: they name the topics of the window's rows
                rows = (range(len(batch)) if sel is None
                        else np.flatnonzero(sel | (batch.kind == K_INSTRUMENT)).tolist())
                for i in rows:
                    ev = event_from_row(batch, i)
                    if ids is None or getattr(ev, "instrument", -1) in ids or kind_of(ev) not in (K_TRADE, K_QUOTE, K_BOOK_LEVEL):
                        publisher.publish("live", int(batch.seq[i]), ev)
            derived = pipeline.reduce(batch)
            events += n_in
            if window_flow is not None:
                if sel is None:
                    window_flow.on_batch(batch)
                else:  # declarations before the window still name the window's instruments
                    keep = sel | (batch.kind == K_INSTRUMENT)
                    if keep.any():
                        window_flow.on_batch(batch.take(keep))
            derived_in_window.extend(d for d in derived if start is None or d.ts_recv >= start)
            if progress and n_in:
                progress(min(int(batch.ts_recv[-1]) - span_lo, span_hi - span_lo), span_hi - span_lo)
    finally:
        if publisher is not None:
            publisher.close()

    result = ReplayResult(date=day.date, events=events, derived=len(derived_in_window),
                          warmup_days=history)
    flow = window_flow or summary_of
    if flow is not None:
        for inst, s in flow.summary().items():
            if ids is not None and inst not in ids:
                continue
            sym = s.get("symbol") or str(inst)
            result.instruments[sym] = {k: s[k] for k in ("trades", "volume", "buy_volume",
                                       "sell_volume", "cum_delta", "vwap", "poc", "va_low",
                                       "va_high", "high", "low", "last")}
    last_gamma: dict[str, GammaLevels] = {}
    for ev in derived_in_window:
        if isinstance(ev, GammaLevels):
            last_gamma[ev.underlying] = ev
    result.gamma = {u: _gamma_summary(g) for u, g in last_gamma.items()}
    if check:
        recorded = [ev for _, ev in day.log.read(day.date, start=start, end=end, streams=["derived"])
                    if kind_of(ev) in DERIVED_KINDS]
        result.crashed_runs = crashed_runs(day.log, day.date)
        spans = [(r["verified_until"], r["next_start"]) for r in result.crashed_runs]
        if spans:
            recorded = [ev for ev in recorded if _outside(spans, ev.ts_recv)]
            compared = [ev for ev in derived_in_window if _outside(spans, ev.ts_recv)]
            for r, (lo, hi) in zip(result.crashed_runs, spans):
                r["excluded_recorded"] = sum(1 for _, ev in day.log.read(
                    day.date, start=lo, end=hi, streams=["derived"]) if kind_of(ev) in DERIVED_KINDS)
                r["excluded_replayed"] = sum(1 for ev in derived_in_window
                                             if not _outside([(lo, hi)], ev.ts_recv))
        else:
            compared = derived_in_window
        result.mismatch = compare_derived(recorded, compared)
        result.check = "ok" if result.mismatch is None else "mismatch"
    result.seconds = time.perf_counter() - t0
    return result
