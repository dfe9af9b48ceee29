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

`--check --deep` also proves the day's stored `ChainSnapshot` rows equal, column by column and
bit for bit, to a fresh parse of the raw pages they were made from (`check_chain_snapshots`):
the reducers read those columns, the pages stay the source of truth.
"""

from __future__ import annotations

import struct
from typing import Iterator, Sequence

import msgspec
import numpy as np

from mia.analytics.gamma import ChainFeed, ChainPages
from mia.data.polygon.models import chain_snapshot
from mia.engine.columns import CHAIN_SNAPSHOT_COLUMNS
from mia.engine.errors import MiaError
from mia.engine.events import (
    DERIVED_KINDS,
    KIND_NAMES,
    LEGACY_DERIVED_KINDS,
    ChainSnapshot,
    Event,
    EventCodec,
    PolygonResponse,
    RecordingStarted,
    kind_of,
)
from mia.engine.log import EventLog
from mia.fold import INPUT_STREAMS

__all__ = ["CrashedRun", "CheckResult", "ChainCheck", "crashed_runs", "compare_derived", "check_derived",
           "check_chain_snapshots", "snapshot_difference"]

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


# --- chain snapshots against their pages (--deep) -------------------------------------------------

_F8 = struct.Struct("<d")
_SCALARS = ("ts_event", "ts_recv", "underlying", "snapshot_id", "pages")


class ChainCheck(msgspec.Struct, frozen=True, kw_only=True):
    """What `--deep` found: every stored ChainSnapshot equal to a fresh parse of its pages."""

    check: str  # "ok" | "mismatch"
    snapshots: int = 0  # ChainSnapshots compared (all equal when ok)
    page_only: int = 0  # complete snapshots of recordings that logged none (days before)
    mismatch: str | None = None


def object_rows(log: EventLog, date: str, kinds: Sequence[type], streams: Sequence[str]) -> Iterator[Event]:
    """The day's events of `kinds` (none of them market kinds), in log order: read as column
    batches, so the market rows around them never become Python objects (8x faster than
    `EventLog.read` on a day of market data)."""
    for batch in log.read_batches(date, kinds=list(kinds), streams=list(streams)):
        yield from batch.objects


def _row_values(raw: bytes, dt: str) -> np.ndarray:
    return np.frombuffer(raw, dtype=dt)


def snapshot_difference(stored: ChainSnapshot, fresh: ChainSnapshot) -> str | None:
    """None when `stored` equals `fresh` bit for bit (NaN equals NaN, -0.0 differs from 0.0), else
    the first difference: the snapshot, the column and the row (with its ticker)."""
    where = f"{stored.underlying} snapshot {stored.snapshot_id} at ts_recv {stored.ts_recv}"
    for name in _SCALARS:
        a, b = getattr(stored, name), getattr(fresh, name)
        if a != b:
            return f"{where}: {name} stored {a!r}, re-parsed {b!r}"
    if _F8.pack(stored.spot) != _F8.pack(fresh.spot):
        return f"{where}: spot stored {stored.spot!r}, re-parsed {fresh.spot!r}"
    tickers = fresh.tickers.decode("ascii", "replace").split("\n") if fresh.tickers else []
    if stored.tickers != fresh.tickers:
        mine = stored.tickers.decode("ascii", "replace").split("\n") if stored.tickers else []
        for row, (a, b) in enumerate(zip(mine, tickers)):
            if a != b:
                return f"{where}: column tickers row {row}: stored {a!r}, re-parsed {b!r}"
        return f"{where}: column tickers: {len(mine)} rows stored, {len(tickers)} re-parsed"
    for name, dt in CHAIN_SNAPSHOT_COLUMNS.items():
        a_raw, b_raw = getattr(stored, name), getattr(fresh, name)
        if a_raw == b_raw:
            continue
        width = np.dtype(dt).itemsize
        if len(a_raw) != len(b_raw) or len(a_raw) % width:
            return (f"{where}: column {name}: {len(a_raw) / width:g} rows stored, "
                    f"{len(b_raw) // width} re-parsed")
        unsigned = f"<u{width}" if width > 1 else "u1"
        diff = np.flatnonzero(_row_values(a_raw, unsigned) != _row_values(b_raw, unsigned))
        row = int(diff[0])
        a, b = _row_values(a_raw, dt)[row].item(), _row_values(b_raw, dt)[row].item()
        ticker = f" ({tickers[row]})" if row < len(tickers) else ""
        return f"{where}: column {name} row {row}{ticker}: stored {a!r}, re-parsed {b!r}"
    return None


def check_chain_snapshots(log: EventLog, date: str,
                          streams: Sequence[str] = INPUT_STREAMS) -> ChainCheck:
    """Re-parse the raw pages of every complete chain snapshot of the day and prove the stored
    ChainSnapshot equal to them (`snapshot_difference`), in log order; the first difference
    fails the check.

    A snapshot is the pages of one (underlying, snapshot_id) up to its final page, every page
    HTTP 200 (as the reducers gather them); its ChainSnapshot carries the final page's ts_recv.
    While a recording says it logs ChainSnapshots (RecordingStarted.chain_snapshots, or a
    `chains` stream from `mia migrate`), a readable snapshot without one is a difference, and so
    is a ChainSnapshot without its pages. Pages the parser rejects must have no ChainSnapshot.
    """
    feed = ChainFeed(lambda pages: None, None)  # its mode only: does the recording log them?
    gather = ChainPages()
    # per underlying, its last complete snapshot not yet matched: (key, owed, pages). A
    # ChainSnapshot follows its final page before the next snapshot of its underlying completes,
    # so one each is all that is held (and parsed only when owed or met).
    pending: dict[str, tuple[tuple[str, int, int], bool, list[PolygonResponse]]] = {}
    compared = page_only = 0

    def fail(msg: str) -> ChainCheck:
        return ChainCheck(check="mismatch", snapshots=compared, page_only=page_only, mismatch=msg)

    def fresh_of(pages: list[PolygonResponse]) -> ChainSnapshot | str:
        try:
            return chain_snapshot(pages)
        except MiaError as exc:
            return f"pages do not parse: {exc}"

    def unmatched(key: tuple[str, int, int], owed: bool, pages: list[PolygonResponse]) -> str | None:
        nonlocal page_only
        if not owed:
            page_only += 1
            return None
        if isinstance(fresh_of(pages), str):  # rejected by the parser: rightly no ChainSnapshot
            return None
        return f"{key[0]} snapshot {key[1]} at ts_recv {key[2]}: readable pages, but no ChainSnapshot"

    for ev in object_rows(log, date, [PolygonResponse, ChainSnapshot, RecordingStarted], streams):
        if isinstance(ev, RecordingStarted):
            feed.on_started(ev)
            continue
        if isinstance(ev, PolygonResponse):
            if feed.spots.on_response(ev):  # an indices snapshot
                continue
            pages = gather.add(ev)
            if not pages:
                continue
            before = pending.get(ev.underlying)
            if before is not None and (msg := unmatched(*before)) is not None:
                return fail(msg)
            pending[ev.underlying] = ((ev.underlying, int(ev.snapshot_id), int(ev.ts_recv)), feed.snapshots,
                                      pages)
            continue
        key = (ev.underlying, int(ev.snapshot_id), int(ev.ts_recv))
        where = f"{ev.underlying} snapshot {ev.snapshot_id} at ts_recv {ev.ts_recv}"
        held = pending.get(ev.underlying)
        if held is None or held[0] != key:
            return fail(f"{where}: a ChainSnapshot without its pages")
        del pending[ev.underlying]
        fresh = fresh_of(held[2])
        if isinstance(fresh, str):
            return fail(f"{where}: a ChainSnapshot, but its {fresh}")
        diff = snapshot_difference(ev, fresh)
        if diff is not None:
            return fail(diff)
        compared += 1
    for held in pending.values():
        if (msg := unmatched(*held)) is not None:
            return fail(msg)
    return ChainCheck(check="ok", snapshots=compared, page_only=page_only)
