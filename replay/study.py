"""`mia study`: many days through the standard fold, on Dask distributed, into one table.

    from mia.replay.study import study_table
    table, failures = study_table("./mia-data", "2026-11-02", "2026-11-27", "summary", workers=4)

Each day is folded exactly as `replay_day` folds it (a fresh `Fold` from the config, warmed up
through the earlier days a recording ran over midnight, every input stream of the day), on a
worker; each worker returns a typed pyarrow table of its day and the driver concatenates them in
date order. Within a day rows keep a fixed order (below), so the table is the same whatever the
number of workers, and whichever finished first.

Kinds (every table starts with `date`, a date32, the UTC day):

- ``summary``: two sets of rows per day, told apart by ``row_type``. ``"instrument"`` rows (one
  per instrument, by symbol): ``symbol`` and the order-flow totals of `mia replay --json`
  (trades, volume, buy_volume, sell_volume, cum_delta, vwap, poc, va_low, va_high, high, low,
  last); ``"gamma"`` rows (one per underlying, by name, after the instruments): ``symbol`` is the
  underlying and the figures of the day's last GammaLevels (ts, spot, zero_gamma, call_wall,
  put_wall, max_pain, total_gex, pcr_oi, pcr_volume, dealer_bias, stale). The columns of the
  other set are null. Rows, not columns, because an underlying (SPX) is not an instrument (ES).
- ``bars``: every OrderflowBar the fold emitted, in fold order; the columns of `mia export
  --kind bars`.
- ``levels``: every GammaLevels, in fold order; the columns of `mia export --kind levels`.

Timestamps are timestamp[ns, UTC]. Days are read strictly: a corrupt frame fails its day (a
torn tail, what a crash leaves, does not). A failed day is a `DayFailure` (date, one-line error);
the other days still finish.

Workers: a `LocalCluster` of `workers` processes (one thread each, loopback, no dashboard) unless
`scheduler` names an existing cluster. Local workers are started with ``NUMBA_CACHE_DIR`` set to
one directory (`default_cache_dir()`), so the kernels (``cache=True``) compile at most once per
machine and load from the cache in every later worker; each worker process compiles or loads
them once, on its first day. On an existing cluster, each worker that has not imported numba
yet and has no ``NUMBA_CACHE_DIR`` of its own gets the same directory before the first day
(workers that join later, or were started with their own, keep theirs).

Dask is an optional extra: ``pip install 'mia[study]'``.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import msgspec
import numpy as np

from mia.engine.errors import MiaError, UsageError
from mia.engine.events import K_INSTRUMENT, GammaLevels, OrderflowBar

logger = logging.getLogger(__name__)

__all__ = ["STUDY_KINDS", "DayFailure", "StudyOutcome", "StudyError", "StudySummary",
           "map_days", "local_cluster", "study", "study_table", "fold_day_table", "summary_schema",
           "default_cache_dir", "write_study"]

STUDY_KINDS = ("summary", "bars", "levels")
INSTRUMENT_FIELDS = ("trades", "volume", "buy_volume", "sell_volume", "cum_delta", "vwap", "poc",
                     "va_low", "va_high", "high", "low", "last")
GAMMA_FIELDS = ("ts", "spot", "zero_gamma", "call_wall", "put_wall", "max_pain", "total_gex",
                "pcr_oi", "pcr_volume", "dealer_bias", "stale")
INSTALL_HINT = "mia study needs Dask distributed: pip install 'mia[study]'"


class DayFailure(msgspec.Struct, frozen=True):
    """A day whose study raised: its date and the error on one line."""

    date: str
    error: str


class StudyOutcome(msgspec.Struct):
    results: dict[str, Any]  # date -> fn(day), in date order
    failures: list[DayFailure]  # in date order
    workers: int = 0  # processes that ran it (0: serially, in this process)
    seconds: float = 0.0


class StudyError(MiaError):
    """Some days of a study failed; `.outcome` holds the others' results and the failures."""

    def __init__(self, outcome: StudyOutcome) -> None:
        self.outcome = outcome
        f = outcome.failures
        super().__init__(f"{len(f)} of {len(f) + len(outcome.results)} days failed: "
                         + "; ".join(f"{x.date}: {x.error}" for x in f))


class _Failed(msgspec.Struct, frozen=True):
    error: str  # what a task returns instead of raising: any exception, one picklable line


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def default_cache_dir() -> str:
    """The numba cache every study worker uses: $NUMBA_CACHE_DIR, else ~/.cache/mia/numba."""
    return os.environ.get("NUMBA_CACHE_DIR") or str(Path.home() / ".cache" / "mia" / "numba")


def _run_day(date: str, *, fn: Callable, root: str) -> Any:
    """One task: fn(Day(root, date)); an exception comes back as a _Failed line (exceptions
    with their own constructor arguments do not always unpickle on the driver)."""
    from mia.replay.day import Day

    try:
        return fn(Day(root, date))
    except Exception as exc:  # reported by date; the other days go on
        logger.debug("study day failed date=%s", date, exc_info=True)
        return _Failed(_one_line(exc))


def _distributed():
    try:
        import distributed
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return distributed


def _cache_dir_setter() -> Callable[[str], str | None]:
    """A function for `Client.run` on the workers of an existing cluster: sets NUMBA_CACHE_DIR
    unless the worker has one already or has imported numba (too late: a kernel's cache is
    located when it is defined). Nested, so cloudpickle sends it by value and a worker runs it
    without importing mia (which would define the kernels) first."""

    def set_numba_cache_dir(cache_dir: str) -> str | None:
        import os
        import sys

        if "numba" not in sys.modules and not os.environ.get("NUMBA_CACHE_DIR"):
            os.environ["NUMBA_CACHE_DIR"] = cache_dir
        return os.environ.get("NUMBA_CACHE_DIR")

    return set_numba_cache_dir


def local_cluster(n_workers: int, numba_cache_dir: str | None = None):
    """A Dask LocalCluster for studies: `n_workers` processes of one thread each on loopback,
    no dashboard, every worker started with NUMBA_CACHE_DIR (default `default_cache_dir()`).

    The scheduler's HTTP server (health and metrics routes, which it starts even without a
    dashboard) gets a free loopback port, not 8787: two clusters on one machine do not clash."""
    distributed = _distributed()
    return distributed.LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
        host="127.0.0.1", silence_logs=logging.ERROR,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        env={"NUMBA_CACHE_DIR": numba_cache_dir or default_cache_dir()})


def map_days(fn: Callable, root: str, dates: Sequence[str], *, workers: int | None = None,
             scheduler: str | None = None, progress: Callable[[int, int], None] | None = None,
             numba_cache_dir: str | None = None) -> StudyOutcome:
    """fn(day) for every date: serially (`workers=0`) or on Dask distributed (a local cluster
    of `workers` processes, default the cores; or the cluster at `scheduler`)."""
    t0 = time.perf_counter()
    dates = list(dates)
    total = len(dates)
    got: dict[str, Any] = {}
    if workers is not None and workers < 0:
        raise UsageError(f"workers must be >= 0, got {workers}")
    if scheduler is not None and workers:
        raise UsageError("give either workers or a scheduler address, not both")
    task = functools.partial(_run_day, fn=fn, root=str(root))
    if progress:
        progress(0, total)
    n_workers = 0
    if workers == 0 and scheduler is None:
        for i, date in enumerate(dates, 1):
            got[date] = task(date)
            if progress:
                progress(i, total)
    else:
        distributed = _distributed()
        cluster = None
        if scheduler is None:
            n_workers = workers or os.cpu_count() or 1
            cluster = local_cluster(n_workers, numba_cache_dir)
        try:
            client = distributed.Client(cluster if cluster is not None else scheduler,
                                        timeout="30s")
        except OSError as exc:
            if cluster is not None:
                cluster.close()
            raise UsageError(f"cannot reach the Dask scheduler {scheduler}: {exc}") from None
        try:
            if cluster is None:
                n_workers = len(client.scheduler_info().get("workers", {}))
                dirs = client.run(_cache_dir_setter(), numba_cache_dir or default_cache_dir())
                logger.info("study workers=%d numba_cache_dirs=%s", n_workers,
                            sorted({str(d) for d in dirs.values()}))
            futures = client.map(task, dates, key=[f"mia-study-{d}-{os.getpid()}-{t0}"
                                                   for d in dates])
            date_of = {f.key: d for f, d in zip(futures, dates)}
            for i, fut in enumerate(distributed.as_completed(futures), 1):
                date = date_of[fut.key]
                try:
                    got[date] = fut.result()
                except Exception as exc:  # the worker died (KilledWorker) or could not run it
                    got[date] = _Failed(_one_line(exc))
                fut.release()
                if progress:
                    progress(i, total)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    results = {d: got[d] for d in dates if not isinstance(got[d], _Failed)}
    failures = [DayFailure(d, got[d].error) for d in dates if isinstance(got[d], _Failed)]
    return StudyOutcome(results, failures, workers=n_workers,
                        seconds=time.perf_counter() - t0)


def study(root: str, start, end, fn: Callable, **kw) -> dict[str, Any]:
    """`open_range(root, start, end).study(fn, **kw)`."""
    from mia.replay.range import open_range

    return open_range(root, start, end).study(fn, **kw)


# --- the standard fold of a day, as a table ------------------------------------------------------


def _pa():
    from mia.replay.export import _pa

    return _pa()


def summary_schema():
    pa = _pa()
    fields = [pa.field("date", pa.date32()), pa.field("row_type", pa.string()),
              pa.field("symbol", pa.string())]
    for name in INSTRUMENT_FIELDS:
        fields.append(pa.field(name, pa.int64() if name == "trades" else pa.float64()))
    for name in GAMMA_FIELDS:
        tp = (pa.timestamp("ns", tz="UTC") if name == "ts" else pa.bool_() if name == "stale"
              else pa.float64())
        fields.append(pa.field(name, tp))
    return pa.schema(fields)


def kind_schema(kind: str):
    """The schema of a study table of `kind`."""
    if kind == "summary":
        return summary_schema()
    from mia.replay.export import event_schema

    pa = _pa()
    return pa.schema([pa.field("date", pa.date32()), *event_schema(kind)])


def fold_day_table(day, kind: str, config=None):
    """The standard fold over one day (as `replay_day` runs it), as a pyarrow table of `kind`."""
    from mia.fold import Fold
    from mia.replay.export import _assemble, event_schema
    from mia.replay.run import GammaSummary

    if kind not in STUDY_KINDS:
        raise UsageError(f"unknown study kind {kind!r}; expected one of {', '.join(STUDY_KINDS)}")
    pa = _pa()
    fold = Fold(config)
    fold.warm_up(day.log, day.date)
    if fold.warmup_days:
        fold.open_window(None)  # the summary covers the day alone, as replay_day's does
    want = OrderflowBar if kind == "bars" else GammaLevels
    rows: list = []
    last_gamma: dict[str, GammaLevels] = {}
    symbols: dict[int, str] = {}
    for batch in day.log.read_batches(day.date, streams=list(day.input_streams()), strict=True):
        for i in np.flatnonzero(batch.kind == K_INSTRUMENT).tolist():
            ev = batch.event(i)
            symbols[ev.instrument] = ev.symbol
        for ev in fold.on_batch(batch):
            if isinstance(ev, GammaLevels):
                last_gamma[ev.underlying] = ev
            if kind != "summary" and isinstance(ev, want):
                rows.append(ev)
    date = dt.date.fromisoformat(day.date)
    if kind != "summary":
        schema = event_schema(kind)
        cols = {f.name: [getattr(ev, f.name) for ev in rows] for f in schema if f.name != "symbol"}
        table = _assemble(pa, schema, cols, symbols)
        return table.add_column(0, pa.field("date", pa.date32()), pa.array([date] * len(rows),
                                                                            pa.date32()))
    schema = summary_schema()
    cols: dict[str, list] = {f.name: [] for f in schema}
    flows = sorted(((s.symbol or str(inst)), s) for inst, s in fold.summary().items())
    for sym, s in flows:
        cols["row_type"].append("instrument")
        cols["symbol"].append(sym)
        for name in INSTRUMENT_FIELDS:
            cols[name].append(getattr(s, name))
        for name in GAMMA_FIELDS:
            cols[name].append(None)
    for u in sorted(last_gamma):
        g = GammaSummary.of(last_gamma[u])
        cols["row_type"].append("gamma")
        cols["symbol"].append(u)
        for name in INSTRUMENT_FIELDS:
            cols[name].append(None)
        for name in GAMMA_FIELDS:
            cols[name].append(getattr(g, name))
    cols["date"] = [date] * len(cols["symbol"])
    arrays = []
    for f in schema:
        if pa.types.is_timestamp(f.type):
            arrays.append(pa.array(cols[f.name], type=pa.int64()).cast(f.type))
        else:
            arrays.append(pa.array(cols[f.name], type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def study_table(root: str, start, end, kind: str, *, config=None, workers: int | None = None,
                scheduler: str | None = None, progress: Callable[[int, int], None] | None = None,
                numba_cache_dir: str | None = None):
    """Every day from `start` to `end` through the standard fold, as one table of `kind`;
    returns (table, failures, outcome). `config`: a Config or AnalyticsConfig (only the reducer
    tables travel to the workers: no secrets)."""
    from mia.config import Config
    from mia.replay.range import open_range

    if kind not in STUDY_KINDS:
        raise UsageError(f"unknown study kind {kind!r}; expected one of {', '.join(STUDY_KINDS)}")
    _pa()  # pyarrow is needed on the driver to gather; fail before starting workers
    if not (workers == 0 and scheduler is None):
        _distributed()
    if isinstance(config, Config):
        config = config.analytics
    rng = open_range(root, start, end)
    fn = functools.partial(fold_day_table, kind=kind, config=config)
    outcome = map_days(fn, rng.root, rng.dates, workers=workers, scheduler=scheduler,
                       progress=progress, numba_cache_dir=numba_cache_dir)
    pa = _pa()
    tables = list(outcome.results.values())
    table = (pa.concat_tables(tables) if tables
             else kind_schema(kind).empty_table())
    return table, outcome.failures, outcome


class StudySummary(msgspec.Struct, frozen=True, kw_only=True):
    """What `mia study` wrote (its --json output)."""

    start: str
    end: str
    kind: str
    path: str
    days: list[str]  # the days in the table
    failed: list[DayFailure]
    rows: int
    columns: list[str]
    bytes: int
    workers: int
    seconds: float


def write_study(root: str, start, end, kind: str, path: str | os.PathLike, *, config=None,
                workers: int | None = None, scheduler: str | None = None,
                progress: Callable[[int, int], None] | None = None) -> StudySummary:
    """`mia study`: the table of every day that finished, written atomically as Parquet."""
    from mia.engine.clock import parse_date
    from mia.replay.export import write_table

    table, failures, outcome = study_table(root, start, end, kind, config=config,
                                           workers=workers, scheduler=scheduler,
                                           progress=progress)
    size = write_table(table, path, "parquet")
    return StudySummary(start=parse_date(start), end=parse_date(end), kind=kind,
                        path=os.fspath(path), days=list(outcome.results), failed=failures,
                        rows=table.num_rows, columns=table.column_names, bytes=size,
                        workers=outcome.workers, seconds=outcome.seconds)
