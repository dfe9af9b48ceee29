"""Replay mode: a recorded day folded through the same reducers as live; the researcher's API.

    import mia.replay
    day = mia.replay.open_day("./mia-data", "2026-11-20")
    for ev in day.events(kinds=["Trade"], symbols=["ESZ6"]):
        ...
    trades = day.columns("Trade")          # dict of numpy arrays
    df = day.to_pandas("Trade")            # when pandas is installed
    bars = day.run(MyReducer())            # your own reducer over the day
    result = mia.replay.replay_day("./mia-data", "2026-11-20", check=True)
    days = mia.replay.open_range("./mia-data", "2026-11-02", "2026-11-27")
    highs = days.study(lambda day: day.columns("Trade")["price"].max(), workers=2)

Rooms: `day` (the researcher's API over one day), `run` (`mia replay`: the fold over a day,
paced, published), `check` (`--check`: recomputed vs logged, and what a crash excuses),
`outputs` (levels and report of a day), `export` (tables), `range` (many days),
`study` (many days through the fold on Dask, one table).
"""

from __future__ import annotations

from mia.engine.clock import parse_date, window_ns
from mia.fold import history_dates
from mia.replay.check import CrashedRun, compare_derived, crashed_runs
from mia.replay.day import Day, open_day, time_span
from mia.replay.range import DayRange, open_range
from mia.replay.run import GammaSummary, ReplayResult, replay_day
from mia.replay.study import StudyError, study

__all__ = ["open_day", "Day", "replay_day", "ReplayResult", "GammaSummary", "CrashedRun",
           "parse_date", "window_ns", "history_dates", "crashed_runs", "compare_derived",
           "time_span", "open_range", "DayRange", "study", "StudyError"]
