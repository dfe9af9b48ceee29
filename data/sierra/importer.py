"""History from Sierra's files into the log: `mia import scid|depth PATH...`.

Each file is read in chunks (bounded memory) and written per UTC day into the `import` stream
with ts_recv = ts_event (a writer per day driven by a `ManualClock` at the events' times), so
`mia replay --date D` folds an imported day like a recorded one.

- Instrument ids: a day's ids are seeded from the `Instrument` declarations already in that
  day (every stream): the same symbol keeps its id, a new symbol gets an unused one.
- Idempotent: every import segment names what it holds in its `RecordingStarted.sources`:
  ``sierra-scid <file id> records=<first>-<last> symbol=<symbol> file=<name>``. The file id
  hashes the file's name, header and first record, so a copy of the file is the same source and
  a file Sierra appended to since is too; records already covered by a segment of their day are
  skipped, new ones imported.
- Damage: a record with an impossible time (or an unknown depth command, a non-finite price) is
  reported with its byte offset and left out; a torn tail is reported; the rest is imported.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Callable, Final, Iterable, Literal, Mapping

import msgspec
import numpy as np

from mia.engine.clock import NS_PER_DAY, day_bounds, parse_date, utc_day
from mia.engine.errors import UsageError
from mia.engine.log import EventLog

from ..history import IMPORT_STREAM, DayIds, ImportWriter, covered_ranges, subtract_ranges
from . import depth as _depth
from . import scid as _scid
from .common import SC_EPOCH_US, SierraFileError
from .symbols import instrument_for, symbol_of_file

logger = logging.getLogger(__name__)

Kind = Literal["scid", "depth"]
CHUNK_RECORDS: Final = 1 << 18
MAX_DAMAGE_REPORTS: Final = 20
_US_PER_DAY: Final = 86_400_000_000
_PROVENANCE = re.compile(r"^sierra-(?P<kind>scid|depth) (?P<id>[0-9a-f]{16}) "
                         r"records=(?P<a>\d+)-(?P<b>\d+)")


class Damage(msgspec.Struct, frozen=True):
    offset: int  # byte offset in the file
    records: int  # damaged records from there (0 for a torn tail)
    reason: str


class FileImport(msgspec.Struct):
    path: str
    kind: str
    symbol: str
    file_id: str
    records: int  # whole records in the file
    imported: int = 0  # records written now
    already_present: int = 0  # records an earlier import holds
    outside_dates: int = 0  # records outside --from/--to
    damaged: int = 0
    events: int = 0
    days: list[str] = []
    segments: list[str] = []
    damage: list[Damage] = []


class ImportSummary(msgspec.Struct):
    data_dir: str
    stream: str
    files: list[FileImport]
    records: int = 0
    imported: int = 0
    already_present: int = 0
    damaged: int = 0
    events: int = 0


class _Format:
    def __init__(self, kind: Kind) -> None:
        mod = _scid if kind == "scid" else _depth
        self.kind = kind
        self.header_size = mod.HEADER_SIZE
        self.record_size = mod.RECORD_SIZE
        self.dtype = mod.RECORD_DTYPE
        self.parse_header = mod.parse_header
        self.check = mod.check_records


def file_id(path: str | Path, head: bytes) -> str:
    """Identity of a Sierra file: its name and its first bytes (header and first record)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(Path(path).name.encode())
    h.update(b"\0")
    h.update(head)
    return h.hexdigest()


def provenance(kind: str, fid: str, first: int, last: int, symbol: str, name: str) -> str:
    return f"sierra-{kind} {fid} records={first}-{last} symbol={symbol} file={name}"


def imported_ranges(log: EventLog, day: str, fid: str) -> list[tuple[int, int]]:
    """Record ranges [first, last] of file `fid` that import segments of `day` already hold."""
    return covered_ranges(log, day, fid, _PROVENANCE)


def _runs(f, fmt: _Format, n: int, report: FileImport, chunk: int
          ) -> list[tuple[int, int, int]]:
    """(day number, first, last) runs of consecutive valid records of one UTC day."""
    runs: list[list[int]] = []
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        f.seek(fmt.header_size + lo * fmt.record_size)
        recs = np.frombuffer(f.read((hi - lo) * fmt.record_size), fmt.dtype)
        ok = fmt.check(recs)
        day = np.where(ok, (recs["dt"] - SC_EPOCH_US) // _US_PER_DAY, -1)
        change = np.flatnonzero(np.diff(day)) + 1
        starts = np.concatenate(([0], change)).tolist()
        ends = np.concatenate((change - 1, [len(day) - 1])).tolist()
        keys = day[starts].tolist()
        for s, e, k in zip(starts, ends, keys):
            s, e = s + lo, e + lo
            if k < 0:
                _note_damage(report, fmt, s, e)
                continue
            if runs and runs[-1][0] == k and runs[-1][2] == s - 1:
                runs[-1][2] = e
            else:
                runs.append([k, s, e])
    return [(k, a, b) for k, a, b in runs]


def _note_damage(report: FileImport, fmt: _Format, first: int, last: int) -> None:
    """Records [first, last] are damaged: extend the last report when they continue it."""
    offset = fmt.header_size + first * fmt.record_size
    count = last - first + 1
    report.damaged += count
    prev = report.damage[-1] if report.damage else None
    if prev is not None and prev.offset + prev.records * fmt.record_size == offset:
        report.damage[-1] = Damage(prev.offset, prev.records + count, prev.reason)
    elif len(report.damage) < MAX_DAMAGE_REPORTS:
        report.damage.append(Damage(offset, count, "damaged records (impossible time, price "
                                    "or command)"))


def import_files(data_dir: str | os.PathLike, paths: Iterable[str | os.PathLike], kind: Kind, *,
                 symbol: str | None = None, date_from: str | None = None,
                 date_to: str | None = None, tick_sizes: Mapping[str, float] | None = None,
                 point_values: Mapping[str, float] | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 chunk_records: int = CHUNK_RECORDS, frame_max_events: int = 4096,
                 fsync: str = "interval") -> ImportSummary:
    """Import Sierra `.scid` (kind "scid") or `.depth` files into `data_dir` (see module doc).

    `date_from`/`date_to` (YYYY-MM-DD, UTC, both inclusive) limit the days imported. Raises
    SierraFileError for a file that is not a Sierra file of that kind (bad header).
    """
    fmt = _Format(kind)
    lo_day = parse_date(date_from) if date_from else None
    hi_day = parse_date(date_to) if date_to else None
    if lo_day and hi_day and hi_day < lo_day:
        raise UsageError(f"empty range: --from {lo_day} is after --to {hi_day}")
    lo_n = day_bounds(lo_day)[0] // NS_PER_DAY if lo_day else None
    hi_n = day_bounds(hi_day)[0] // NS_PER_DAY if hi_day else None
    log = EventLog(data_dir)
    ids = DayIds(log)
    paths = [Path(p) for p in paths]
    if not paths:
        raise UsageError("no files to import")
    sizes = {}
    for p in paths:
        if not p.is_file():
            raise UsageError(f"no such file: {p}")
        sizes[p] = p.stat().st_size
    total = sum(max(0, (s - fmt.header_size) // fmt.record_size) for s in sizes.values())
    done = 0
    summary = ImportSummary(str(data_dir), IMPORT_STREAM, [])
    for path in paths:
        size = sizes[path]
        with open(path, "rb") as f:  # read-only, shared: Sierra may keep writing
            head = f.read(fmt.header_size + fmt.record_size)
            fmt.parse_header(head, str(path))
            sym = symbol or symbol_of_file(path)
            n = (size - fmt.header_size) // fmt.record_size
            fid = file_id(path, head)
            report = FileImport(str(path), kind, sym, fid, n)
            summary.files.append(report)
            torn = (size - fmt.header_size) - n * fmt.record_size
            runs = _runs(f, fmt, n, report, chunk_records)
            if torn:
                report.damage.append(Damage(fmt.header_size + n * fmt.record_size, 0,
                                            f"torn tail: {torn} bytes of a partial record"))
            for daynum, first, last in runs:
                if (lo_n is not None and daynum < lo_n) or (hi_n is not None and daynum > hi_n):
                    report.outside_dates += last - first + 1
                    done += last - first + 1
                    continue
                day = utc_day(daynum * NS_PER_DAY)
                covered = imported_ranges(log, day, fid)
                todo = subtract_ranges(first, last, covered)
                report.already_present += (last - first + 1) - sum(b - a + 1 for a, b in todo)
                done += (last - first + 1) - sum(b - a + 1 for a, b in todo)
                for a, b in todo:
                    iid = ids.id_for(day, sym)
                    written, seg = _write_range(log, f, fmt, path, fid, sym, iid, a, b,
                                                chunk_records, tick_sizes, point_values,
                                                frame_max_events, fsync,
                                                _progress_from(progress, done, total))
                    done += b - a + 1
                    report.imported += b - a + 1
                    report.events += written
                    report.segments.append(seg)
                    if day not in report.days:
                        report.days.append(day)
            if progress is not None:
                progress(done, total)
        if report.damage:
            for d in report.damage:
                logger.warning("sierra import damage path=%s offset=%d records=%d reason=%s",
                               path, d.offset, d.records, d.reason)
        summary.records += report.records
        summary.imported += report.imported
        summary.already_present += report.already_present
        summary.damaged += report.damaged
        summary.events += report.events
    return summary


def _write_range(log: EventLog, f, fmt: _Format, path: Path, fid: str, sym: str, iid: int,
                 first: int, last: int, chunk: int, tick_sizes, point_values,
                 frame_max_events: int, fsync: str, progress) -> tuple[int, str]:
    """Records [first, last] (one UTC day, all valid) into one import segment."""
    f.seek(fmt.header_size + first * fmt.record_size)
    first_rec = np.frombuffer(f.read(fmt.record_size), fmt.dtype)
    t0 = int(_scid_ns(first_rec["dt"][0]))
    src = provenance(fmt.kind, fid, first, last, sym, path.name)
    inst = instrument_for(sym, iid, t0, f"sierra-import:{fmt.kind}", tick_sizes=tick_sizes,
                          point_values=point_values)
    if fmt.kind == "scid":
        conv = _scid.ScidConverter(iid)
    else:
        after_end = True
        if first > 0:  # the batch state the record before leaves
            f.seek(fmt.header_size + (first - 1) * fmt.record_size)
            prev = np.frombuffer(f.read(fmt.record_size), fmt.dtype)
            after_end = bool(prev["flags"][0] & _depth.FLAG_END_OF_BATCH)
        conv = _depth.DepthConverter(iid, after_end=after_end)
    with ImportWriter(log, [src], t0, frame_max_events=frame_max_events, fsync=fsync) as writer:
        writer.append(inst)
        for lo in range(first, last + 1, chunk):
            hi = min(last + 1, lo + chunk)
            f.seek(fmt.header_size + lo * fmt.record_size)
            recs = np.frombuffer(f.read((hi - lo) * fmt.record_size), fmt.dtype)
            writer.append_many(conv.events(recs))
            progress(hi - first)
    return writer.events, writer.name


def _progress_from(progress, base: int, total: int) -> Callable[[int], None]:
    if progress is None:
        return lambda k: None
    return lambda k: progress(base + k, total)


def _scid_ns(us) -> int:
    return (int(us) - SC_EPOCH_US) * 1000


__all__ = ["import_files", "ImportSummary", "FileImport", "Damage", "imported_ranges",
           "file_id", "SierraFileError"]
