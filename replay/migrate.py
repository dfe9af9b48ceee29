"""`mia migrate --date D`: a recorded day in the writer's current log format, and given the
ChainSnapshots of its option chains when it was recorded before the poller logged them.

Segments. Every closed segment of the day whose format is not the target (the writer's,
`FORMAT_VERSION`; `force` rewrites current ones too) is rewritten: the same events, the same
seqs and the same segment metadata, its frames compacted (consecutive frames joined into frames
of up to the writer's `frame_max_events` and COMPACT_BYTES of payload: a live recording's
100 ms frames of a few dozen rows cost a zstd call and a kernel set-up each on every replay).
A segment already in the target format is rewritten too when its frames are not compact (a
format-2 day recorded live), never the RecordingStarted frame (alone, as the writer writes
it) nor the `chains` stream (one ChainSnapshot a frame). The new file is
written beside the old one under a hidden temporary name, fsynced, read back and proved equal
to the original (every event's seq and encoding, in order), and only then
swapped in with one atomic rename (and the directory fsynced). A process killed at any moment
leaves either the old file or the new one, each whole: the day stays readable with every
event. A segment still being written (its writer holds the lock) is skipped, and so is one
with damage (`mia verify --repair` first): its lost bytes are not for a migration to drop.

Chains. When the day holds complete chain snapshots (raw `PolygonResponse` pages) of a
recording that did not log ChainSnapshots, one `chains` stream segment is written with a
ChainSnapshot for each, made by the code the poller uses live (`chain_snapshot`), each at the
ts_recv of its snapshot's final page. The original streams keep every event and seq. Its
RecordingStarted (`chain_snapshots=True`, at the day's first row) switches the reducers of a
default replay to those rows (`mia.analytics.gamma.ChainFeed`), so the day replays without
parsing JSON; `--check` recomputes from the live stream alone, as before. The segment is
written by a `LogWriter` under the root's `.mia-migrate` staging folder and renamed into the
day whole.

Idempotent: a day already in the target format, with compact frames and no chain snapshot owed,
is left as it is and the result says so.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable, Iterator

import msgspec
import zstandard

from mia.analytics.gamma import ChainFeed, ChainPages
from mia.data.polygon.models import chain_snapshot
from mia.engine import platform as plat
from mia.engine.clock import ManualClock
from mia.engine.errors import LogError, MiaError, UsageError
from mia.engine.events import ChainSnapshot, Event, EventCodec, PolygonResponse, RecordingStarted
from mia.engine.log import EventLog, LogWriter
from mia.engine.log import format as log_format
from mia.engine.log.format import (
    FORMAT_VERSION,
    ZSTD_LEVEL,
    Damage,
    Frame,
    SegmentInfo,
    encode_frame_header,
    encode_segment_header,
    open_segment,
    writer_alive,
)
from mia.engine.log.writer import LogConfig
from mia.fold import INPUT_STREAMS
from mia.replay.check import object_rows

logger = logging.getLogger(__name__)

__all__ = ["MigrateError", "SegmentMigration", "MigrateResult", "migrate_day", "CHAINS_STREAM"]

CHAINS_STREAM = "chains"
STAGING_DIR = ".mia-migrate"  # under the root: the chains segment is written here, then moved
TMP_SUFFIX = ".migrate.tmp"
CHAIN_SOURCE_STREAMS = tuple(s for s in INPUT_STREAMS if s != CHAINS_STREAM)
# the formats this mia writes (format 1 alone before format 2 existed)
FORMAT_VERSIONS: tuple[int, ...] = getattr(log_format, "FORMAT_VERSIONS", (FORMAT_VERSION,))
# compaction: a rewritten frame holds up to the writer's max events and COMPACT_BYTES of
# uncompressed payload (the joined frames' own lengths); a bigger frame stays alone
COMPACT_EVENTS = LogConfig().frame_max_events
COMPACT_BYTES = 1 << 20


class MigrateError(LogError):
    """A rewritten segment does not read back equal to its original (the original is kept)."""


class SegmentMigration(msgspec.Struct, frozen=True, kw_only=True):
    """What migrate did with one segment."""

    segment: str  # file name
    stream: str
    # "rewritten" | "current" (already in the target format) | "open" (being written: left for
    # later) | "skipped" (damaged, or not proved equal once rewritten: the original kept)
    action: str
    from_format: int
    to_format: int
    frames: int = 0  # once rewritten
    events: int = 0
    reason: str = ""  # why open or skipped
    frames_before: int = 0  # the original's (rewritten ones)


class MigrateResult(msgspec.Struct, kw_only=True):
    date: str
    target_format: int
    segments: list[SegmentMigration] = []
    chain_snapshots: int = 0  # ChainSnapshots written into a new chains segment
    chains_segment: str = ""  # its file name
    chains_note: str = ""  # why none were written

    @property
    def changed(self) -> bool:
        return self.chain_snapshots > 0 or any(s.action == "rewritten" for s in self.segments)

    @property
    def skipped(self) -> list[SegmentMigration]:
        return [s for s in self.segments if s.action == "skipped"]

    def lines(self) -> list[str]:
        """The result for people: one line per segment not left as it was, then the chains."""
        out = []
        for s in self.segments:
            if s.action == "rewritten":
                out.append(f"  {s.segment}: format {s.from_format} -> {s.to_format}, "
                           f"{s.frames_before:,} -> {s.frames:,} frames, {s.events:,} events, proved equal")
            elif s.action in ("skipped", "open"):
                out.append(f"  {s.segment}: skipped: {s.reason}")
        if self.chain_snapshots:
            out.append(f"  {self.chains_segment}: {self.chain_snapshots:,} ChainSnapshots written")
        elif self.chains_note:
            out.append(f"  chains: {self.chains_note}")
        if not self.changed and not any(s.action in ("skipped", "open") for s in self.segments):
            out.insert(0, f"{self.date}: already migrated (format {self.target_format}, chain snapshots "
                          f"in place): nothing to do")
        return out


# --- one segment ---------------------------------------------------------------------------------


class _FrameEncoder:
    """Segment headers and frames in log format `version`, byte for byte as LogWriter writes
    them: the frame's events as one msgpack array (format 2: turned into columns by
    `frame2.encode`), zstd at ZSTD_LEVEL, the frame header with its CRCs. test_migrate proves
    the bytes equal to the writer's own for every format it writes."""

    def __init__(self, version: int) -> None:
        if version not in FORMAT_VERSIONS:
            raise UsageError(f"log format {version}: this mia writes "
                             f"{', '.join(map(str, FORMAT_VERSIONS))}")
        self.version = version
        self._codec = EventCodec()
        self._cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
        self._columnar = None
        if version >= 2:
            from mia.engine.log.frame2 import encode  # numba: only when writing format 2

            self._columnar = encode

    def frame(self, events: list[Event], first_seq: int) -> bytes:
        payload = self._codec.encode_many(events)
        if self._columnar is not None:
            payload = self._columnar(payload, len(events))
        compressed = self._cctx.compress(payload)
        ts = [ev.ts_recv for ev in events]
        return encode_frame_header(compressed, len(payload), len(events), first_seq, min(ts), max(ts)) + compressed

    def header(self, meta: dict) -> bytes:
        if self.version == FORMAT_VERSION:
            return encode_segment_header(meta)
        return encode_segment_header(meta, self.version)


def _frames(path: Path) -> Iterator[tuple[Frame, list[Event]]]:
    """Every frame of a segment with its events; MigrateError at the first damage."""
    with open_segment(path) as seg:
        dec = seg.decoder()
        for item in seg.scan():
            if isinstance(item, Damage):
                raise MigrateError(f"{path.name}: damaged at byte {item.offset} ({item.reason}): "
                                   f"run `mia verify --repair` first")
            try:
                events = dec.events(item)
            except Exception as exc:  # BadFrame: CRC fine, content not
                raise MigrateError(f"{path.name}: frame at byte {item.offset} does not decode: {exc}") from None
            yield item, events


def _compaction(stream: str) -> bool:
    return stream != CHAINS_STREAM  # a chains frame holds one ChainSnapshot's columns


def _groups(frames: Iterator[tuple[Frame, list[Event]]],
            compact: bool) -> Iterator[tuple[int, list[Event], int]]:
    """(first seq, events, frames joined) of the rewritten frames: consecutive frames (seqs
    following on) joined up to COMPACT_EVENTS events and COMPACT_BYTES of their payload
    lengths; the first frame (RecordingStarted) alone, every frame alone when not `compact`."""
    max_events, max_bytes = COMPACT_EVENTS, COMPACT_BYTES
    first, events, joined, size = 0, [], 0, 0
    for k, (frame, evs) in enumerate(frames):
        if joined and not (compact and k > 1 and frame.first_seq == first + len(events)
                           and len(events) + frame.count <= max_events
                           and size + frame.ulen <= max_bytes):
            yield first, events, joined
            joined = 0
        if not joined:
            first, events, size = frame.first_seq, [], 0
        events.extend(evs)
        joined += 1
        size += frame.ulen
    if joined:
        yield first, events, joined


def is_compact(path: Path, stream: str) -> bool:
    """Whether a rewrite would join none of the segment's frames, from its frame headers alone:
    no two consecutive frames (after the first) fit together in COMPACT_EVENTS events and a
    quarter of COMPACT_BYTES (slack: a joined frame's payload length is not exactly the sum of
    its parts', so a compacted segment stays compact)."""
    if not _compaction(stream):
        return True
    prev: Frame | None = None
    with open_segment(path) as seg:
        for k, item in enumerate(seg.scan(lo=1 << 62)):  # every frame skipped unread: headers only
            if not isinstance(item, Frame):
                return True  # damage: not for compaction to decide (the rewrite reports it)
            if (k > 1 and prev is not None and item.first_seq == prev.first_seq + prev.count
                    and prev.count + item.count <= COMPACT_EVENTS
                    and prev.ulen + item.ulen <= COMPACT_BYTES // 4):
                return False
            prev = item
    return True


def _header(path: Path) -> tuple[int, int, dict]:
    with open_segment(path) as seg:
        return seg.format_version, seg.schema_version, dict(seg.metadata)


def _prove_equal(original: Path, rewritten: Path, version: int) -> tuple[int, int]:
    """(frames, events) once `rewritten` reads back equal to `original`: the same metadata, and
    event by event the same seq and encoding (its frames may join the original's); else
    MigrateError."""
    fmt, _, meta = _header(rewritten)
    _, _, meta0 = _header(original)
    if fmt != version:
        raise MigrateError(f"{rewritten.name}: format {fmt} written, {version} wanted")
    if meta != meta0:
        raise MigrateError(f"{original.name}: metadata {meta0} rewritten as {meta}")
    encode = EventCodec().encode
    frames = events = 0
    old = ((frame.first_seq + i, ev) for frame, evs in _frames(original) for i, ev in enumerate(evs))
    for frame2, evs2 in _frames(rewritten):
        for i, b in enumerate(evs2):
            got = next(old, None)
            if got is None:
                raise MigrateError(f"{original.name}: rewritten segment holds more than its {events} events")
            seq, a = got
            if seq != frame2.first_seq + i:
                raise MigrateError(f"{original.name}: frame {frames} holds seqs {frame2.first_seq}+"
                                   f"{frame2.count} once rewritten, seq {seq} wanted at row {i}")
            if encode(a) != encode(b):
                raise MigrateError(f"{original.name}: seq {seq} differs once rewritten")
            events += 1
        frames += 1
    if next(old, None) is not None:
        raise MigrateError(f"{original.name}: rewritten segment ends after {events} of its events")
    return frames, events


def _write_file(path: Path, parts: Iterator[bytes]) -> None:
    """`parts` into a new file at `path` (replacing a stale one), then fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o644)
    try:
        for part in parts:
            view = memoryview(part)
            while view:
                view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _rewrite(info: SegmentInfo, version: int) -> SegmentMigration:
    path = Path(info.path)
    enc = _FrameEncoder(version)
    _, _, meta = _header(path)
    tmp = path.with_name(f".{path.name}{TMP_SUFFIX}")
    before = 0

    def parts() -> Iterator[bytes]:
        nonlocal before
        yield enc.header(meta)
        for first_seq, events, joined in _groups(_frames(path), _compaction(info.stream)):
            before += joined
            yield enc.frame(events, first_seq)

    try:
        _write_file(tmp, parts())
        frames, events = _prove_equal(path, tmp, version)
        plat.replace(tmp, path)  # atomic: the old file or the new one, never half of either
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    plat.fsync_dir(path.parent)
    logger.info("segment migrated path=%s format=%d->%d frames=%d->%d events=%d", path,
                info.format_version, version, before, frames, events)
    return SegmentMigration(segment=path.name, stream=info.stream, action="rewritten",
                            from_format=info.format_version, to_format=version, frames=frames,
                            events=events, frames_before=before)


# --- chains --------------------------------------------------------------------------------------


def owed_chain_snapshots(log: EventLog, date: str) -> Iterator[ChainSnapshot]:
    """The ChainSnapshots a day lacks: one for each complete, readable chain snapshot (raw
    pages, every page HTTP 200) of a recording that did not log them, in log order, made by
    the poller's own code. Pages the parser rejects get none (the reducers skip them too)."""
    feed = ChainFeed(lambda pages: None, None)  # its mode only: did the recording log them?
    gather = ChainPages()
    for ev in object_rows(log, date, [PolygonResponse, RecordingStarted], CHAIN_SOURCE_STREAMS):
        if isinstance(ev, RecordingStarted):
            feed.on_started(ev)
            continue
        if feed.spots.on_response(ev) or feed.snapshots:
            continue
        pages = gather.add(ev)
        if not pages:
            continue
        try:
            yield chain_snapshot(pages)
        except MiaError:
            continue


def _last_ts(segments: list[SegmentInfo]) -> int:
    """The latest ts_recv of the source streams' segments, from their frame headers alone."""
    last = 0
    for info in segments:
        if info.stream not in CHAIN_SOURCE_STREAMS:
            continue
        with open_segment(info.path) as seg:
            for item in seg.scan(lo=1 << 62):  # every frame skipped unread: headers only
                if isinstance(item, Frame):
                    last = max(last, item.ts_hi)
    return last


def _write_chains(log: EventLog, date: str, staging: Path, result: MigrateResult) -> None:
    day_dir = Path(log.root) / date
    segments = log.segments(date)
    if any(s.stream == CHAINS_STREAM for s in segments):
        result.chains_note = "the day already has a chains stream"
        return
    if any(s.stream in CHAIN_SOURCE_STREAMS and writer_alive(Path(s.path)) for s in segments):
        result.chains_note = "a recording of the day is still being written: chains left for later"
        return
    snapshots = owed_chain_snapshots(log, date)
    first = next(snapshots, None)
    if first is None:
        result.chains_note = "no chain snapshot lacks its ChainSnapshot"
        return
    # the chains RecordingStarted sorts with the day's first row: before every chain's pages
    _, day_first = next(iter(log.read(date, streams=list(CHAIN_SOURCE_STREAMS))))
    clock = ManualClock(day_first.ts_recv)
    shutil.rmtree(staging / date, ignore_errors=True)
    # one frame per ChainSnapshot (frame_max_ms 0): a frame holds one chain's columns
    writer = LogWriter(staging, CHAINS_STREAM, recording_id=f"migrate.{uuid.uuid4().hex[:12]}",
                       sources=["mia migrate"], config_fingerprint="", fsync="never",
                       fsync_interval_s=1.0, frame_max_events=1, frame_max_ms=0.0, clock=clock,
                       chain_snapshots=True)
    n = 0
    try:
        for snap in itertools.chain((first,), snapshots):
            clock.set(snap.ts_recv)
            writer.append(snap)
            n += 1
        # its RecordingEnded sorts with the day's last row, after the sources' own: the
        # order-flow reducer closes its bars at a RecordingEnded, and must not do so early
        clock.set(max(clock.now_ns(), _last_ts(segments)))
    except BaseException:
        writer.close("error")
        shutil.rmtree(staging / date, ignore_errors=True)
        raise
    writer.close("migrated")
    staged = writer.path
    fd = os.open(staged, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    target = day_dir / staged.name
    plat.replace(staged, target)  # whole, or not there at all
    plat.fsync_dir(day_dir)
    shutil.rmtree(staging / date, ignore_errors=True)
    result.chain_snapshots = n
    result.chains_segment = target.name
    logger.info("chains written path=%s snapshots=%d", target, n)


# --- the day -------------------------------------------------------------------------------------


def migrate_day(root: str | os.PathLike, date: str, *, target_format: int | None = None,
                force: bool = False, chains: bool = True,
                on_segment: Callable[[SegmentMigration], None] | None = None) -> MigrateResult:
    """Rewrite the closed segments of `date` under `root` into `target_format` (default: the
    writer's) with compacted frames (segments in the target format whose frames are not
    compact too), each proved equal to its original before an atomic swap, and write the
    ChainSnapshots the day lacks into a `chains` segment (`chains=False`: not). `force`
    rewrites segments already in the target format too. One migration of a day at a time
    (a lock under the root's staging folder); a second one raises LogError.
    """
    log = EventLog(root)
    if not isinstance(log.root, Path):
        raise UsageError("mia migrate rewrites a local data directory, not a URL")
    version = FORMAT_VERSION if target_format is None else int(target_format)
    _FrameEncoder(version)  # a format this mia cannot write fails before anything is touched
    infos = log.segments(date)  # NoDataError for a day that is not there
    staging = log.root / STAGING_DIR
    staging.mkdir(exist_ok=True)
    lock_fd = plat.open_append(staging / f"{date}.lock")
    try:
        if not plat.try_lock(lock_fd):
            raise LogError(f"{date}: another `mia migrate` is migrating this day")
        day_dir = log.root / date
        for stale in day_dir.glob(f".*{TMP_SUFFIX}"):  # a migration killed before its swap
            stale.unlink(missing_ok=True)
        result = MigrateResult(date=date, target_format=version)
        for info in infos:
            path = Path(info.path)
            if writer_alive(path):
                done = SegmentMigration(segment=path.name, stream=info.stream, action="open",
                                        from_format=info.format_version, to_format=version,
                                        reason="still being written (its writer holds the lock)")
            elif info.format_version == version and not force and is_compact(path, info.stream):
                done = SegmentMigration(segment=path.name, stream=info.stream, action="current",
                                        from_format=version, to_format=version)
            else:
                try:
                    done = _rewrite(info, version)
                except MigrateError as exc:
                    done = SegmentMigration(segment=path.name, stream=info.stream, action="skipped",
                                            from_format=info.format_version, to_format=version,
                                            reason=str(exc))
            if done.action == "skipped":
                logger.warning("segment not migrated path=%s reason=%s", path, done.reason)
            elif done.action == "open":
                logger.info("segment being written, not migrated path=%s", path)
            result.segments.append(done)
            if on_segment is not None:
                on_segment(done)
        if chains:
            _write_chains(log, date, staging, result)
        else:
            result.chains_note = "not asked for"
    finally:
        os.close(lock_fd)
    try:
        (staging / f"{date}.lock").unlink()
        staging.rmdir()  # only when nothing else is staged
    except OSError:
        pass
    return result
