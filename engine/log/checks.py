"""Checking the log: `verify` (every frame of a day), `inspect` (per-segment statistics) and the
recovery a new writer runs first.

Recovery follows Kafka: a torn tail (a crash mid-write) is truncated to the last whole frame by
``verify(repair=True)`` and by the next writer of the same stream and day; a corrupt frame in the
middle is reported with its offset and skipped by lenient readers (strict readers raise).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import msgspec
import numpy as np

from .. import platform as plat
from ..clock import NS_PER_S
from ..errors import LogError
from ..events import K_INSTRUMENT, K_RECORDING_ENDED, KIND_NAMES, Instrument
from .format import (
    SEGMENT_SUFFIX,
    BadFrame,
    Damage,
    Frame,
    SegmentFile,
    SegmentInfo,
    open_segment,
    parse_segment_name,
    writer_alive,
)
from .reader import Problem

log = logging.getLogger(__name__)


class TornTail(msgspec.Struct, frozen=True):
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

    def summary(self) -> "VerifySummary":
        return VerifySummary(date=self.date, ok=self.ok, segments=self.segments,
                             frames=self.frames, events=self.events,
                             bad_frames=list(self.bad_frames), torn_tails=list(self.torn_tails),
                             truncated_bytes=self.truncated_bytes, repaired=list(self.repaired),
                             skipped_open=list(self.skipped_open))


class VerifySummary(msgspec.Struct, frozen=True, kw_only=True):
    """`mia verify --json`: one day's verdict."""

    date: str
    ok: bool
    segments: int
    frames: int
    events: int
    bad_frames: list[Problem]
    torn_tails: list[TornTail]
    truncated_bytes: int
    repaired: list[str]
    skipped_open: list[str]


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

    def summary(self) -> "SegmentSummary":
        i = self.info
        return SegmentSummary(
            path=str(i.path), stream=i.stream, recording_id=i.recording_id, state=self.state,
            frames=self.frames, events=self.events, first_seq=self.first_seq,
            last_seq=self.last_seq, first_ts=self.first_ts, last_ts=self.last_ts, bytes=i.size,
            uncompressed_bytes=self.uncompressed_bytes,
            compression_ratio=(self.uncompressed_bytes / i.size) if i.size else None,
            kinds=dict(self.kinds), instruments=dict(self.instruments),
            bad_frames=self.bad_frames, torn_bytes=self.torn_bytes,
            schema_version=i.schema_version, mia_version=i.metadata.get("mia_version", ""))


class SegmentSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One segment as `mia inspect` shows it."""

    path: str
    stream: str
    recording_id: str
    state: str  # clean | open | crashed | torn
    frames: int
    events: int
    first_seq: int | None
    last_seq: int | None
    first_ts: int | None
    last_ts: int | None
    bytes: int
    uncompressed_bytes: int
    compression_ratio: float | None
    kinds: dict[str, int]
    instruments: dict[str, int]
    bad_frames: int
    torn_bytes: int
    schema_version: int
    mia_version: str


class GapTotals(msgspec.Struct, frozen=True):
    count: int
    seconds: float


class DaySummary(msgspec.Struct, frozen=True, kw_only=True):
    """One day as `mia inspect` shows it: counts, time range, rate, gaps, size, compression."""

    date: str
    segments: list[SegmentSummary]
    events: int
    bytes: int
    uncompressed_bytes: int
    compression_ratio: float | None
    kinds: dict[str, int]
    first_ts: int | None
    last_ts: int | None
    span_s: float
    events_per_s: float
    gaps: GapTotals


def day_summary(date: str, segments: list[SegmentSummary], gaps: list[tuple[int, int]]
                ) -> DaySummary:
    """Per-day totals of the segments' summaries; `gaps` are the day's Gap windows (ns)."""
    kinds: dict[str, int] = {}
    for seg in segments:
        for k, v in seg.kinds.items():
            kinds[k] = kinds.get(k, 0) + v
    firsts = [seg.first_ts for seg in segments if seg.first_ts is not None]
    lasts = [seg.last_ts for seg in segments if seg.last_ts is not None]
    first, last = (min(firsts), max(lasts)) if firsts else (None, None)
    span = (last - first) / NS_PER_S if firsts else 0.0
    events = sum(seg.events for seg in segments)
    size = sum(seg.bytes for seg in segments)
    raw = sum(seg.uncompressed_bytes for seg in segments)
    gap_ns = sum(max(0, hi - lo) for lo, hi in gaps)
    return DaySummary(date=date, segments=segments, events=events, bytes=size,
                      uncompressed_bytes=raw, compression_ratio=raw / size if size else None,
                      kinds=kinds, first_ts=first, last_ts=last, span_s=span,
                      events_per_s=events / span if span > 0 else 0.0,
                      gaps=GapTotals(len(gaps), gap_ns / NS_PER_S))


def verify(infos: Sequence[SegmentInfo], repair: bool = False) -> VerifyReport:
    """Check every frame of a day's segments (CRC, decompression, decoding); optionally
    truncate torn tails of segments nobody is writing."""
    report = VerifyReport(date=infos[0].date, segments=len(infos))
    for info in infos:
        tail: Damage | None = None
        with open_segment(info.path) as seg:
            dec = seg.decoder()
            for item in seg.scan():
                if isinstance(item, Damage):
                    if item.at_end:
                        tail = item
                    else:
                        report.bad_frames.append(Problem(str(info.path), item.offset,
                                                         item.reason))
                    continue
                try:
                    dec.events(item)
                except BadFrame as exc:
                    report.bad_frames.append(Problem(str(info.path), item.offset, str(exc)))
                    continue
                report.frames += 1
                report.events += item.count
        if tail is None:
            continue
        report.torn_tails.append(TornTail(str(info.path), tail.offset, tail.length, tail.reason))
        if not repair:
            continue
        if writer_alive(info.path):
            report.skipped_open.append(str(info.path))
            continue
        with open(info.path, "r+b") as f:
            f.truncate(tail.offset)
            os.fsync(f.fileno())
        report.truncated_bytes += tail.length
        report.repaired.append(str(info.path))
        log.warning("truncated torn tail path=%s offset=%d bytes=%d", info.path, tail.offset,
                    tail.length)
    return report


def inspect(infos: Sequence[SegmentInfo]) -> list[SegmentStats]:
    """Per-segment statistics: state, counts per kind and symbol, time range."""
    return [_segment_stats(info) for info in infos]


def _segment_stats(info: SegmentInfo) -> SegmentStats:
    st = SegmentStats(info=info, state="clean")
    kind_counts = np.zeros(256, np.int64)
    inst_counts: dict[int, int] = {}
    symbols: dict[int, str] = {}
    last_kind = -1
    with open_segment(info.path) as seg:
        dec = seg.decoder()
        for item in seg.scan():
            if isinstance(item, Damage):
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
            except BadFrame:
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
    elif writer_alive(info.path):
        st.state = "open"
    else:
        st.state = "crashed"
    return st


def recover_stream(day_dir: Path, stream: str) -> int:
    """Before a new writer of `stream` in `day_dir`: truncate torn tails, note crashed segments,
    and return the last seq used (-1 when none)."""
    last = -1
    for path in sorted(day_dir.glob(f"*{SEGMENT_SUFFIX}")):
        parsed = parse_segment_name(path)
        if parsed is None or parsed[2] != stream:
            continue
        fd = os.open(path, os.O_RDWR)
        try:
            if not plat.try_lock(fd):
                raise LogError(f"{path}: stream {stream!r} of {day_dir.name} is being written "
                               f"by another writer") from None
            with os.fdopen(os.dup(fd), "rb") as f:
                seg_last, torn, ended = _last_seq_and_tail(SegmentFile(f, path))
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


def _last_seq_and_tail(seg: SegmentFile) -> tuple[int, Damage | None, bool]:
    """(last seq, tail damage or None, ends with RecordingEnded) of a segment, by walking frame
    headers (only the last frame is decompressed)."""
    size = seg.size()
    last_seq = -1
    last_frame: Frame | None = None
    tail = None
    # Payloads are skipped (window excludes everything) except where damage forces a CRC scan
    for item in seg.scan(size=size, lo=2**63 - 1):
        if isinstance(item, Frame):
            last_seq = max(last_seq, item.first_seq + item.count - 1)
            last_frame = item
        elif item.at_end:
            tail = item
    ended = False
    if last_frame is not None:
        frame = seg.load(last_frame)
        if frame is None:
            # the last frame is damaged: it and what follows is the tail to cut
            return (last_frame.first_seq - 1, Damage(last_frame.offset, size - last_frame.offset,
                    "last frame CRC mismatch", False, True), False)
        try:
            kinds, _, _ = seg.decoder().index(frame)
            ended = int(kinds[-1]) == K_RECORDING_ENDED
        except BadFrame:
            pass
    return last_seq, tail, ended
