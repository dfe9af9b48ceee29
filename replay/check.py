"""`mia replay --check`: the derived events recomputed from the live stream, compared bit for bit
with those the recorder logged live.

What the check proves, and where it cannot:

- Reducer state continues across UTC midnight when one recording runs through it, so a day whose
  first input segment continues a recording of the day before is folded after the earlier days
  of that chain (`mia.fold.history_dates`); the recorder warms up from the same days on start,
  so live and replay always start a day from the same state.
- A run that was killed (no RecordingEnded) lost its open frames: the live reducers saw input rows
  that never reached the log, and derived events of its last moments may be missing from the
  derived log. For such a run (and for one still being written) the check compares derived events
  only up to the last row that survived in both of its segments, and excludes the span from there
  to the next run's start on both sides. The run is reported as a `CrashedRun` with the instant
  it was verified until; everything outside those spans must match bit for bit.
"""

from __future__ import annotations

from typing import Sequence

import msgspec

from mia.engine.events import (
    DERIVED_KINDS,
    KIND_NAMES,
    LEGACY_DERIVED_KINDS,
    Event,
    EventCodec,
    RecordingStarted,
    kind_of,
)
from mia.engine.log import EventLog

__all__ = ["CrashedRun", "CheckResult", "crashed_runs", "compare_derived", "check_derived"]

DERIVED_STREAMS = ["derived"]


class CrashedRun(msgspec.Struct, frozen=True, kw_only=True):
    """A run of the day whose input segment has no RecordingEnded (killed, torn or still open)."""

    recording_id: str
    state: str  # the segment's state: open, crashed, torn
    verified_until: int  # ts_recv of the last row that survived in both its segments
    next_start: int | None  # the next run's first row, or None
    excluded_recorded: int = 0  # derived events left out of the comparison, on each side
    excluded_replayed: int = 0

    def excludes(self, ts: int) -> bool:
        return self.verified_until <= ts and (self.next_start is None or ts < self.next_start)


class CheckResult(msgspec.Struct, frozen=True, kw_only=True):
    check: str  # "ok" | "mismatch"
    mismatch: str | None = None
    compared: int = 0
    crashed_runs: list[CrashedRun] = []


def crashed_runs(log: EventLog, date: str) -> list[CrashedRun]:
    """Runs of `date` whose input segment has no RecordingEnded, each with the instant up to
    which its derived events can be verified and the next run's start."""
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
        out.append(CrashedRun(recording_id=st.info.recording_id, state=st.state,
                              verified_until=until, next_start=nxt))
    return out


def compare_derived(recorded: Sequence[Event], recomputed: Sequence[Event]) -> str | None:
    """None when equal, else a line naming the first difference (per kind, in order).

    Events are compared by their encodings: bitwise, so NaN equals NaN and -0.0 differs from 0.0.
    """
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
                        f"{', '.join(fields) or 'encoding'}: recorded "
                        f"{[getattr(a, f) for f in fields][:3]} replayed "
                        f"{[getattr(b, f) for f in fields][:3]}")
        if len(rec) != len(new):
            i = min(len(rec), len(new))
            extra = (rec if len(rec) > len(new) else new)[i]
            side = "recorded only" if len(rec) > len(new) else "replayed only"
            return (f"{KIND_NAMES[k]}: {len(rec)} recorded, {len(new)} replayed; first {side}: "
                    f"#{i} at ts_recv {extra.ts_recv}")
    return None


def recorded_kinds(log: EventLog, date: str) -> frozenset[int]:
    """The derived kinds the day's recordings could emit (each derived segment's
    RecordingStarted says; older segments could emit the legacy set), that this code knows."""
    kinds: set[int] = set()
    for _, ev in log.read(date, kinds=[RecordingStarted], streams=DERIVED_STREAMS):
        kinds.update(ev.derived_kinds or LEGACY_DERIVED_KINDS)
    return frozenset(kinds) & DERIVED_KINDS


def check_derived(log: EventLog, date: str, recomputed: Sequence[Event], *,
                  start: int | None = None, end: int | None = None) -> CheckResult:
    """Compare the derived events recomputed over [start, end) with those logged live, leaving
    out the spans no run could have logged (after a crash, up to the next run)."""
    kinds = recorded_kinds(log, date)
    recorded = [ev for _, ev in log.read(date, start=start, end=end, streams=DERIVED_STREAMS)
                if kind_of(ev) in kinds]
    recomputed = [ev for ev in recomputed if kind_of(ev) in kinds]
    runs = crashed_runs(log, date)
    if runs:
        def outside(ts: int) -> bool:
            return not any(r.excludes(ts) for r in runs)

        runs = [msgspec.structs.replace(
            r,
            excluded_recorded=sum(1 for ev in recorded if r.excludes(ev.ts_recv)),
            excluded_replayed=sum(1 for ev in recomputed if r.excludes(ev.ts_recv)))
            for r in runs]
        recorded = [ev for ev in recorded if outside(ev.ts_recv)]
        recomputed = [ev for ev in recomputed if outside(ev.ts_recv)]
    mismatch = compare_derived(recorded, recomputed)
    return CheckResult(check="ok" if mismatch is None else "mismatch", mismatch=mismatch,
                       compared=len(recomputed), crashed_runs=runs)
