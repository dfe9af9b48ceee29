"""Writing the log: one `LogWriter` per stream and run, a segment per UTC day.

Durability (fsync policy): "always" syncs every frame, "interval" (default) at most every
``fsync_interval_s`` of wall time when a frame is written or on ``tick()``, "never" leaves it to
the OS. Every frame is written with one unbuffered ``writev`` as soon as it closes, so a killed
process loses at most the open frame; a clean close loses nothing. A writer holds an exclusive
``flock`` on its segment while open: that is how readers and ``inspect`` tell a segment being
written from one whose writer died.

Each event is encoded once. With an ``on_write`` hook, each is encoded as it is appended, the
hook is handed those bytes (the live pipeline decodes its columns from them and publishes them)
and the frame's payload is built from them; without one, a frame's events are encoded in one
call when it is written. Both give the same bytes.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
import typing
import uuid
from operator import attrgetter
from pathlib import Path
from typing import Callable, Iterable, Literal, Sequence

import msgspec
import zstandard

from mia import __version__

from .. import platform as plat
from ..clock import Clock, day_bounds, utc_day
from ..config import ConfigBase
from ..errors import DiskFullError, LogError, UsageError
from ..events import SCHEMA_VERSION, Event, EventCodec, Instrument, RecordingEnded, RecordingStarted
from .checks import recover_stream
from .format import (
    FORMAT_VERSION,
    FORMAT_VERSIONS,
    RECORDING_ID_RE,
    STREAM_RE,
    ZSTD_LEVEL,
    encode_frame_header,
    encode_segment_header,
    frame_payload,
    segment_name,
)

log = logging.getLogger(__name__)

FsyncPolicy = Literal["always", "interval", "never"]
FSYNC_POLICIES: tuple[str, ...] = typing.get_args(FsyncPolicy)
_DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
_ts_recv_of = attrgetter("ts_recv")

# (seq, event, the event's EventCodec bytes): every row a writer writes, in order
OnWrite = Callable[[int, Event, bytes], None]


class LogConfig(ConfigBase):
    """The ``[log]`` table: how writers sync and cut frames."""

    fsync: FsyncPolicy = "interval"
    fsync_interval_s: float = 1.0
    frame_max_events: int = 4096
    frame_max_ms: float = 100.0
    format_version: int = FORMAT_VERSION  # 2: columnar frames; 1: msgpack frames (older mia)


class LogWriter:
    """Appends events to one stream of the log; rolls to a new segment at UTC midnight.

    Use as a context manager, or call ``close()``. Not thread-safe: one writer per thread.
    """

    def __init__(self, root: Path, stream: str, *, recording_id: str | None,
                 sources: Sequence[str], config_fingerprint: str, fsync: str,
                 fsync_interval_s: float, frame_max_events: int, frame_max_ms: float,
                 clock: Clock, on_write: OnWrite | None = None,
                 derived_kinds: Sequence[int] = (), chain_snapshots: bool = False,
                 format_version: int = FORMAT_VERSION,
                 columns_ready: Callable[[], bool] | None = None) -> None:
        if not STREAM_RE.match(stream):
            raise UsageError(f"bad stream name {stream!r}: use [a-z0-9_]+")
        if fsync not in FSYNC_POLICIES:
            raise UsageError(f"bad fsync policy {fsync!r}: one of {', '.join(FSYNC_POLICIES)}")
        if recording_id is None:
            recording_id = uuid.uuid4().hex[:16]
        if not RECORDING_ID_RE.match(recording_id):
            raise UsageError(f"bad recording id {recording_id!r}: use [A-Za-z0-9_.]+")
        if format_version not in FORMAT_VERSIONS:
            raise UsageError(f"bad log format version {format_version}: one of "
                             f"{', '.join(map(str, FORMAT_VERSIONS))}")
        if frame_max_events < 1:
            raise UsageError(f"frame_max_events must be >= 1, got {frame_max_events}")
        self._root = root
        self._stream = stream
        self._recording_id = recording_id
        self._sources = list(sources)
        self._derived_kinds = sorted(derived_kinds)
        self._chain_snapshots = bool(chain_snapshots)  # RecordingStarted.chain_snapshots
        self._fingerprint = config_fingerprint
        self._fsync = fsync
        self._fsync_interval = fsync_interval_s
        self._format = format_version
        self._columnar = None  # frame2.encode_span, imported (numba) at the first frame
        # format 2: frames are written as msgpack payloads (mode 0: the same events, exactly,
        # only bigger and slower to read) until columns_ready() is true, e.g. until a thread has
        # compiled the column encoder's numba kernels: a recorder on a cold numba cache logs its
        # first events at once instead of waiting seconds for the compiler (mia.warmup)
        self._columns_ready = columns_ready
        self._max_events = frame_max_events
        self._max_ns = int(frame_max_ms * 1e6)
        self._clock = clock
        # sees every row this writer writes, its own bracketing and rollover rows included, so a
        # live pipeline hands its reducers exactly what a replay will read
        self._on_write = on_write
        # the codec's msgspec encoder itself: EventCodec.encode's Python frame costs ~80 ns a
        # call, and this runs for every event recorded
        self._encode = EventCodec().encode_fast
        self._cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
        self._pending: list[Event] = []
        self._pending_encoded: list[bytes] = []  # the open frame's events, encoded (on_write)
        self._frame_end = 0  # the open frame closes at this ts_recv (its first's + frame_max_ms)
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
        self._open_segment(utc_day(now), now)

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
        ts = event.ts_recv
        if not self._day_lo <= ts < self._day_hi:  # another day, or closed (an empty range)
            if self._closed:
                raise LogError(f"{self._path}: append to a closed writer")
            self._rollover(ts)
        if type(event) is Instrument:
            self._instruments[event.instrument] = event
        pending = self._pending
        if not pending:
            self._frame_end = ts + self._max_ns
            self._frame_opened_ns = self._clock.now_ns()
        pending.append(event)
        self._events_written += 1
        seq = self._next_seq
        self._next_seq = seq + 1
        if self._on_write is not None:
            encoded = self._encode(event)
            self._pending_encoded.append(encoded)
            self._on_write(seq, event, encoded)
        if len(pending) >= self._max_events or ts >= self._frame_end:
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
            self._day_hi = self._day_lo  # append's one range check catches a closed writer

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close("stopped" if exc_type is None else f"error: {exc_type.__name__}")

    def __repr__(self) -> str:
        return f"LogWriter(path={str(self._path)!r}, last_seq={self.last_seq})"

    # internals
    def _append_internal(self, event: Event) -> None:
        if not self._pending:
            self._frame_end = event.ts_recv + self._max_ns
            self._frame_opened_ns = self._clock.now_ns()
        self._pending.append(event)
        if self._on_write is not None:
            encoded = self._encode(event)
            self._pending_encoded.append(encoded)
            self._on_write(self._next_seq, event, encoded)
        self._next_seq += 1

    def _open_segment(self, date: str, ts_start: int) -> None:
        day_dir = self._root / date
        day_dir.mkdir(parents=True, exist_ok=True)
        self._next_seq = recover_stream(day_dir, self._stream) + 1
        created = time.time_ns()
        # The header is written under a hidden temporary name and the segment appears under its
        # real name only once the header is whole: a reader listing the day (a catch-up joining
        # a live recording) never meets a half-written header.
        tmp = day_dir / f".{created:019d}-{self._recording_id}-{self._stream}.tmp"
        fd = plat.open_append(tmp)
        if not plat.try_lock(fd):
            os.close(fd)
            raise LogError(f"{tmp}: locked by another writer")
        self._fd, self._date = fd, date
        self._day_lo, self._day_hi = day_bounds(date)
        meta = {"recording_id": self._recording_id, "stream": self._stream, "created_ns": created,
                "mia_version": __version__, "schema_version": SCHEMA_VERSION, "date": date,
                "host": socket.gethostname(), "pid": os.getpid()}
        self._write_all([encode_segment_header(meta, self._format)])
        name_ns = created
        while True:
            path = day_dir / segment_name(name_ns, self._recording_id, self._stream)
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
            self._sources, self._stream, socket.gethostname(), os.getpid(),
            list(self._derived_kinds), self._chain_snapshots))
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
        new_date = utc_day(ts)
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
        if self._on_write is None:
            payload = self._encode(events)  # one call for the frame: nobody needs them one by one
        else:
            payload = frame_payload(self._pending_encoded)
        lo = hi = None
        if self._format == 2 and self._columns_ready is not None and not self._columns_ready():
            from .frame2 import MODE_MSGPACK  # the same events, as msgpack: no kernel to wait for

            payload = bytes((MODE_MSGPACK,)) + payload
        elif self._format == 2:
            if self._columnar is None:
                from .frame2 import encode_span

                self._columnar = encode_span
            payload, lo, hi = self._columnar(payload, n)  # the ts_recv span from the columns
        compressed = self._cctx.compress(payload)
        if lo is None:
            ts = list(map(_ts_recv_of, events))
            lo, hi = min(ts), max(ts)
        head = encode_frame_header(compressed, len(payload), n, self._next_seq - n, lo, hi)
        self._write_all([head, compressed])
        self._pending = []
        self._pending_encoded = []
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
            written = plat.write_parts(self._fd, parts)
            if written < total:  # rare: finish a short write
                rest = b"".join(parts)[written:]
                while rest:
                    rest = rest[os.write(self._fd, rest):]
        except OSError as exc:
            if exc.errno in _DISK_FULL:
                raise DiskFullError(f"{self._path}: cannot write: {exc.strerror}") from exc
            raise

    def _sync(self) -> None:
        plat.datasync(self._fd)
        self._last_sync = time.monotonic()
        self._dirty = False


def _fsync_dir(path: Path) -> None:
    plat.fsync_dir(path)
