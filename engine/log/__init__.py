"""The event log: per-day folders of append-only segment files made of zstd frames.

Layout: ``<root>/<YYYY-MM-DD>/<created_ns>-<recording_id>-<stream>.mseg``, one segment per
writer (run and stream) and UTC day; a restart never appends to an old file. A segment is a
header then frames; each frame is a zstd-compressed payload behind a fixed header carrying its
CRC, event count, first seq and ts_recv span. Format 1 payloads are one msgpack array of events,
format 2 payloads per-kind columns (`frame2`); readers read both. The byte format is in
docs/log-format.md.

- `format`: the segment and frame bytes, and the one way to open a segment and scan its frames.
- `writer`: `LogWriter` (frames, rollover at UTC midnight, fsync policy) and `LogConfig`.
- `reader`: per-segment readers (filters, damage, following) merged by ts_recv.
- `checks`: `verify`, `inspect`, and the recovery a new writer runs (torn tails truncated).
"""

from __future__ import annotations

import datetime as dt
import os
from itertools import chain
from operator import methodcaller
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from ..clock import Clock, SystemClock, parse_date
from ..columns import ColumnBatch
from ..errors import LogFormatError, NoDataError, UsageError
from ..events import Event
from ..storage import RemotePath, local_only, local_or_remote
from . import checks, reader
from .checks import SegmentStats, TornTail, VerifyReport
from .format import (
    FORMAT_VERSION,
    FRAME_FIELDS,
    FRAME_HEADER_SIZE,
    FRAME_MAGIC,
    SEGMENT_SUFFIX,
    Frame,
    SegmentInfo,
    open_segment,
    parse_segment_name,
    read_segment_header,
    scan_frames,
)
from .reader import BATCH_BYTES, BATCH_ROWS, Problem, SegmentReader
from .writer import LogConfig, LogWriter, OnWrite

# the frame scanner under the names the reliability tests reach it by
_Frame = Frame
_read_segment_header = read_segment_header
_scan = scan_frames

_WALL_CLOCK = SystemClock()
_call = methodcaller("__call__")


class EventLog:
    """The event log under one root directory: per-day folders of segments.

    `root` is a local directory or, for reading, any fsspec URL (``s3://bucket/prefix``): then
    `root` is a `RemotePath` and segments are read by range requests (engine/log/remote.py).
    """

    def __init__(self, root: str | os.PathLike | RemotePath) -> None:
        self.root: Path | RemotePath = local_or_remote(root)

    def __repr__(self) -> str:
        return f"EventLog({str(self.root)!r})"

    # listing
    def dates(self) -> list[str]:
        """Days that hold at least one segment, sorted."""
        if isinstance(self.root, RemotePath):
            return self.root.segment_dates(_is_date, parse_segment_name)
        if not self.root.is_dir():
            return []
        out = []
        for p in self.root.iterdir():
            if p.is_dir() and _is_date(p.name) and any(
                    parse_segment_name(s) for s in p.glob(f"*{SEGMENT_SUFFIX}")):
                out.append(p.name)
        return sorted(out)

    def _day_dir(self, date: str | dt.date) -> tuple[str, Path]:
        date = parse_date(date)
        if not self.root.is_dir():
            raise NoDataError(f"data directory {self.root} does not exist")
        day = self.root / date
        if not day.is_dir():
            raise NoDataError(f"no data for {date} in {self.root}")
        return date, day

    def segments(self, date: str | dt.date) -> list[SegmentInfo]:
        """The day's segments in creation order (LogFormatError names a file that is not one)."""
        date, day = self._day_dir(date)
        out = []
        for path in sorted(day.iterdir()):
            parsed = parse_segment_name(path)
            if parsed is None or not path.is_file():
                if path.suffix == SEGMENT_SUFFIX:
                    raise LogFormatError(str(path), "segment file name is not "
                                         "<created_ns>-<recording_id>-<stream>.mseg")
                continue
            created, rec, stream = parsed
            with open_segment(path) as seg:
                out.append(SegmentInfo(path, date, stream, rec, created, seg.size(),
                                       seg.format_version, seg.schema_version, seg.metadata))
        if not out:
            raise NoDataError(f"no segments for {date} in {day}")
        return out

    # writing
    def writer(self, stream: str = "live", *, recording_id: str | None = None,
               sources: Sequence[str] = (), config_fingerprint: str = "",
               fsync: str = "interval", fsync_interval_s: float = 1.0,
               frame_max_events: int = 4096, frame_max_ms: float = 100.0,
               clock: Clock = _WALL_CLOCK, on_write: OnWrite | None = None,
               derived_kinds: Sequence[int] = (), chain_snapshots: bool = False,
               format_version: int = FORMAT_VERSION,
               columns_ready: Callable[[], bool] | None = None) -> LogWriter:
        """A new segment of `stream` in today's folder (by `clock`), RecordingStarted first.

        `on_write(seq, event, encoded)` sees every row written, with the bytes the frame holds;
        `derived_kinds` (derived streams) names the kinds the writing code can emit;
        `chain_snapshots` says its chain pages are each followed by a ChainSnapshot;
        `format_version` 2 (default) writes columnar frames, 1 the msgpack frames of older mia;
        `columns_ready`: see `LogWriter` (a recorder starting on a cold numba cache).
        """
        return LogWriter(local_only(self.root, "recording"), stream, recording_id=recording_id,
                         sources=sources,
                         config_fingerprint=config_fingerprint, fsync=fsync,
                         fsync_interval_s=fsync_interval_s, frame_max_events=frame_max_events,
                         frame_max_ms=frame_max_ms, clock=clock, on_write=on_write,
                         derived_kinds=derived_kinds, chain_snapshots=chain_snapshots,
                         format_version=format_version, columns_ready=columns_ready)

    # reading
    def _open_readers(self, date, streams, strict, follow, on_problem, poll_s, idle_timeout_s,
                      stop) -> list[SegmentReader]:
        infos = self.segments(date)
        if streams is not None:
            if isinstance(streams, str):
                streams = [streams]
            wanted = set(streams)
            infos = [i for i in infos if i.stream in wanted]
        return [SegmentReader(info, n, strict=strict, on_problem=on_problem, follow=follow,
                              poll_s=poll_s, idle_timeout_s=idle_timeout_s, stop=stop)
                for n, info in enumerate(infos)]

    def read(self, date: str | dt.date, start: int | dt.datetime | None = None,
             end: int | dt.datetime | None = None, kinds: Iterable | None = None,
             instruments: Iterable[int | str] | None = None, *,
             streams: Iterable[str] | str | None = None, strict: bool = False,
             follow: bool = False, on_problem: Callable[[Problem], None] | None = None,
             poll_s: float = 0.02, idle_timeout_s: float | None = 60.0,
             stop: Callable[[], bool] | None = None) -> Iterator[tuple[int, Event]]:
        """Yield (seq, event) of a day, merged across segments by ts_recv (stable).

        Window [start, end) on ts_recv; `kinds` are classes, kind ints or names; `instruments`
        are ids or symbols. Filters apply per segment before the merge. `follow` tails segments
        still being written until their writer closes, `stop()` says so, or nothing arrives for
        `idle_timeout_s` (None: wait forever).
        """
        def rows() -> Iterator[tuple[int, Event]]:
            flt = reader.make_filters(start, end, kinds, instruments)
            readers = self._open_readers(date, streams, strict, follow, on_problem, poll_s,
                                         idle_timeout_s, stop)
            return reader.read_rows(readers, flt)

        # lazy like a generator (nothing is checked or opened before the first row is asked
        # for), then a C-level chain: no Python frame per row
        return chain.from_iterable(map(_call, (rows,)))

    def read_batches(self, date: str | dt.date, start: int | dt.datetime | None = None,
                     end: int | dt.datetime | None = None, kinds: Iterable | None = None,
                     instruments: Iterable[int | str] | None = None, *,
                     streams: Iterable[str] | str | None = None, strict: bool = False,
                     follow: bool = False, on_problem: Callable[[Problem], None] | None = None,
                     poll_s: float = 0.02, idle_timeout_s: float | None = 60.0,
                     stop: Callable[[], bool] | None = None,
                     min_rows: int = 64, max_rows: int = BATCH_ROWS,
                     max_bytes: int = BATCH_BYTES) -> Iterator[ColumnBatch]:
        """The same rows as ``read``, in the same order, as ColumnBatches.

        Consecutive frames of a segment are decoded into one batch of up to `max_rows` rows
        and `max_bytes` of uncompressed frame payload (a bigger frame is a batch of its own; fewer when filters drop rows, at damage, and
        when a follower catches up). Runs shorter than `min_rows` (from interleaved segments)
        are joined before yielding.
        """
        if max_rows < 1:
            raise UsageError(f"max_rows must be >= 1, got {max_rows}")
        flt = reader.make_filters(start, end, kinds, instruments)
        readers = self._open_readers(date, streams, strict, follow, on_problem, poll_s,
                                     idle_timeout_s, stop)
        yield from reader.read_batches(readers, flt, follow=follow, min_rows=min_rows,
                                       max_rows=max_rows, max_bytes=max_bytes)

    # checking
    def verify(self, date: str | dt.date, repair: bool = False) -> VerifyReport:
        """Check every frame of the day (CRC, decompression, decoding); optionally truncate
        torn tails of segments nobody is writing."""
        if repair:
            local_only(self.root, "verify --repair")
        return checks.verify(self.segments(date), repair)

    def day_summary(self, date: str | dt.date) -> checks.DaySummary:
        """`mia inspect` of one day: every segment's summary and the day's totals and gaps."""
        from ..events import Gap

        segments = [s.summary() for s in self.inspect(date)]
        gaps: list[tuple[int, int]] = []
        if any(s.kinds.get("Gap") for s in segments):  # read frames only when there is a Gap
            gaps = [(g.start_ns, g.end_ns) for _, g in self.read(date, kinds=[Gap])]
        return checks.day_summary(parse_date(date), segments, gaps)

    def inspect(self, date: str | dt.date) -> list[SegmentStats]:
        """Per-segment statistics of a day: state, counts per kind and symbol, time range."""
        return checks.inspect(self.segments(date))


def _is_date(name: str) -> bool:
    try:
        parse_date(name)
    except UsageError:
        return False
    return True


__all__ = [
    "EventLog",
    "LogConfig",
    "LogWriter",
    "Problem",
    "SegmentInfo",
    "SegmentStats",
    "TornTail",
    "VerifyReport",
    "FORMAT_VERSION",
    "FRAME_FIELDS",
    "FRAME_HEADER_SIZE",
    "FRAME_MAGIC",
]
