"""The event log: per-day folders of append-only segment files made of zstd frames.

Layout: ``<root>/<YYYY-MM-DD>/<created_ns>-<recording_id>-<stream>.mseg``, one segment per
writer (run and stream) and UTC day; a restart never appends to an old file. A segment is a
header then frames; each frame is one msgpack array of events, zstd-compressed, behind a fixed
header carrying its CRC, event count, first seq and ts_recv span. The byte format is in
docs/log-format.md.

Durability (fsync policy): "always" syncs every frame, "interval" (default) at most every
``fsync_interval_s`` of wall time when a frame is written or on ``tick()``, "never" leaves it to
the OS. Every frame is written with one unbuffered ``writev`` as soon as it closes, so a killed
process loses at most the open frame; a clean close loses nothing.

Recovery follows Kafka: a torn tail (a crash mid-write) is truncated to the last whole frame by
``verify(repair=True)`` and by the next writer of the same stream and day; a corrupt frame in the
middle is reported with its offset and skipped by lenient readers (strict readers raise).
A writer holds an exclusive ``flock`` on its segment while open: that is how readers and
``inspect`` tell a segment being written from one whose writer died (no RecordingEnded).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import heapq
import logging
import os
import re
import socket
import struct
import time
import uuid
import zlib
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import msgspec
import numpy as np
import zstandard

from mia import __version__
from .clock import Clock, SystemClock
from .columns import ColumnBatch
from .errors import (
    DiskFullError,
    LogCorruptError,
    LogError,
    LogFormatError,
    NoDataError,
    UsageError,
)
from .events import (
    K_INSTRUMENT,
    K_RECORDING_ENDED,
    K_RECORDING_STARTED,
    KIND_BY_NAME,
    KIND_NAMES,
    KIND_OF,
    SCHEMA_VERSION,
    TYPE_OF_KIND,
    UPCASTS,
    Event,
    EventCodec,
    Instrument,
    RecordingEnded,
    RecordingStarted,
)

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SEGMENT_MAGIC = b"\x89MIALOG\n"  # 8 bytes; the high byte and newline catch text-mode mangling
FRAME_MAGIC = b"MIAF"
SEGMENT_SUFFIX = ".mseg"
# magic, format version, schema version, metadata length, metadata CRC32
SEGMENT_HEADER = struct.Struct("<8sHHII")
# magic, compressed length, uncompressed length, event count, first seq, min ts_recv,
# max ts_recv | CRC32 over the preceding fields and the payload | CRC32 over the 44 bytes before it
FRAME_FIELDS = struct.Struct("<4sIIIQqq")
FRAME_HEADER_SIZE = FRAME_FIELDS.size + 8  # 48
MAX_FRAME_BYTES = 1 << 28  # sanity bound for a header's lengths
MAX_METADATA_BYTES = 1 << 20
ZSTD_LEVEL = 3
# rows per ColumnBatch that read_batches aims at: big enough that per-batch costs (numpy calls,
# reducer entry) vanish against the rows, small enough to stay in cache (~1.3 MB of columns)
BATCH_ROWS = 16384

NS_PER_DAY = 86_400 * 1_000_000_000
FSYNC_POLICIES = ("always", "interval", "never")
STREAM_RE = re.compile(r"^[a-z0-9_]+$")
RECORDING_ID_RE = re.compile(r"^[A-Za-z0-9_.]+$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ts_recv_of = attrgetter("ts_recv")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_crc32 = zlib.crc32


# --- small public records ----------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """Damage a reader met and skipped (lenient mode)."""

    path: str
    offset: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path} at byte {self.offset}: {self.reason}"


@dataclass(frozen=True)
class SegmentInfo:
    """One segment file, from its name and header (cheap: no frame is read)."""

    path: Path
    date: str
    stream: str
    recording_id: str
    created_ns: int
    size: int  # bytes on disk
    format_version: int
    schema_version: int
    metadata: dict


@dataclass(frozen=True)
class TornTail:
    """Bytes at the end of a segment that do not form whole valid frames."""

    path: str
    offset: int  # where the damage starts: the end of the last whole frame
    length: int
    reason: str


@dataclass
class VerifyReport:
    date: str
    segments: int = 0
    frames: int = 0
    events: int = 0
    bad_frames: list[Problem] = field(default_factory=list)
    torn_tails: list[TornTail] = field(default_factory=list)
    truncated_bytes: int = 0
    repaired: list[str] = field(default_factory=list)
    skipped_open: list[str] = field(default_factory=list)  # being written: not repaired

    @property
    def ok(self) -> bool:
        """True when nothing is damaged (after repair, if it was asked)."""
        torn_left = [t for t in self.torn_tails if t.path not in self.repaired]
        return not self.bad_frames and not torn_left

    def to_dict(self) -> dict:
        return {
            "date": self.date,
            "ok": self.ok,
            "segments": self.segments,
            "frames": self.frames,
            "events": self.events,
            "bad_frames": [vars(p) for p in self.bad_frames],
            "torn_tails": [vars(t) for t in self.torn_tails],
            "truncated_bytes": self.truncated_bytes,
            "repaired": self.repaired,
            "skipped_open": self.skipped_open,
        }


@dataclass
class SegmentStats:
    """What ``inspect`` shows for one segment (reads every frame header and index)."""

    info: SegmentInfo
    state: str  # clean | open | crashed | torn
    frames: int = 0
    events: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    instruments: dict[str, int] = field(default_factory=dict)  # symbol -> events
    first_ts: int | None = None
    last_ts: int | None = None
    first_seq: int | None = None
    last_seq: int | None = None
    uncompressed_bytes: int = 0
    bad_frames: int = 0
    torn_bytes: int = 0

    def to_dict(self) -> dict:
        i = self.info
        return {
            "path": str(i.path),
            "stream": i.stream,
            "recording_id": i.recording_id,
            "state": self.state,
            "frames": self.frames,
            "events": self.events,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "bytes": i.size,
            "uncompressed_bytes": self.uncompressed_bytes,
            "compression_ratio": (self.uncompressed_bytes / i.size) if i.size else None,
            "kinds": self.kinds,
            "instruments": self.instruments,
            "bad_frames": self.bad_frames,
            "torn_bytes": self.torn_bytes,
            "schema_version": i.schema_version,
            "mia_version": i.metadata.get("mia_version", ""),
        }


# --- helpers -----------------------------------------------------------------------------------


def day_of(ts_ns: int) -> str:
    """The UTC date ("YYYY-MM-DD") of an int-ns timestamp."""
    return (dt.date(1970, 1, 1) + dt.timedelta(days=ts_ns // NS_PER_DAY)).isoformat()


def _day_bounds(date: str) -> tuple[int, int]:
    d = dt.date.fromisoformat(date)
    lo = (d - dt.date(1970, 1, 1)).days * NS_PER_DAY
    return lo, lo + NS_PER_DAY


def check_date(date: str | dt.date) -> str:
    """A valid "YYYY-MM-DD" string, or UsageError."""
    if isinstance(date, dt.datetime):
        date = date.astimezone(dt.timezone.utc).date() if date.tzinfo else date.date()
    if isinstance(date, dt.date):
        return date.isoformat()
    if not isinstance(date, str) or not DATE_RE.match(date):
        raise UsageError(f"bad date {date!r}: expected YYYY-MM-DD")
    try:
        dt.date.fromisoformat(date)
    except ValueError:
        raise UsageError(f"bad date {date!r}: not a calendar date") from None
    return date


def _to_ns(t: int | dt.datetime | None, what: str) -> int | None:
    if t is None:
        return None
    if isinstance(t, dt.datetime):
        if t.tzinfo is None:
            raise UsageError(f"{what} must be an aware datetime (UTC), got naive {t}")
        return (t - _EPOCH) // dt.timedelta(microseconds=1) * 1000
    if isinstance(t, (int, np.integer)) and not isinstance(t, bool):
        return int(t)
    raise UsageError(f"{what} must be int ns or an aware datetime, got {t!r}")


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


def _parse_name(path: Path) -> tuple[int, str, str] | None:
    """(created_ns, recording_id, stream) from a segment file name, None when not one."""
    if path.suffix != SEGMENT_SUFFIX:
        return None
    stem = path.stem
    head, sep, rest = stem.partition("-")
    if not sep or not head.isdigit():
        return None
    rec, sep, stream = rest.rpartition("-")
    if not sep or not rec or not STREAM_RE.match(stream):
        return None
    return int(head), rec, stream


def _writer_alive(path: Path) -> bool:
    """True when a writer holds the segment's lock (it is being written)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock we took
    return False


def _read_segment_header(f, path: Path) -> tuple[int, int, dict, int]:
    """(format version, schema version, metadata, header length) or LogFormatError."""
    f.seek(0)
    raw = f.read(SEGMENT_HEADER.size)
    if len(raw) < SEGMENT_HEADER.size or raw[:8] != SEGMENT_MAGIC:
        raise LogFormatError(str(path), "not a mia log segment (bad magic)")
    _, fmt, schema, meta_len, meta_crc = SEGMENT_HEADER.unpack(raw)
    if fmt > FORMAT_VERSION:
        raise LogFormatError(
            str(path), f"written by a newer mia (format version {fmt}, this mia reads up to "
            f"{FORMAT_VERSION}); upgrade mia")
    if schema > SCHEMA_VERSION:
        raise LogFormatError(
            str(path), f"written with a newer event schema (version {schema}, this mia knows "
            f"up to {SCHEMA_VERSION}); upgrade mia")
    if meta_len > MAX_METADATA_BYTES:
        raise LogFormatError(str(path), f"segment header metadata length {meta_len} is insane")
    meta_raw = f.read(meta_len)
    if len(meta_raw) < meta_len or _crc32(meta_raw) != meta_crc:
        raise LogFormatError(str(path), "segment header metadata is damaged (CRC mismatch)")
    try:
        meta = msgspec.msgpack.decode(meta_raw)
    except _UNDECODABLE as exc:
        raise LogFormatError(str(path), f"segment header metadata does not decode: {exc}") from None
    if not isinstance(meta, dict):
        raise LogFormatError(str(path), "segment header metadata is not a map")
    return fmt, schema, meta, SEGMENT_HEADER.size + meta_len


def _encode_segment_header(meta: dict) -> bytes:
    meta_raw = msgspec.msgpack.encode(meta)
    return SEGMENT_HEADER.pack(SEGMENT_MAGIC, FORMAT_VERSION, SCHEMA_VERSION, len(meta_raw),
                               _crc32(meta_raw)) + meta_raw


def _parse_frame_header(raw: bytes) -> tuple | str:
    """The header's fields (clen, ulen, count, first_seq, ts_lo, ts_hi, crc) or a reason."""
    if raw[:4] != FRAME_MAGIC:
        return "bad frame magic"
    (hcrc,) = struct.unpack_from("<I", raw, 44)
    if _crc32(raw[:44]) != hcrc:
        return "frame header CRC mismatch"
    _, clen, ulen, count, first_seq, ts_lo, ts_hi = FRAME_FIELDS.unpack_from(raw)
    (crc,) = struct.unpack_from("<I", raw, 40)
    if not (0 < clen <= MAX_FRAME_BYTES and 0 < ulen <= MAX_FRAME_BYTES and 0 < count <= ulen
            and ts_lo <= ts_hi):
        return "frame header fields out of range"
    return clen, ulen, count, first_seq, ts_lo, ts_hi, crc


@dataclass
class _Frame:
    offset: int
    count: int
    first_seq: int
    ts_lo: int
    ts_hi: int
    clen: int
    ulen: int
    payload: bytes | None  # compressed; None when the frame was skipped by the time window


@dataclass
class _Damage:
    offset: int
    length: int
    reason: str
    incomplete: bool  # the file ends inside a frame: a torn write (or a write in progress)
    at_end: bool  # nothing valid follows until the end of the file


def _find_next_frame(f, start: int, size: int) -> int | None:
    """Offset of the next whole, CRC-valid frame at or after `start`, None if there is none."""
    chunk = 1 << 20
    pos = start
    while pos < size:
        f.seek(pos)
        data = f.read(min(chunk + 3, size - pos))
        i = data.find(FRAME_MAGIC)
        while i >= 0:
            q = pos + i
            f.seek(q)
            raw = f.read(FRAME_HEADER_SIZE)
            if len(raw) == FRAME_HEADER_SIZE:
                h = _parse_frame_header(raw)
                if not isinstance(h, str) and q + FRAME_HEADER_SIZE + h[0] <= size:
                    payload = f.read(h[0])
                    if _crc32(payload, _crc32(raw[:40])) == h[6]:
                        return q
            i = data.find(FRAME_MAGIC, i + 1)
        pos += chunk
    return None


def _scan(f, path: Path, pos: int, size: int, lo: int | None = None,
          hi: int | None = None) -> Iterator[_Frame | _Damage]:
    """Frames (CRC-checked) and damage of a segment from `pos` to `size`.

    Frames whose ts_recv span lies outside [lo, hi) are yielded with payload None, unread.
    """
    f.seek(pos)
    while pos < size:
        raw = f.read(FRAME_HEADER_SIZE)
        if len(raw) < FRAME_HEADER_SIZE:
            if raw[:4] == FRAME_MAGIC[: len(raw)]:
                yield _Damage(pos, size - pos, f"torn tail: {size - pos} bytes, less than a "
                              f"frame header", True, True)
                return
            h = "bad frame magic"
        else:
            h = _parse_frame_header(raw)
        if not isinstance(h, str):
            clen, ulen, count, first_seq, ts_lo, ts_hi, crc = h
            end = pos + FRAME_HEADER_SIZE + clen
            if end > size:
                yield _Damage(pos, size - pos, f"torn tail: frame of {clen} bytes cut after "
                              f"{size - pos - FRAME_HEADER_SIZE}", True, True)
                return
            if (lo is not None and ts_hi < lo) or (hi is not None and ts_lo >= hi):
                f.seek(end)
                yield _Frame(pos, count, first_seq, ts_lo, ts_hi, clen, ulen, None)
                pos = end
                continue
            payload = f.read(clen)
            if _crc32(payload, _crc32(raw[:40])) == crc:
                yield _Frame(pos, count, first_seq, ts_lo, ts_hi, clen, ulen, payload)
                pos = end
                continue
            h = "frame CRC mismatch"
        nxt = _find_next_frame(f, pos + 1, size)
        if nxt is None:
            yield _Damage(pos, size - pos, h, False, True)
            return
        yield _Damage(pos, nxt - pos, h, False, False)
        pos = nxt
        f.seek(pos)


class _FrameDecoder:
    """Decompress and decode frames; one per reader (not thread-safe)."""

    def __init__(self, schema_version: int) -> None:
        self._dctx = zstandard.ZstdDecompressor()
        self._codec = EventCodec()
        self._schema = schema_version

    def payload(self, frame: _Frame) -> bytes:
        try:
            data = self._dctx.decompress(frame.payload, max_output_size=frame.ulen)
        except zstandard.ZstdError as exc:
            raise _BadFrame(f"zstd: {exc}") from None
        if len(data) != frame.ulen:
            raise _BadFrame(f"uncompressed {len(data)} bytes, header says {frame.ulen}")
        for version in range(self._schema, SCHEMA_VERSION):
            upcast = UPCASTS.get(version)
            if upcast is None:
                raise _BadFrame(f"no upcast from schema version {version}")
            data = upcast(data)  # type: ignore[operator]
        return data

    def events(self, frame: _Frame) -> list[Event]:
        data = self.payload(frame)
        try:
            events = self._codec.decode_many(data)
        except _UNDECODABLE as exc:
            raise _BadFrame(f"decode: {exc}") from None
        if len(events) != frame.count:
            raise _BadFrame(f"{len(events)} events, header says {frame.count}")
        return events

    def columns_into(self, frame: _Frame, batch: ColumnBatch, offset: int) -> None:
        """Decode the frame into rows offset..offset+count of `batch` (objects appended)."""
        from .fastdecode import FastDecodeError, decode_columns_into

        data = self.payload(frame)
        try:
            decode_columns_into(batch, offset, data, frame.count, frame.first_seq)
            return
        except (FastDecodeError, *_UNDECODABLE):
            pass
        try:
            events = self._codec.decode_many(data)
        except _UNDECODABLE as exc:
            raise _BadFrame(f"decode: {exc}") from None
        if len(events) != frame.count:
            raise _BadFrame(f"{len(events)} events, header says {frame.count}")
        log.debug("columnar walker fell back to msgspec at offset=%d", frame.offset)
        part = ColumnBatch.from_events(events, range(frame.first_seq,
                                                     frame.first_seq + frame.count))
        rows = slice(offset, offset + frame.count)
        for name in part.column_names():
            getattr(batch, name)[rows] = getattr(part, name)
        obj = batch.obj[rows]
        obj[obj >= 0] += len(batch.objects)
        batch.objects.extend(part.objects)

    def index(self, frame: _Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from .fastdecode import FastDecodeError, decode_index

        data = self.payload(frame)
        try:
            return decode_index(data, frame.count)
        except FastDecodeError as exc:
            raise _BadFrame(f"decode: {exc}") from None


# msgspec raises UnicodeDecodeError, not DecodeError, for a string that is not UTF-8
_UNDECODABLE = (msgspec.DecodeError, UnicodeDecodeError)


class _BadFrame(Exception):
    """A frame whose CRC passed but whose content does not decode."""


# --- the writer --------------------------------------------------------------------------------


class LogWriter:
    """Appends events to one stream of the log; rolls to a new segment at UTC midnight.

    Use as a context manager, or call ``close()``. Not thread-safe: one writer per thread.
    """

    def __init__(self, log_: "EventLog", stream: str, *, recording_id: str | None,
                 sources: Sequence[str], config_fingerprint: str, fsync: str,
                 fsync_interval_s: float, frame_max_events: int, frame_max_ms: float,
                 clock: Clock, on_write: Callable[[int, Event], None] | None = None) -> None:
        if not STREAM_RE.match(stream):
            raise UsageError(f"bad stream name {stream!r}: use [a-z0-9_]+")
        if fsync not in FSYNC_POLICIES:
            raise UsageError(f"bad fsync policy {fsync!r}: one of {', '.join(FSYNC_POLICIES)}")
        if recording_id is None:
            recording_id = uuid.uuid4().hex[:16]
        if not RECORDING_ID_RE.match(recording_id):
            raise UsageError(f"bad recording id {recording_id!r}: use [A-Za-z0-9_.]+")
        if frame_max_events < 1:
            raise UsageError(f"frame_max_events must be >= 1, got {frame_max_events}")
        self._log = log_
        self._stream = stream
        self._recording_id = recording_id
        self._sources = list(sources)
        self._fingerprint = config_fingerprint
        self._fsync = fsync
        self._fsync_interval = fsync_interval_s
        self._max_events = frame_max_events
        self._max_ns = int(frame_max_ms * 1e6)
        self._clock = clock
        # sees every row this writer writes, its own bracketing and rollover rows included, so a
        # live pipeline hands its reducers exactly what a replay will read
        self._on_write = on_write
        self._codec = EventCodec()
        self._cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
        self._buf = bytearray()
        self._pending: list[Event] = []
        self._frame_ts0 = 0  # ts_recv of the open frame's first event
        self._frame_opened_ns = 0  # clock time the open frame got its first event
        self._instruments: dict[int, Instrument] = {}
        self._fd = -1
        self._path: Path | None = None
        self._date = ""
        self._day_lo = self._day_hi = 0
        self._next_seq = 0
        self._seg_events = 0  # events in the current segment (bracketing included)
        self._events_written = 0  # caller's events, all segments
        self._last_ts = 0
        self._last_sync = time.monotonic()
        self._dirty = False
        self._closed = False
        now = clock.now_ns()
        self._open_segment(day_of(now), now)

    # properties
    @property
    def path(self) -> Path:
        assert self._path is not None
        return self._path

    @property
    def date(self) -> str:
        return self._date

    @property
    def stream(self) -> str:
        return self._stream

    @property
    def recording_id(self) -> str:
        return self._recording_id

    @property
    def last_seq(self) -> int:
        """Seq of the last event appended in the current day (-1 before any)."""
        return self._next_seq - 1

    @property
    def events_written(self) -> int:
        """Events the caller appended (RecordingStarted/Ended and re-declarations not counted)."""
        return self._events_written

    @property
    def closed(self) -> bool:
        return self._closed

    # appending
    def append(self, event: Event) -> int:
        """Append one event; returns its seq. The frame is written when full or old."""
        if self._closed:
            raise LogError(f"{self._path}: append to a closed writer")
        ts = event.ts_recv
        if not self._day_lo <= ts < self._day_hi:
            self._rollover(ts)
        if type(event) is Instrument:
            self._instruments[event.instrument] = event
        pending = self._pending
        if not pending:
            self._frame_ts0 = ts
            self._frame_opened_ns = self._clock.now_ns()
        pending.append(event)
        self._events_written += 1
        seq = self._next_seq
        self._next_seq = seq + 1
        if self._on_write is not None:
            self._on_write(seq, event)
        if len(pending) >= self._max_events or ts - self._frame_ts0 >= self._max_ns:
            self._write_frame()
        return seq

    def append_many(self, events: Iterable[Event]) -> int:
        """Append events in order; returns the last seq (last_seq when `events` is empty)."""
        append = self.append
        seq = self._next_seq - 1
        for event in events:
            seq = append(event)
        return seq

    def flush(self) -> None:
        """Close the open frame, write it, and fsync per policy."""
        if self._pending:
            self._write_frame()
        elif self._fsync != "never" and self._dirty:
            self._sync()

    def tick(self) -> None:
        """Close the open frame if it is older than frame_max_ms; fsync if the interval passed."""
        if self._closed:
            return
        if self._pending and self._clock.now_ns() - self._frame_opened_ns >= self._max_ns:
            self._write_frame()
        elif (self._dirty and self._fsync == "interval"
              and time.monotonic() - self._last_sync >= self._fsync_interval):
            self._sync()

    def close(self, reason: str = "stopped") -> None:
        """Write RecordingEnded(reason), flush, fsync (unless "never") and release the file."""
        if self._closed:
            return
        try:
            self._close_segment(reason)
        finally:
            self._closed = True

    def __enter__(self) -> "LogWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close("stopped" if exc_type is None else f"error: {exc_type.__name__}")

    def __repr__(self) -> str:
        return f"LogWriter(path={str(self._path)!r}, last_seq={self.last_seq})"

    # internals
    def _append_internal(self, event: Event) -> None:
        if not self._pending:
            self._frame_ts0 = event.ts_recv
            self._frame_opened_ns = self._clock.now_ns()
        self._pending.append(event)
        if self._on_write is not None:
            self._on_write(self._next_seq, event)
        self._next_seq += 1

    def _open_segment(self, date: str, ts_start: int) -> None:
        day_dir = self._log.root / date
        day_dir.mkdir(parents=True, exist_ok=True)
        self._next_seq = self._log._recover_stream(date, self._stream) + 1
        created = time.time_ns()
        # The header is written under a hidden temporary name and the segment appears under its
        # real name only once the header is whole: a reader listing the day (a catch-up joining
        # a live recording) never meets a half-written header.
        tmp = day_dir / f".{created:019d}-{self._recording_id}-{self._stream}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._fd, self._date = fd, date
        self._day_lo, self._day_hi = _day_bounds(date)
        meta = {"recording_id": self._recording_id, "stream": self._stream, "created_ns": created,
                "mia_version": __version__, "schema_version": SCHEMA_VERSION, "date": date,
                "host": socket.gethostname(), "pid": os.getpid()}
        self._write_all([_encode_segment_header(meta)])
        name_ns = created
        while True:
            path = day_dir / f"{name_ns:019d}-{self._recording_id}-{self._stream}{SEGMENT_SUFFIX}"
            try:
                os.link(tmp, path)  # atomic, and never replaces an existing segment
                break
            except FileExistsError:
                name_ns += 1
        os.unlink(tmp)
        self._path = path
        if self._fsync != "never":
            _fsync_dir(day_dir)
        self._seg_events = 0
        self._append_internal(RecordingStarted(
            ts_start, ts_start, self._recording_id, __version__, SCHEMA_VERSION, self._fingerprint,
            self._sources, self._stream, socket.gethostname(), os.getpid()))
        self._write_frame()  # a segment always starts with a whole frame holding RecordingStarted
        log.info("segment opened path=%s seq=%d", path, self._next_seq - 1)

    def _close_segment(self, reason: str) -> None:
        if self._fd < 0:
            return
        now = self._clock.now_ns()
        pending_hi = max(map(_ts_recv_of, self._pending), default=0)
        ts_end = min(max(now, self._last_ts, pending_hi), self._day_hi - 1)
        ts_end = max(ts_end, self._day_lo)
        self._append_internal(RecordingEnded(ts_end, ts_end, self._recording_id, reason,
                                             self._seg_events + len(self._pending)))
        try:
            self._write_frame()
            if self._fsync != "never":
                self._sync()
        finally:
            os.close(self._fd)  # releases the lock
            self._fd = -1
        log.info("segment closed path=%s reason=%s last_seq=%d", self._path, reason,
                 self._next_seq - 1)

    def _rollover(self, ts: int) -> None:
        new_date = day_of(ts)
        if self._pending:
            self._write_frame()
        if self._seg_events <= 1:
            # nothing but RecordingStarted: the segment holds no data, drop it rather than
            # leave an empty recording in a day the caller never wrote to
            os.close(self._fd)
            self._fd = -1
            assert self._path is not None
            self._path.unlink()
            try:
                self._path.parent.rmdir()
            except OSError:
                pass
        else:
            self._close_segment("rollover")
        self._open_segment(new_date, ts)
        for inst in self._instruments.values():  # declare instruments before first use
            self._append_internal(msgspec.structs.replace(inst, ts_recv=ts))

    def _write_frame(self) -> None:
        events = self._pending
        n = len(events)
        if not n:
            return
        first_seq = self._next_seq - n
        buf = self._buf
        self._codec.encode_many_into(events, buf)
        comp = self._cctx.compress(buf)
        ts = list(map(_ts_recv_of, events))
        lo, hi = min(ts), max(ts)
        fields = FRAME_FIELDS.pack(FRAME_MAGIC, len(comp), len(buf), n, first_seq, lo, hi)
        head = fields + struct.pack("<I", _crc32(comp, _crc32(fields)))
        head += struct.pack("<I", _crc32(head))
        self._write_all([head, comp])
        self._pending = []
        self._seg_events += n
        if hi > self._last_ts:
            self._last_ts = hi
        self._dirty = True
        if self._fsync == "always" or (
                self._fsync == "interval"
                and time.monotonic() - self._last_sync >= self._fsync_interval):
            self._sync()

    def _write_all(self, parts: list[bytes]) -> None:
        try:
            total = sum(len(p) for p in parts)
            written = os.writev(self._fd, parts)
            if written < total:  # rare: finish a short write
                rest = b"".join(parts)[written:]
                while rest:
                    rest = rest[os.write(self._fd, rest):]
        except OSError as exc:
            if exc.errno in (28, 27, 122):  # ENOSPC, EFBIG, EDQUOT
                raise DiskFullError(f"{self._path}: cannot write: {exc.strerror}") from exc
            raise

    def _sync(self) -> None:
        os.fdatasync(self._fd)
        self._last_sync = time.monotonic()
        self._dirty = False


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- reading -----------------------------------------------------------------------------------


@dataclass
class _Filters:
    start: int | None
    end: int | None
    kinds: frozenset[int] | None
    ids: frozenset[int] | None
    symbols: frozenset[str] | None

    @property
    def any(self) -> bool:
        return (self.start is not None or self.end is not None or self.kinds is not None
                or self.ids is not None or self.symbols is not None)


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

    def slice(self, a: int, b: int) -> "_Unit":
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


class _SegmentReader:
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
        self.decoder = _FrameDecoder(info.schema_version)
        self.symbols: dict[str, set[int]] = {}

    def problem(self, offset: int, reason: str, *, corrupt: bool) -> None:
        path = str(self.info.path)
        if corrupt and self.strict:
            raise LogCorruptError(path, offset, reason)
        log.warning("log damage path=%s offset=%d reason=%s", path, offset, reason)
        if self.on_problem is not None:
            self.on_problem(Problem(path, offset, reason))

    def items(self, lo: int | None, hi: int | None) -> Iterator[_Frame | tuple | None]:
        """Valid frames in file order, damage to report as (offset, reason, corrupt), and None
        before each wait for more bytes (following), so a consumer can hand on what it holds."""
        path = self.info.path
        with open(path, "rb") as f:
            _, _, _, pos = _read_segment_header(f, path)
            idle_since = time.monotonic()
            while True:
                size = os.fstat(f.fileno()).st_size
                incomplete: _Damage | None = None
                for item in _scan(f, path, pos, size, lo, hi):
                    if isinstance(item, _Frame):
                        pos = item.offset + FRAME_HEADER_SIZE + item.clen
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
                if not _writer_alive(path):
                    if os.fstat(f.fileno()).st_size != size:
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

    def frames(self, lo: int | None, hi: int | None) -> Iterator[_Frame]:
        """Valid frames; damage is reported (or raised, strict) where it is met."""
        for item in self.items(lo, hi):
            if type(item) is _Frame:
                yield item
            elif item is not None:
                offset, reason, corrupt = item
                self.problem(offset, reason, corrupt=corrupt)

    def units(self, flt: _Filters, columnar: bool, max_rows: int = 1) -> Iterator[_Unit]:
        if columnar:
            yield from self._column_units(flt, max_rows)
            return
        dec = self.decoder
        need_index = flt.any
        for frame in self.frames(flt.start, flt.end):
            if frame.payload is None:
                continue
            try:
                events = dec.events(frame)
                if need_index:
                    kind, ts, inst = dec.index(frame)
                    if flt.symbols is not None and (kind == K_INSTRUMENT).any():
                        self._learn(events)
            except _BadFrame as exc:
                self.problem(frame.offset, str(exc), corrupt=True)
                continue
            if not need_index:
                yield _Unit(self.index, None,
                            range(frame.first_seq, frame.first_seq + frame.count), events, False)
                continue
            mask = self._mask(flt, kind, ts, inst)
            if mask is None:
                keep = None
            else:
                keep = np.flatnonzero(mask)
                if not len(keep):
                    continue
                if len(keep) == frame.count:
                    keep = None
            if keep is None:
                yield _Unit(self.index, ts, range(frame.first_seq, frame.first_seq + frame.count),
                            events, False)
            else:
                yield _Unit(self.index, ts[keep], (keep + frame.first_seq).tolist(),
                            [events[j] for j in keep.tolist()], False)

    def _column_units(self, flt: _Filters, max_rows: int) -> Iterator[_Unit]:
        """Consecutive frames decoded straight into one batch of up to max_rows rows (a frame
        larger than that gets a batch of its own): per-frame costs are what a day of small
        frames spends its time on. What is held is handed on before damage is reported and
        before a follower waits, so rows and reports keep their order."""
        from .fastdecode import empty_batch

        dec = self.decoder
        # symbol filters resolve through declarations read so far: mask frame by frame then
        by_frame = flt.symbols is not None
        batch: ColumnBatch | None = None
        keep: np.ndarray | None = None
        rows = 0
        for item in self.items(flt.start, flt.end):
            if type(item) is not _Frame:
                if rows:
                    unit = self._column_unit(flt, batch, rows, keep)
                    if unit is not None:
                        yield unit
                    batch, rows = None, 0
                if item is not None:
                    offset, reason, corrupt = item
                    self.problem(offset, reason, corrupt=corrupt)
                continue
            if item.payload is None:
                continue
            n = item.count
            if batch is None or rows + n > len(batch):
                if rows:
                    unit = self._column_unit(flt, batch, rows, keep)
                    if unit is not None:
                        yield unit
                size = max(max_rows, n)
                batch, rows = empty_batch(size), 0
                keep = np.empty(size, dtype=bool) if by_frame else None
            n_objects = len(batch.objects)
            try:
                dec.columns_into(item, batch, rows)
            except _BadFrame as exc:
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
        if rows:
            unit = self._column_unit(flt, batch, rows, keep)
            if unit is not None:
                yield unit

    def _column_unit(self, flt: _Filters, batch: ColumnBatch, rows: int,
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

    def _mask(self, flt: _Filters, kind, ts, inst) -> np.ndarray | None:
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


# --- the log -----------------------------------------------------------------------------------


class EventLog:
    """The event log under one root directory: per-day folders of segments."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"EventLog({str(self.root)!r})"

    # listing
    def dates(self) -> list[str]:
        """Days that hold at least one segment, sorted."""
        if not self.root.is_dir():
            return []
        out = []
        for p in self.root.iterdir():
            if p.is_dir() and DATE_RE.match(p.name) and any(
                    _parse_name(s) for s in p.glob(f"*{SEGMENT_SUFFIX}")):
                out.append(p.name)
        return sorted(out)

    def _day_dir(self, date: str | dt.date) -> tuple[str, Path]:
        date = check_date(date)
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
            parsed = _parse_name(path)
            if parsed is None or not path.is_file():
                if path.suffix == SEGMENT_SUFFIX:
                    raise LogFormatError(str(path), "segment file name is not "
                                         "<created_ns>-<recording_id>-<stream>.mseg")
                continue
            created, rec, stream = parsed
            with open(path, "rb") as f:
                fmt, schema, meta, _ = _read_segment_header(f, path)
                size = os.fstat(f.fileno()).st_size
            out.append(SegmentInfo(path, date, stream, rec, created, size, fmt, schema, meta))
        if not out:
            raise NoDataError(f"no segments for {date} in {day}")
        return out

    # writing
    def writer(self, stream: str = "live", *, recording_id: str | None = None,
               sources: Sequence[str] = (), config_fingerprint: str = "",
               fsync: str = "interval", fsync_interval_s: float = 1.0,
               frame_max_events: int = 4096, frame_max_ms: float = 100.0,
               clock: Clock = SystemClock(),
               on_write: Callable[[int, Event], None] | None = None) -> LogWriter:
        """A new segment of `stream` in today's folder (by `clock`), RecordingStarted first."""
        return LogWriter(self, stream, recording_id=recording_id, sources=sources,
                         config_fingerprint=config_fingerprint, fsync=fsync,
                         fsync_interval_s=fsync_interval_s, frame_max_events=frame_max_events,
                         frame_max_ms=frame_max_ms, clock=clock, on_write=on_write)

    def _recover_stream(self, date: str, stream: str) -> int:
        """Before a new writer of (date, stream): truncate torn tails, note crashed segments,
        and return the last seq used (-1 when none)."""
        day = self.root / date
        last = -1
        for path in sorted(day.glob(f"*{SEGMENT_SUFFIX}")):
            parsed = _parse_name(path)
            if parsed is None or parsed[2] != stream:
                continue
            fd = os.open(path, os.O_RDWR)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise LogError(f"{path}: stream {stream!r} of {date} is being written by "
                                   f"another writer") from None
                with os.fdopen(os.dup(fd), "rb") as f:
                    seg_last, torn, ended = _last_seq_and_tail(f, path)
                if torn is not None:
                    os.ftruncate(fd, torn.offset)
                    os.fsync(fd)
                    log.warning("truncated torn tail path=%s offset=%d bytes=%d reason=%s",
                                path, torn.offset, torn.length, torn.reason)
                if not ended:
                    log.warning("segment has no RecordingEnded (crashed run) path=%s", path)
            finally:
                os.close(fd)
            last = max(last, seg_last)
        return last

    # reading
    def _open_readers(self, date, streams, strict, follow, on_problem, poll_s, idle_timeout_s,
                      stop) -> list[_SegmentReader]:
        infos = self.segments(date)
        if streams is not None:
            if isinstance(streams, str):
                streams = [streams]
            wanted = set(streams)
            infos = [i for i in infos if i.stream in wanted]
        return [_SegmentReader(info, n, strict=strict, on_problem=on_problem, follow=follow,
                               poll_s=poll_s, idle_timeout_s=idle_timeout_s, stop=stop)
                for n, info in enumerate(infos)]

    @staticmethod
    def _filters(start, end, kinds, instruments) -> _Filters:
        ids = symbols = None
        if instruments is not None:
            if isinstance(instruments, (str, int)):
                instruments = [instruments]
            ids = frozenset(int(i) for i in instruments if not isinstance(i, str))
            symbols = frozenset(i for i in instruments if isinstance(i, str)) or None
        return _Filters(_to_ns(start, "start"), _to_ns(end, "end"), _kinds_set(kinds), ids,
                        symbols)

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
        flt = self._filters(start, end, kinds, instruments)
        readers = self._open_readers(date, streams, strict, follow, on_problem, poll_s,
                                     idle_timeout_s, stop)
        for unit in _merge([r.units(flt, False) for r in readers]):
            yield from zip(unit.seqs, unit.items)

    def read_batches(self, date: str | dt.date, start: int | dt.datetime | None = None,
                     end: int | dt.datetime | None = None, kinds: Iterable | None = None,
                     instruments: Iterable[int | str] | None = None, *,
                     streams: Iterable[str] | str | None = None, strict: bool = False,
                     follow: bool = False, on_problem: Callable[[Problem], None] | None = None,
                     poll_s: float = 0.02, idle_timeout_s: float | None = 60.0,
                     stop: Callable[[], bool] | None = None,
                     min_rows: int = 64, max_rows: int = BATCH_ROWS) -> Iterator[ColumnBatch]:
        """The same rows as ``read``, in the same order, as ColumnBatches.

        Consecutive frames of a segment are decoded into one batch of up to `max_rows` rows
        (a bigger frame is a batch of its own; fewer when filters drop rows, at damage, and
        when a follower catches up). Runs shorter than `min_rows` (from interleaved segments)
        are joined before yielding.
        """
        if max_rows < 1:
            raise UsageError(f"max_rows must be >= 1, got {max_rows}")
        flt = self._filters(start, end, kinds, instruments)
        readers = self._open_readers(date, streams, strict, follow, on_problem, poll_s,
                                     idle_timeout_s, stop)
        pending: list[ColumnBatch] = []
        rows = 0
        for unit in _merge([r.units(flt, True, max_rows) for r in readers]):
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

    # checking
    def verify(self, date: str | dt.date, repair: bool = False) -> VerifyReport:
        """Check every frame of the day (CRC, decompression, decoding); optionally truncate
        torn tails of segments nobody is writing."""
        infos = self.segments(date)
        report = VerifyReport(date=infos[0].date, segments=len(infos))
        for info in infos:
            dec = _FrameDecoder(info.schema_version)
            tail: _Damage | None = None
            with open(info.path, "rb") as f:
                _, _, _, pos = _read_segment_header(f, info.path)
                size = os.fstat(f.fileno()).st_size
                for item in _scan(f, info.path, pos, size):
                    if isinstance(item, _Damage):
                        if item.at_end:
                            tail = item
                        else:
                            report.bad_frames.append(Problem(str(info.path), item.offset,
                                                             item.reason))
                        continue
                    try:
                        dec.events(item)
                    except _BadFrame as exc:
                        report.bad_frames.append(Problem(str(info.path), item.offset, str(exc)))
                        continue
                    report.frames += 1
                    report.events += item.count
            if tail is None:
                continue
            report.torn_tails.append(TornTail(str(info.path), tail.offset, tail.length,
                                              tail.reason))
            if not repair:
                continue
            if _writer_alive(info.path):
                report.skipped_open.append(str(info.path))
                continue
            with open(info.path, "r+b") as f:
                f.truncate(tail.offset)
                os.fsync(f.fileno())
            report.truncated_bytes += tail.length
            report.repaired.append(str(info.path))
            log.warning("truncated torn tail path=%s offset=%d bytes=%d", info.path,
                        tail.offset, tail.length)
        return report

    def inspect(self, date: str | dt.date) -> list[SegmentStats]:
        """Per-segment statistics of a day: state, counts per kind and symbol, time range."""
        out = []
        for info in self.segments(date):
            st = SegmentStats(info=info, state="clean")
            dec = _FrameDecoder(info.schema_version)
            kind_counts = np.zeros(256, np.int64)
            inst_counts: dict[int, int] = {}
            symbols: dict[int, str] = {}
            last_kind = -1
            with open(info.path, "rb") as f:
                _, _, _, pos = _read_segment_header(f, info.path)
                size = os.fstat(f.fileno()).st_size
                for item in _scan(f, info.path, pos, size):
                    if isinstance(item, _Damage):
                        if item.at_end:
                            st.torn_bytes = item.length
                        else:
                            st.bad_frames += 1
                        continue
                    try:
                        kind, ts, inst = dec.index(item)
                        if (kind == K_INSTRUMENT).any():
                            for ev in dec.events(item):
                                if type(ev) is Instrument:
                                    symbols[ev.instrument] = ev.symbol
                    except _BadFrame:
                        st.bad_frames += 1
                        continue
                    st.frames += 1
                    st.events += item.count
                    st.uncompressed_bytes += item.ulen
                    kind_counts += np.bincount(kind, minlength=256)
                    ids, counts = np.unique(inst[inst >= 0], return_counts=True)
                    for i, c in zip(ids.tolist(), counts.tolist()):
                        inst_counts[i] = inst_counts.get(i, 0) + c
                    st.first_ts = item.ts_lo if st.first_ts is None else min(st.first_ts, item.ts_lo)
                    st.last_ts = item.ts_hi if st.last_ts is None else max(st.last_ts, item.ts_hi)
                    if st.first_seq is None:
                        st.first_seq = item.first_seq
                    st.last_seq = item.first_seq + item.count - 1
                    last_kind = int(kind[-1])
            st.kinds = {KIND_NAMES[k]: int(c) for k, c in enumerate(kind_counts.tolist())
                        if c and k in KIND_NAMES}
            for i, c in sorted(inst_counts.items()):
                name = symbols.get(i, f"#{i}")
                st.instruments[name] = st.instruments.get(name, 0) + c
            if st.torn_bytes:
                st.state = "torn"
            elif last_kind == K_RECORDING_ENDED:
                st.state = "clean"
            elif _writer_alive(info.path):
                st.state = "open"
            else:
                st.state = "crashed"
            out.append(st)
        return out


def _last_seq_and_tail(f, path: Path) -> tuple[int, _Damage | None, bool]:
    """(last seq, tail damage or None, ends with RecordingEnded) of a segment, by walking frame
    headers (only the last frame is decompressed)."""
    fmt, schema, _, pos = _read_segment_header(f, path)
    size = os.fstat(f.fileno()).st_size
    last_seq = -1
    last_frame: _Frame | None = None
    tail = None
    # Payloads are skipped (window excludes everything) except where damage forces a CRC scan
    for item in _scan(f, path, pos, size, lo=2**63 - 1):
        if isinstance(item, _Frame):
            last_seq = max(last_seq, item.first_seq + item.count - 1)
            last_frame = item
        elif item.at_end:
            tail = item
    ended = False
    if last_frame is not None:
        f.seek(last_frame.offset)
        raw = f.read(FRAME_HEADER_SIZE + last_frame.clen)
        frame = _Frame(last_frame.offset, last_frame.count, last_frame.first_seq,
                       last_frame.ts_lo, last_frame.ts_hi, last_frame.clen, last_frame.ulen,
                       raw[FRAME_HEADER_SIZE:])
        if _crc32(frame.payload, _crc32(raw[:40])) != struct.unpack_from("<I", raw, 40)[0]:
            # the last frame is damaged: it and what follows is the tail to cut
            return (last_frame.first_seq - 1, _Damage(last_frame.offset, size -
                    last_frame.offset, "last frame CRC mismatch", False, True), False)
        try:
            kinds, _, _ = _FrameDecoder(schema).index(frame)
            ended = int(kinds[-1]) == K_RECORDING_ENDED
        except _BadFrame:
            pass
    return last_seq, tail, ended


__all__ = [
    "EventLog",
    "LogWriter",
    "Problem",
    "SegmentInfo",
    "SegmentStats",
    "TornTail",
    "VerifyReport",
    "FORMAT_VERSION",
    "check_date",
    "day_of",
]
