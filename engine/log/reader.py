"""Reading the log: per-segment readers (filters, damage reporting, following) merged by
ts_recv into one stream of rows or of ColumnBatches.

Memory stays bounded: segments are read frame by frame and merged lazily.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter
from typing import Callable, Iterable, Iterator, Sequence

import msgspec
import numpy as np

from ..clock import to_ns
from ..columns import ColumnBatch
from ..errors import LogCorruptError, UsageError
from ..events import K_INSTRUMENT, KIND_BY_NAME, KIND_OF, TYPE_OF_KIND, Event, Instrument
from .format import (
    BadFrame,
    Damage,
    Frame,
    FrameDecoder,
    FrameRun,
    SegmentFile,
    SegmentInfo,
    open_segment,
    writer_alive,
)

log = logging.getLogger(__name__)

# rows per ColumnBatch that read_batches aims at: big enough that per-batch costs (numpy calls,
# reducer entry) vanish against the rows, small enough to stay in cache (~1.3 MB of columns)
BATCH_ROWS = 16384
# uncompressed payload bytes per batch at most (a bigger frame is a batch of its own): a day's
# big objects (ChainSnapshots, ~0.7 MB a frame) are decoded and held a few dozen at a time,
# not a whole segment's worth
BATCH_BYTES = 16 << 20

_ts_recv_of = attrgetter("ts_recv")


class Problem(msgspec.Struct, frozen=True):
    """Damage a reader met and skipped (lenient mode)."""

    path: str
    offset: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path} at byte {self.offset}: {self.reason}"


# --- filters -----------------------------------------------------------------------------------


@dataclass
class Filters:
    start: int | None
    end: int | None
    kinds: frozenset[int] | None
    ids: frozenset[int] | None
    symbols: frozenset[str] | None

    @property
    def any(self) -> bool:
        return (self.start is not None or self.end is not None or self.kinds is not None
                or self.ids is not None or self.symbols is not None)


def make_filters(start, end, kinds, instruments) -> Filters:
    """`read`'s filter arguments, checked: window as int ns, kinds as kind ints, instruments
    split into ids and symbols."""
    ids = symbols = None
    if instruments is not None:
        if isinstance(instruments, (str, int)):
            instruments = [instruments]
        ids = frozenset(int(i) for i in instruments if not isinstance(i, str))
        symbols = frozenset(i for i in instruments if isinstance(i, str)) or None
    return Filters(to_ns(start, "start"), to_ns(end, "end"), _kinds_set(kinds), ids, symbols)


def _kinds_set(kinds: Iterable | None) -> frozenset[int] | None:
    if kinds is None:
        return None
    if isinstance(kinds, (str, int, type)):
        kinds = [kinds]
    out = set()
    lower = {name.lower(): k for name, k in KIND_BY_NAME.items()}
    for k in kinds:
        if isinstance(k, type) and k in KIND_OF:
            out.add(KIND_OF[k])
        elif isinstance(k, (int, np.integer)) and int(k) in TYPE_OF_KIND:
            out.add(int(k))
        elif isinstance(k, str) and k.lower() in lower:
            out.add(lower[k.lower()])
        else:
            raise UsageError(f"unknown event kind {k!r}; kinds: {', '.join(KIND_BY_NAME)}")
    return frozenset(out)


# --- merging segments --------------------------------------------------------------------------


class _Unit:
    """A run of rows of one segment, ready to merge: ts_recv per row plus the rows."""

    __slots__ = ("seg", "ts", "seqs", "items", "columnar")

    def __init__(self, seg: int, ts, seqs, items, columnar: bool) -> None:
        self.seg = seg
        self.ts = ts  # np.ndarray or None (computed when a merge needs it)
        self.seqs = seqs
        self.items = items
        self.columnar = columnar

    def __len__(self) -> int:
        return len(self.items)

    def ts_array(self) -> np.ndarray:
        if self.ts is None:
            self.ts = np.fromiter(map(_ts_recv_of, self.items), np.int64, len(self.items))
        return self.ts

    def slice(self, a: int, b: int) -> _Unit:
        if self.columnar:
            return _Unit(self.seg, None, None, _slice_batch(self.items, a, b), True)
        return _Unit(self.seg, None, self.seqs[a:b], self.items[a:b], False)


def _slice_batch(batch: ColumnBatch, a: int, b: int) -> ColumnBatch:
    cols = {name: getattr(batch, name)[a:b] for name in batch.column_names()}
    obj = cols["obj"]
    has = obj >= 0
    if has.any():
        base = int(obj[has][0])
        k = int(has.sum())
        new_obj = obj.copy()
        new_obj[has] -= base
        cols["obj"] = new_obj
        objects = batch.objects[base:base + k]
    else:
        objects = []
    return ColumnBatch(**cols, objects=objects)


def _merge(sources: list[Iterator[_Unit]]) -> Iterator[_Unit]:
    """Stable merge by (ts_recv, segment order); each segment's own order is always kept.

    Emits runs: the segment with the smallest head yields every row that still sorts before
    the best head of the others, so sparse streams cost a few numpy calls per frame.
    """
    heads: list[list] = []  # [unit, pos, source index]
    for i, it in enumerate(sources):
        u = next(it, None)
        if u is not None:
            heads.append([u, 0, i])
    while heads:
        if len(heads) == 1:
            u, pos, i = heads[0]
            yield u.slice(pos, len(u)) if pos else u
            yield from sources[i]
            return
        keys = [(h[0].ts_array()[h[1]], h[2]) for h in heads]
        order = sorted(range(len(heads)), key=keys.__getitem__)
        best, other = heads[order[0]], keys[order[1]]
        u, pos, i = best
        tail = u.ts_array()[pos:]
        cond = tail <= other[0] if i < other[1] else tail < other[0]
        stop = int(cond.argmin()) if not cond.all() else len(tail)
        stop = max(stop, 1)
        yield u.slice(pos, pos + stop) if (pos or pos + stop < len(u)) else u
        pos += stop
        if pos >= len(u):
            nxt = next(sources[i], None)
            if nxt is None:
                heads.remove(best)
            else:
                best[0], best[1] = nxt, 0
        else:
            best[1] = pos


def read_rows(readers: Sequence[SegmentReader], flt: Filters) -> Iterator[tuple[int, Event]]:
    """(seq, event) of every segment, merged by ts_recv (stable). A C-level chain of the runs'
    zips: no Python frame per row."""
    return chain.from_iterable(map(_rows_of, _merge([r.units(flt, False) for r in readers])))


def _rows_of(unit: _Unit) -> Iterator[tuple[int, Event]]:
    return zip(unit.seqs, unit.items)


def read_batches(readers: Sequence[SegmentReader], flt: Filters, *, follow: bool,
                 min_rows: int, max_rows: int,
                 max_bytes: int = BATCH_BYTES) -> Iterator[ColumnBatch]:
    """The rows of `read_rows`, in the same order, as ColumnBatches (see EventLog.read_batches)."""
    pending: list[ColumnBatch] = []
    rows = 0
    for unit in _merge([r.units(flt, True, max_rows, max_bytes) for r in readers]):
        batch = unit.items
        if not pending and len(batch) >= min_rows:
            yield batch
            continue
        pending.append(batch)
        rows += len(batch)
        if rows >= min_rows or follow:
            yield pending[0] if len(pending) == 1 else ColumnBatch.concat(pending)
            pending, rows = [], 0
    if pending:
        yield pending[0] if len(pending) == 1 else ColumnBatch.concat(pending)


# --- one segment -------------------------------------------------------------------------------


class SegmentReader:
    """Valid frames of one segment, with damage reporting and optional following."""

    def __init__(self, info: SegmentInfo, index: int, *, strict: bool,
                 on_problem: Callable[[Problem], None] | None, follow: bool,
                 poll_s: float, idle_timeout_s: float | None,
                 stop: Callable[[], bool] | None) -> None:
        self.info = info
        self.index = index
        self.strict = strict
        self.on_problem = on_problem
        self.follow = follow
        self.poll_s = poll_s
        self.idle_timeout_s = idle_timeout_s
        self.stop = stop
        self.decoder = FrameDecoder(info.schema_version, info.format_version)
        self.symbols: dict[str, set[int]] = {}

    def problem(self, offset: int, reason: str, *, corrupt: bool) -> None:
        path = str(self.info.path)
        if corrupt and self.strict:
            raise LogCorruptError(path, offset, reason)
        log.warning("log damage path=%s offset=%d reason=%s", path, offset, reason)
        if self.on_problem is not None:
            self.on_problem(Problem(path, offset, reason))

    def items(self, lo: int | None, hi: int | None,
              runs: bool = False) -> Iterator[Frame | FrameRun | tuple | None]:
        """Valid frames in file order, damage to report as (offset, reason, corrupt), and None
        before each wait for more bytes (following), so a consumer can hand on what it holds.
        `runs`: whole valid frames come as FrameRuns where a kernel checks them in bulk."""
        path = self.info.path
        follow = self.follow
        with open_segment(path) as seg:
            pos = seg.data_start
            idle_since = time.monotonic()
            while True:
                size = seg.size()
                incomplete: Damage | None = None
                scan = _scan_runs(seg, pos, size, lo, hi) if runs else seg.scan(pos, size, lo, hi)
                for item in scan:
                    if isinstance(item, (Frame, FrameRun)):
                        pos = item.end
                        if follow:
                            idle_since = time.monotonic()
                        yield item
                    elif item.incomplete:
                        incomplete = item
                    else:
                        yield (item.offset, item.reason, True)
                        pos = item.offset + item.length
                if not self.follow:
                    if incomplete is not None:
                        yield (incomplete.offset, incomplete.reason, False)
                    return
                # following: stop once the writer is gone and every byte is read
                if not writer_alive(path):
                    if seg.size() != size:
                        continue
                    if incomplete is not None:
                        yield (incomplete.offset, incomplete.reason, False)
                    return
                if self.stop is not None and self.stop():
                    return
                if (self.idle_timeout_s is not None
                        and time.monotonic() - idle_since > self.idle_timeout_s):
                    log.info("follow idle timeout path=%s", path)
                    return
                yield None
                time.sleep(self.poll_s)

    def frames(self, lo: int | None, hi: int | None) -> Iterator[Frame]:
        """Valid frames; damage is reported (or raised, strict) where it is met."""
        for item in self.items(lo, hi):
            if type(item) is Frame:
                yield item
            elif item is not None:
                offset, reason, corrupt = item
                self.problem(offset, reason, corrupt=corrupt)

    def units(self, flt: Filters, columnar: bool, max_rows: int = 1,
              max_bytes: int = BATCH_BYTES) -> Iterator[_Unit]:
        if columnar:
            yield from self._column_units(flt, max_rows, max_bytes)
            return
        dec = self.decoder
        need_index = flt.any
        for frame in self.frames(flt.start, flt.end):
            if frame.payload is None:
                continue
            try:
                if not need_index:
                    events = dec.events(frame)
                    yield _Unit(self.index, None,
                                range(frame.first_seq, frame.first_seq + frame.count), events,
                                False)
                    continue
                # the index first: a frame none of whose rows pass is never decoded
                kind, ts, inst = dec.index(frame)
                events = None
                if flt.symbols is not None and (kind == K_INSTRUMENT).any():
                    events = dec.events(frame)
                    self._learn(events)
                mask = self._mask(flt, kind, ts, inst)
                if mask is None:
                    keep = None
                else:
                    keep = np.flatnonzero(mask)
                    if not len(keep):
                        continue
                    if len(keep) == frame.count:
                        keep = None
                if events is None:
                    events = dec.events(frame)
            except BadFrame as exc:
                self.problem(frame.offset, str(exc), corrupt=True)
                continue
            if keep is None:
                yield _Unit(self.index, ts, range(frame.first_seq, frame.first_seq + frame.count),
                            events, False)
            else:
                yield _Unit(self.index, ts[keep], (keep + frame.first_seq).tolist(),
                            [events[j] for j in keep.tolist()], False)

    def _column_units(self, flt: Filters, max_rows: int, max_bytes: int) -> Iterator[_Unit]:
        """Consecutive frames decoded straight into one batch of up to max_rows rows and
        max_bytes of uncompressed payload (a frame larger than that gets a batch of its own):
        per-frame costs are what a day of small
        frames spends its time on. What is held is handed on before damage is reported and
        before a follower waits, so rows and reports keep their order. Format-2 frames are
        staged and decoded together, one kernel call for the batch (`_drain`)."""
        from ..fastdecode import empty_batch  # numba: on first use

        # symbol filters resolve through declarations read so far: mask frame by frame then
        dec = self.decoder
        by_frame = flt.symbols is not None
        stage = dec.format_version == 2 and not by_frame
        staged: list[Frame] = []
        staged_rows = 0
        batch: ColumnBatch | None = None
        keep: np.ndarray | None = None
        rows = 0
        used = 0  # uncompressed payload bytes of the frames in `batch` (decoded or staged)
        for item in self.items(flt.start, flt.end, runs=stage):
            if type(item) is FrameRun:  # staged in parts that fit the batch
                i, counts, ulens = 0, item.count, item.ulen
                while i < len(item):
                    room = len(batch) - rows - staged_rows if batch is not None else 0
                    j = i + int(np.searchsorted(np.cumsum(counts[i:]), room, side="right"))
                    jb = i + int(np.searchsorted(np.cumsum(ulens[i:]), max_bytes - used,
                                                 side="right"))
                    if jb == i and batch is not None and not rows + staged_rows:
                        jb = i + 1  # a frame bigger than max_bytes: a batch of its own
                    j = min(j, jb)
                    if j > i:
                        staged.append(item.part(i, j))
                        staged_rows += int(counts[i:j].sum())
                        used += int(ulens[i:j].sum())
                        i = j
                        continue
                    yield from self._hand_on(flt, staged, batch, rows, keep)
                    staged_rows = 0
                    batch, rows, used = empty_batch(max(max_rows, int(counts[i]))), 0, 0
                continue
            if type(item) is not Frame:
                batch, rows = yield from self._hand_on(flt, staged, batch, rows, keep)
                staged_rows = 0
                if rows:
                    batch, rows = None, 0
                if item is not None:
                    offset, reason, corrupt = item
                    self.problem(offset, reason, corrupt=corrupt)
                continue
            if item.payload is None:
                continue
            n = item.count
            if (batch is None or rows + staged_rows + n > len(batch)
                    or (rows + staged_rows and used + item.ulen > max_bytes)):
                yield from self._hand_on(flt, staged, batch, rows, keep)
                staged_rows = 0
                size = max(max_rows, n)
                batch, rows, used = empty_batch(size), 0, 0
                keep = np.empty(size, dtype=bool) if by_frame else None
            used += item.ulen
            if stage:
                staged.append(item)
                staged_rows += n
                continue
            n_objects = len(batch.objects)
            try:
                dec.columns_into(item, batch, rows)
            except BadFrame as exc:
                if rows:
                    unit = self._column_unit(flt, batch, rows, keep)
                    if unit is not None:
                        yield unit
                    batch, rows = None, 0
                self.problem(item.offset, str(exc), corrupt=True)
                continue
            if by_frame:
                part = slice(rows, rows + n)
                kind = batch.kind[part]
                if (kind == K_INSTRUMENT).any():
                    self._learn(batch.objects[n_objects:])
                keep[part] = self._mask(flt, kind, batch.ts_recv[part], batch.instrument[part])
            rows += n
        yield from self._hand_on(flt, staged, batch, rows, keep)

    def _hand_on(self, flt: Filters, staged: list[Frame], batch: ColumnBatch | None, rows: int,
                 keep: np.ndarray | None):
        """Decode what is staged into `batch`, then hand its rows on as one unit (before a new
        batch, damage being reported, or a follower waiting). Yields; returns (batch, rows)."""
        if staged:
            batch, rows = yield from self._drain(flt, staged, batch, rows)
        if rows:
            unit = self._column_unit(flt, batch, rows, keep)
            if unit is not None:
                yield unit
        return batch, rows

    def _drain(self, flt: Filters, staged: list[Frame], batch: ColumnBatch, rows: int):
        """Decode the staged frames into `batch` from row `rows` (they fit): one kernel call,
        then frame by frame from the first that does not decode, reporting it where the
        frame-by-frame path would. Yields units; returns (batch, rows); empties `staged`."""

        dec = self.decoder
        rest: list[Frame] = []
        for group in _groups(staged):
            if type(group) is FrameRun:
                done = dec.columns_run(group, batch, rows)
                rows += int(group.count[:done].sum())
                rest = [group.frame(i) for i in range(done, len(group))]
            else:
                done = dec.columns_many(group, batch, rows)
                rows += sum(f.count for f in group[:done])
                rest = group[done:]
            batch, rows = yield from self._one_by_one(flt, rest, batch, rows)
        staged.clear()
        return batch, rows

    def _one_by_one(self, flt: Filters, frames: list[Frame], batch: ColumnBatch, rows: int):
        """The frame-by-frame path of `_drain`, from a frame that did not decode in bulk."""
        from ..fastdecode import empty_batch

        dec = self.decoder
        for frame in frames:
            try:
                dec.columns_into(frame, batch, rows)
            except BadFrame as exc:
                if rows:
                    unit = self._column_unit(flt, batch, rows, None)
                    if unit is not None:
                        yield unit
                    batch, rows = empty_batch(len(batch)), 0  # the frames after it still fit
                self.problem(frame.offset, str(exc), corrupt=True)
                continue
            rows += frame.count
        return batch, rows

    def _column_unit(self, flt: Filters, batch: ColumnBatch, rows: int,
                     keep: np.ndarray | None) -> _Unit | None:
        """The first `rows` rows of `batch`, filtered; None when no row passes."""
        if rows < len(batch):
            batch = ColumnBatch(**{name: getattr(batch, name)[:rows]
                                   for name in batch.column_names()}, objects=batch.objects)
        if keep is not None:
            mask = keep[:rows]
        elif flt.any:
            mask = self._mask(flt, batch.kind, batch.ts_recv, batch.instrument)
        else:
            mask = None
        if mask is not None:
            index = np.flatnonzero(mask)
            if not len(index):
                return None
            if len(index) < rows:
                batch = batch.take(index)
        return _Unit(self.index, batch.ts_recv, None, batch, True)

    def _learn(self, events: Iterable[Event]) -> None:
        for ev in events:
            if type(ev) is Instrument:
                self.symbols.setdefault(ev.symbol, set()).add(ev.instrument)

    def _mask(self, flt: Filters, kind, ts, inst) -> np.ndarray | None:
        mask = None
        if flt.start is not None:
            mask = ts >= flt.start
        if flt.end is not None:
            m = ts < flt.end
            mask = m if mask is None else mask & m
        if flt.kinds is not None:
            m = np.isin(kind, np.fromiter(flt.kinds, np.int64))
            mask = m if mask is None else mask & m
        if flt.ids is not None or flt.symbols is not None:
            ids = set(flt.ids or ())
            for sym in flt.symbols or ():
                ids |= self.symbols.get(sym, set())
            m = np.isin(inst, np.fromiter(ids, np.int64, len(ids)))
            mask = m if mask is None else mask & m
        return mask


def _scan_runs(seg: SegmentFile, pos: int, size: int, lo: int | None,
               hi: int | None) -> Iterator[Frame | FrameRun | Damage]:
    """`seg.scan` with whole valid frames in FrameRuns (frames outside [lo, hi) left out);
    where a run cannot start, one step of `seg.scan` meets what is there."""
    while pos < size:
        run = seg.scan_run(pos, size)
        if run is None:
            for item in seg.scan(pos, size, lo, hi):
                yield item
                pos = item.end if isinstance(item, Frame) else item.offset + item.length
                break
            continue
        pos = run.end
        if lo is None and hi is None:
            yield run
            continue
        keep = np.ones(len(run), dtype=bool)
        if lo is not None:
            keep &= run.ts_hi >= lo
        if hi is not None:
            keep &= run.ts_lo < hi
        edges = np.flatnonzero(np.diff(np.concatenate(([0], keep.view(np.int8), [0]))))
        for a, b in zip(edges[::2].tolist(), edges[1::2].tolist()):
            yield run.part(a, b)


def _groups(staged: list) -> Iterator[FrameRun | list[Frame]]:
    """Staged items in order: each FrameRun alone, consecutive Frames together."""
    frames: list[Frame] = []
    for item in staged:
        if type(item) is FrameRun:
            if frames:
                yield frames
                frames = []
            yield item
        else:
            frames.append(item)
    if frames:
        yield frames
