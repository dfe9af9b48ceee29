"""The researcher's API over one recorded day: iterate events, take numpy columns per kind, run a
reducer of your own.

    import mia.replay
    day = mia.replay.open_day("./mia-data", "2026-11-20")
    for ev in day.events(kinds=["Trade"], symbols=["ESZ6"]):
        ...
    trades = day.columns("Trade")          # dict of numpy arrays
    df = day.to_pandas("Trade")            # when pandas is installed
    bars = day.run(MyReducer())            # your own reducer over the day
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from mia.engine.clock import parse_date
from mia.engine.columns import COLUMN_SPEC, ColumnBatch
from mia.engine.errors import NoDataError, UsageError
from mia.engine.events import (
    DERIVED_KINDS,
    K_BOOK_LEVEL,
    K_QUOTE,
    K_TRADE,
    KIND_BY_NAME,
    TYPE_OF_KIND,
    Event,
    Instrument,
)
from mia.engine.log import EventLog
from mia.fold import INPUT_STREAMS, LIVE_STREAMS

__all__ = ["Day", "open_day", "time_span", "kinds_filter"]


def kinds_filter(kinds: Iterable[str | int | type] | None) -> set[int] | None:
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


# --- the researcher's API ----------------------------------------------------------------------


class Day:
    """One recorded day: iterate events, take numpy columns per kind, run your own reducer."""

    def __init__(self, root: str, date: str | dt.date) -> None:
        self.root = str(root)
        self.date = parse_date(date)
        self.log = EventLog(self.root)
        if self.date not in self.log.dates():
            raise NoDataError(f"no data for {self.date} under {self.root}")
        self._symbols: dict[int, str] | None = None

    def input_streams(self) -> tuple[str, ...]:
        """The day's input streams present on disk, live first (derived is output)."""
        have = {s.stream for s in self.log.segments(self.date)}
        return tuple(s for s in INPUT_STREAMS if s in have) or LIVE_STREAMS

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
        for _, ev in self.log.read(self.date, start=start, end=end, kinds=kinds_filter(kinds),
                                   instruments=self._instrument_ids(symbols), streams=streams):
            yield ev

    def __iter__(self) -> Iterator[Event]:
        return self.events()

    def batches(self, start=None, end=None, streams: Sequence[str] | None = ("live",)) -> Iterator[ColumnBatch]:
        return self.log.read_batches(self.date, start=start, end=end, streams=streams)

    def columns(self, kind: str | type, symbols: Sequence[str] | None = None, start=None,
                end=None) -> dict[str, np.ndarray]:
        """numpy columns of one kind: every field of the event, plus `seq` for market kinds."""
        k = next(iter(kinds_filter([kind])))
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


