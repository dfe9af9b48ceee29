"""Many recorded days at once: the researcher's API over a range of dates.

    import mia.replay
    days = mia.replay.open_range("./mia-data", "2026-11-02", "2026-11-27")
    for day in days:                        # a `Day` per date that holds data, oldest first
        ...
    bars = days.to_pandas("OrderflowBar")   # every day's rows, with a `date` column
    vwap = days.study(lambda day: day.columns("Trade")["price"].mean(), workers=2)
    # {"2026-11-02": 24012.5, ...}: fn(day) on Dask workers (workers=0: serially, here)

Dates are UTC days, both ends included. Only days whose folder holds an input segment (live,
import or backfill) are in the range; a range with none is a `NoDataError` naming it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable, Iterator, Sequence

from mia.engine.clock import parse_date
from mia.engine.errors import NoDataError, UsageError
from mia.engine.log import EventLog
from mia.fold import INPUT_STREAMS
from mia.replay.day import Day

__all__ = ["DayRange", "open_range", "input_dates"]


def input_dates(log: EventLog, start: str, end: str) -> list[str]:
    """The days from `start` to `end` (inclusive) with at least one input segment."""
    wanted = set(INPUT_STREAMS)
    return [d for d in log.dates() if start <= d <= end
            and any(s.stream in wanted for s in log.segments(d))]


class DayRange:
    """The recorded days from `start` to `end` (inclusive) that hold data, oldest first."""

    def __init__(self, root: str, start: str | dt.date, end: str | dt.date) -> None:
        self.root = str(root)
        self.start = parse_date(start)
        self.end = parse_date(end)
        if self.end < self.start:
            raise UsageError(f"empty range: {self.end} is before {self.start}")
        self.log = EventLog(self.root)
        self.dates: list[str] = input_dates(self.log, self.start, self.end)
        if not self.dates:
            raise NoDataError(f"no data from {self.start} to {self.end} under {self.root}")

    def __repr__(self) -> str:
        return f"DayRange({self.root!r}, {self.start!r}, {self.end!r}: {len(self.dates)} days)"

    def __len__(self) -> int:
        return len(self.dates)

    def __iter__(self) -> Iterator[Day]:
        for date in self.dates:
            yield Day(self.root, date)

    def day(self, date: str | dt.date) -> Day:
        d = parse_date(date)
        if d not in self.dates:
            raise NoDataError(f"{d} is not in {self.start}..{self.end} under {self.root}")
        return Day(self.root, d)

    def to_pandas(self, kind: str | type, symbols: Sequence[str] | None = None):
        """One kind over every day as one DataFrame: `Day.to_pandas` of each day with a `date`
        column first (a `datetime.date`), in date order then log order. A day without the
        symbols asked for adds no rows."""
        try:
            import pandas as pd
        except ImportError:
            raise UsageError("to_pandas needs pandas: pip install pandas") from None
        frames = []
        for day in self:
            if symbols is not None:
                have = set(day.symbols().values())
                wanted = [s for s in symbols if s in have]
                if not wanted:
                    continue
            else:
                wanted = None
            df = day.to_pandas(kind, symbols=wanted)
            df.insert(0, "date", dt.date.fromisoformat(day.date))
            frames.append(df)
        if not frames:
            return pd.DataFrame({"date": []})
        return pd.concat(frames, ignore_index=True)

    def study(self, fn: Callable[[Day], Any], *, workers: int | None = None,
              scheduler: str | None = None, progress: Callable[[int, int], None] | None = None,
              numba_cache_dir: str | None = None) -> dict[str, Any]:
        """`fn(day)` for every day, as {date: result} in date order.

        `workers=0` runs serially in this process; otherwise on Dask distributed: a local
        cluster of `workers` processes (default: the cores) or, with `scheduler`
        ("tcp://HOST:PORT"), an existing cluster. `fn` and its results travel by (cloud)pickle.
        A day that raises does not stop the others; when any did, a `StudyError` (with the
        results of the days that finished and the failures by date) is raised at the end.
        """
        from mia.replay.study import StudyError, map_days

        outcome = map_days(fn, self.root, self.dates, workers=workers, scheduler=scheduler,
                           progress=progress, numba_cache_dir=numba_cache_dir)
        if outcome.failures:
            raise StudyError(outcome)
        return outcome.results


def open_range(root: str, start: str | dt.date, end: str | dt.date) -> DayRange:
    """The researcher's entry point for many days: the recorded days from `start` to `end`
    (inclusive) under `root`."""
    return DayRange(root, start, end)
