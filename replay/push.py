"""`mia push`: upload closed days of the local log to object storage (any fsspec URL).

A day is pushed only when it is closed and sound: no segment is still being written (its
writer holds the lock, or it has no RecordingEnded and changed in the last `settle_s`
seconds), and `EventLog.verify` finds no damage. Each segment goes up as
``<url>/<date>/<segment name>``, then its frame index (engine/log/remote.py) beside it; the
index carries the segment's size and SHA-256, so a segment already there with the same size and
checksum is skipped: pushing twice uploads nothing the second time.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import msgspec

from mia.engine.clock import parse_date
from mia.engine.errors import LogError, UsageError
from mia.engine.log import EventLog
from mia.engine.log.checks import inspect as inspect_segments
from mia.engine.log.remote import build_index, decode_index, encode_index, index_path
from mia.engine.storage import RemotePath, guarded, is_url, local_only

log = logging.getLogger(__name__)

SETTLE_S = 300.0  # a segment without RecordingEnded changed this recently may still be written


class PushedSegment(msgspec.Struct, frozen=True):
    name: str
    bytes: int
    sha256: str
    action: str  # uploaded | skipped


class PushSummary(msgspec.Struct, frozen=True, kw_only=True):
    """`mia push --json`: what one day's push did."""

    date: str
    url: str
    segments: list[PushedSegment]
    uploaded: int
    skipped: int
    bytes_uploaded: int
    seconds: float


def _check_closed(log_: EventLog, date: str, settle_s: float, now: float) -> None:
    for st in inspect_segments(log_.segments(date)):
        path = st.info.path
        if st.state == "open":
            raise LogError(f"{path} is being written (its writer is alive): push closed days "
                           f"only")
        if st.state == "crashed":
            age = now - Path(path).stat().st_mtime
            if age < settle_s:
                raise LogError(f"{path} has no RecordingEnded and changed {age:.0f}s ago: it may "
                               f"still be written; push it once the recording has stopped")


def _remote_sha256(target: RemotePath, size: int) -> str | None:
    """The checksum the index beside an uploaded segment records, when the object there has
    the same size."""
    if not target.is_file() or target.size() != size:
        return None
    idx = index_path(target)
    try:
        index = decode_index(idx.read_bytes())
    except FileNotFoundError:
        return None
    if index is None or index.size != size:
        return None
    return index.sha256


def push_day(root: str, date: str, url: str, *, settle_s: float = SETTLE_S,
             progress: Callable[[str], None] | None = None,
             clock: Callable[[], float] = time.time) -> PushSummary:
    """Upload one closed, verified day under `root` to `url` (see the module docstring)."""
    t0 = time.monotonic()
    date = parse_date(date)
    if not is_url(url):
        raise UsageError(f"push needs a URL such as s3://bucket/prefix, not {url!r}")
    log_ = EventLog(root)
    local_only(log_.root, "push (the source)")
    _check_closed(log_, date, settle_s, clock())
    report = log_.verify(date)
    if not report.ok:
        what = [str(p) for p in report.bad_frames] + [
            f"{t.path}: torn tail at byte {t.offset}" for t in report.torn_tails]
        raise LogError(f"{date} does not verify ({'; '.join(what[:3])}); run `mia verify --date "
                       f"{date}` and push a sound day")
    dest_day = RemotePath.from_url(url) / date
    out: list[PushedSegment] = []
    sent = 0
    infos = log_.segments(date)
    for n, info in enumerate(infos, 1):
        local = Path(info.path)
        index = build_index(local)
        target = dest_day / local.name
        if _remote_sha256(target, index.size) == index.sha256:
            out.append(PushedSegment(local.name, index.size, index.sha256, "skipped"))
            if progress:
                progress(f"push {date} [{n}/{len(infos)}] {local.name}: already there")
            continue
        if progress:
            progress(f"push {date} [{n}/{len(infos)}] {local.name}: {index.size:,} B")
        guarded(str(target), target.fs.put_file, str(local), target.path)
        guarded(str(target), target.fs.pipe_file, index_path(target).path, encode_index(index))
        target.fs.invalidate_cache(dest_day.path)
        sent += index.size
        out.append(PushedSegment(local.name, index.size, index.sha256, "uploaded"))
        log.info("pushed path=%s bytes=%d", target, index.size)
    uploaded = sum(1 for s in out if s.action == "uploaded")
    return PushSummary(date=date, url=str(dest_day), segments=out, uploaded=uploaded,
                       skipped=len(out) - uploaded, bytes_uploaded=sent,
                       seconds=time.monotonic() - t0)
