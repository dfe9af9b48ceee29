"""The standard fold: one owner of the reducers for record, replay, levels, report and health.

- A day a recording ran into through UTC midnight starts warm in every mode: `mia levels` and
  `mia report` (replay_state) recompute exactly the derived events live logged on that day, and
  a cold fold of the same rows does not (so the comparison can fail).
- The window summary counts only the window; a fold is warmed up once.
"""

import asyncio
import datetime as dt

import msgspec
import pytest
from helpers import OffsetClock

from mia.config import AnalyticsConfig, Config
from mia.engine.clock import ManualClock
from mia.engine.columns import ColumnBatch
from mia.engine.events import (
    K_GAMMA_LEVELS,
    K_ORDERFLOW_BAR,
    Instrument,
    Trade,
    kind_of,
)
from mia.engine.log import EventLog
from mia.fold import Fold, history_dates
from mia.recorder.live import Recorder
from mia.recorder.sim import Simulators
from mia.replay.check import compare_derived
from mia.replay.outputs import health_of_day, levels_at, replay_state

NS = 1_000_000_000


def _config(levels_file: str) -> Config:
    cfg = Config()
    # one-second bars, so the day after midnight has bars whose cumulative figures carry over
    return cfg.replace(bus=msgspec.structs.replace(cfg.bus, enabled=False), levels_file=levels_file,
                       orderflow=msgspec.structs.replace(cfg.orderflow, bar_interval_s=1.0))


@pytest.fixture(scope="module")
def midnight_day(tmp_path_factory):
    """A recording from 3 s before a UTC midnight to 4 s after, with a levels file."""
    root = tmp_path_factory.mktemp("midnight")
    midnight = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    midnight += dt.timedelta(days=1)
    # the clock starts 3 s before midnight when the recording first reads it
    clock = OffsetClock(int(midnight.timestamp()) * NS - 3 * NS, from_first_use=True)
    cfg = _config(str(root / "levels.txt"))

    async def go():
        async with Simulators(seed=11, rate=2000.0, clock=clock) as sims:
            run_cfg = sims.record_config(cfg, poll_s=1.0)
            rec = Recorder(run_cfg, str(root), clock=clock)
            return await asyncio.wait_for(rec.run(7.0), 60.0), run_cfg

    result, run_cfg = asyncio.run(go())
    day1 = (midnight - dt.timedelta(days=1)).date().isoformat()
    day2 = midnight.date().isoformat()
    assert EventLog(root).dates() == [day1, day2], result
    return root, day1, day2, run_cfg


def _recorded_derived(log: EventLog, date: str, kinds) -> list:
    return [ev for _, ev in log.read(date, streams=["derived"]) if kind_of(ev) in kinds]


def test_levels_and_report_state_after_midnight_equal_what_live_computed(midnight_day):
    root, day1, day2, cfg = midnight_day
    log = EventLog(root)
    assert history_dates(log, day2) == [day1]
    kinds = {K_GAMMA_LEVELS, K_ORDERFLOW_BAR}
    recorded = _recorded_derived(log, day2, kinds)
    assert any(kind_of(ev) == K_ORDERFLOW_BAR for ev in recorded), "no bars after midnight"

    state = replay_state(str(root), day2, config=cfg)
    assert state.fold.warmup_days == [day1]
    replayed = sorted(state.gamma_history + state.bars, key=lambda ev: ev.ts_recv)
    assert compare_derived(recorded, replayed) is None

    # the same rows folded cold (what `mia levels`/`mia report` did before) differ: the
    # comparison above can fail
    cold = Fold(cfg)
    cold_out = [ev for batch in log.read_batches(day2, streams=["live"])
                for ev in cold.on_batch(batch) if kind_of(ev) in kinds]
    assert compare_derived(recorded, cold_out) is not None


def test_levels_at_the_end_of_the_day_after_midnight_are_built_from_the_warm_fold(midnight_day):
    root, day1, day2, cfg = midnight_day
    state = replay_state(str(root), day2, config=cfg)
    levels = levels_at(str(root), day2, config=cfg)
    by_label = {lv.label: lv for lv in levels}
    flows = state.orderflow_summary()
    assert flows, "no order flow after midnight"
    for sym, s in flows.items():
        # the order-flow levels carry the state the warm fold reached
        assert by_label[f"{sym} VWAP"].value == s.vwap, sym
    warm_vwaps = {sym: s.vwap for sym, s in flows.items()}
    cold = Fold(cfg)
    for batch in EventLog(root).read_batches(day2, streams=["live"]):
        cold.on_batch(batch)
    cold_vwaps = {s.symbol: s.vwap for s in cold.summary().values() if s.trades}
    assert warm_vwaps != cold_vwaps


def test_health_of_a_day_after_midnight_runs_the_warm_fold(midnight_day):
    root, day1, day2, cfg = midnight_day
    metrics = health_of_day(str(root), day2, config=cfg)
    assert metrics.overall is not None
    again = health_of_day(str(root), day2, config=cfg)
    assert msgspec.json.encode(metrics) == msgspec.json.encode(again)


def _rows(n: int, start: int) -> ColumnBatch:
    events = [Instrument(start, start, 1, "ESZ6", "test", tick_size=0.25)]
    events += [Trade(start + i * NS, start + i * NS, 1, 100.0 + (i % 4) * 0.25, 1.0 + i % 3,
                     1 if i % 2 else -1) for i in range(n)]
    return ColumnBatch.from_events(events, range(len(events)))


def test_the_window_summary_counts_only_the_window_but_the_day_state_counts_all():
    t0 = 1_764_000_000 * NS
    batch = _rows(20, t0)
    fold = Fold(AnalyticsConfig())
    fold.open_window(t0 + 10 * NS)
    fold.on_batch(batch)
    (inst,) = fold.summary().values()
    (day,) = fold.orderflow.summary().values()
    assert inst.trades == 10 and day.trades == 20
    assert inst.symbol == "ESZ6"  # the declaration before the window names its instrument
    sizes = [1.0 + i % 3 for i in range(10, 20)]
    assert inst.volume == sum(sizes)


def test_fold_derived_events_are_merged_by_ts_recv_whatever_the_reducer():
    t0 = 1_764_000_000 * NS
    fold = Fold(Config())
    out = fold.on_batch(_rows(200, t0))
    assert out, "one-minute bars over 200 s of trades"
    assert [ev.ts_recv for ev in out] == sorted(ev.ts_recv for ev in out)


def test_a_fold_warms_up_once(tmp_path):
    log = EventLog(tmp_path)
    with log.writer("live") as w:
        w.append(Trade(1_764_000_000 * NS, 1_764_000_000 * NS, 1, 100.0, 1.0, 1))
    date = log.dates()[0]
    fold = Fold()
    fold.warm_up(log, date)
    with pytest.raises(RuntimeError, match="already warmed up"):
        fold.warm_up(log, date)


def test_replay_folds_imported_history_but_checks_against_live_alone(midnight_day, tmp_path):
    import shutil

    from mia.replay import replay_day

    src, day1, day2, cfg = midnight_day
    root = tmp_path / "day"
    shutil.copytree(src, root)
    lo = next(ev.ts_recv for _, ev in EventLog(root).read(day2, kinds=[Trade])) + 1
    with EventLog(root).writer("import", clock=ManualClock(lo)) as w:
        w.append(Instrument(lo, lo, 99, "ESH7", "import", tick_size=0.25))
        for i in range(5):
            t = lo + i * 1_000_000
            w.append(Trade(t, t, 99, 6000.0 + i * 0.25, 2.0, 1))
    full = replay_day(str(root), day2, check=True, config=cfg)
    live = replay_day(str(root), day2, check=True, config=cfg, live_only=True)
    assert full.check == "ok" and live.check == "ok", (full.mismatch, live.mismatch)
    assert full.instruments["ESH7"].trades == 5 and full.instruments["ESH7"].volume == 10.0
    assert "ESH7" not in live.instruments
    assert full.events == live.events + 6 + 2  # the import segment's RecordingStarted/Ended too
