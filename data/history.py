"""Writing history into the log: the one owner of what every importer shares.

`mia import scid|depth` (Sierra's files) and `mia import dbn` (Databento DBN files) both write
per-UTC-day segments of the `import` stream through this module:

- `ImportWriter`: one import segment of one UTC day, driven by a `ManualClock` at the events'
  own times (the wall clock never enters an imported day). Its `RecordingStarted.sources`
  names what the segment holds (its provenance).
- `DayIds`: instrument ids per day, seeded from the `Instrument` declarations already in that
  day (every stream): the same symbol keeps its id, a new symbol gets an unused one; the
  declaration found is kept so an importer without reference data can reuse its tick size.
- The idempotence ledger: `import_sources(log, day)` lists the provenance strings of the day's
  import segments; `covered_ranges` reads the ``records=<first>-<last>`` ranges one file's
  segments hold (each importer owns its provenance pattern); `subtract_ranges` leaves what is
  still to import.
"""

from __future__ import annotations

import re
from typing import Final, Iterable

from mia.engine.clock import ManualClock
from mia.engine.events import Event, Instrument, RecordingStarted
from mia.engine.log import EventLog
from mia.engine.log.format import Frame, open_segment

IMPORT_STREAM: Final = "import"


def import_sources(log: EventLog, day: str) -> list[str]:
    """Every `RecordingStarted.sources` entry of the import segments of `day`."""
    if not (log.root / day).is_dir():
        return []
    out: list[str] = []
    for info in log.segments(day):
        if info.stream != IMPORT_STREAM:
            continue
        with open_segment(info.path) as seg:
            for item in seg.scan():
                if not isinstance(item, Frame):
                    break
                frame = item if item.payload is not None else seg.load(item)
                if frame is None:
                    break
                events = seg.decoder().events(frame)
                if events and isinstance(events[0], RecordingStarted):
                    out.extend(events[0].sources)
                break
    return out


def covered_ranges(log: EventLog, day: str, file_id: str, pattern: re.Pattern
                   ) -> list[tuple[int, int]]:
    """Record ranges [first, last] of file `file_id` that import segments of `day` hold.

    `pattern` matches one importer's provenance with the groups ``id``, ``a`` (first) and
    ``b`` (last record).
    """
    out = []
    for src in import_sources(log, day):
        m = pattern.match(src)
        if m and m.group("id") == file_id:
            out.append((int(m.group("a")), int(m.group("b"))))
    return sorted(out)


def subtract_ranges(a: int, b: int, covered: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """[a, b] minus the covered ranges, as sorted inclusive ranges."""
    out = []
    cur = a
    for ca, cb in sorted(covered):
        if cb < cur or ca > b:
            continue
        if ca > cur:
            out.append((cur, ca - 1))
        cur = max(cur, cb + 1)
        if cur > b:
            break
    if cur <= b:
        out.append((cur, b))
    return out


class DayIds:
    """Instrument ids per day, seeded from the day's declarations (every stream)."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.days: dict[str, dict[str, int]] = {}
        self.declared: dict[str, dict[str, Instrument]] = {}

    def _load(self, day: str) -> dict[str, int]:
        ids = self.days.get(day)
        if ids is None:
            ids = {}
            decl: dict[str, Instrument] = {}
            if (self.log.root / day).is_dir():
                for _, ev in self.log.read(day, kinds=[Instrument]):
                    ids.setdefault(ev.symbol, ev.instrument)
                    decl[ev.symbol] = ev
            self.days[day] = ids
            self.declared[day] = decl
        return ids

    def id_for(self, day: str, symbol: str) -> int:
        ids = self._load(day)
        found = ids.get(symbol)
        if found is None:
            found = ids[symbol] = max(ids.values(), default=0) + 1
        return found

    def declaration(self, day: str, symbol: str) -> Instrument | None:
        """The last `Instrument` of `symbol` the day held before this import, if any."""
        self._load(day)
        return self.declared[day].get(symbol)


class ImportWriter:
    """One import segment of one UTC day, its clock at the events' times.

    `t0` is the first event's ts_recv; `sources` the provenance the ledger reads back.
    """

    def __init__(self, log: EventLog, sources: list[str], t0: int, *,
                 frame_max_events: int = 4096, fsync: str = "interval") -> None:
        self.clock = ManualClock(t0)
        self.events = 0
        self._w = log.writer(IMPORT_STREAM, sources=sources, clock=self.clock, fsync=fsync,
                             frame_max_events=frame_max_events, frame_max_ms=3_600_000.0)
        self.append = self._w.append

    @property
    def name(self) -> str:
        return self._w.path.name

    def append_many(self, events: list[Event]) -> None:
        """Append events (ts_recv ascending) and move the clock to the last one."""
        if events:
            self.clock.set(max(self.clock.now_ns(), events[-1].ts_recv))
            self._w.append_many(events)
            self.events += len(events)

    def close(self, reason: str = "stopped") -> None:
        self._w.close(reason)

    def __enter__(self) -> ImportWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close("stopped" if exc_type is None else "error")


__all__ = ["IMPORT_STREAM", "DayIds", "ImportWriter", "covered_ranges", "import_sources",
           "subtract_ranges"]
