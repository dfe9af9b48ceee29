"""The live source: follow the files Sierra Chart appends to, as it writes them.

`SierraFollower` polls `<data_dir>/<symbol>.scid` and today's
`<data_dir>/MarketDepthData/<symbol>.<YYYY-MM-DD>.depth` every `poll_s`:

- files that exist at start are followed from their END (no history in today's live log; the
  history is `mia import`'s job); files that appear later (the next day's depth file, a symbol
  Sierra starts tracking) are read from their beginning;
- partial records (Sierra's flush can end inside one) are held back by the sans-IO readers;
- at the UTC day change the new depth file is picked up, and yesterday's is still read for
  `rollover_grace_s` (Sierra flushes what it buffered before midnight after it);
- a file that stops growing for `silence_s` while `market_open(ts)` says its market trades is
  reported as `FeedStatus(FEED_UNAVAILABLE)`; when it grows again, `FeedStatus(FEED_AVAILABLE)`
  and a `Gap` spanning the silence follow;
- a file replaced or truncated under us (Sierra rewrote it after a download) is reopened at its
  end, with a `Gap`;
- files are opened read-only and never locked: Sierra keeps writing.

Instrument ids come from the recorder's shared `InstrumentRegistry`. `ts_recv` is one clock
read per file per poll; `ts_event` is the record's own time.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

import msgspec
import numpy as np

from mia.engine.clock import NS_PER_S, Clock, SystemClock, utc_day
from mia.engine.events import (
    FEED_AVAILABLE,
    FEED_SUBSCRIBED,
    FEED_UNAVAILABLE,
    Event,
    FeedStatus,
    Gap,
    SourceError,
)
from mia.engine.instruments import InstrumentRegistry

from . import depth as _depth
from . import scid as _scid
from .common import SC_EPOCH_US, SierraFileError
from .symbols import instrument_for

logger = logging.getLogger(__name__)

DEPTH_FOLDER = "MarketDepthData"
READ_LIMIT = 8 << 20  # bytes read per file per poll: a big backlog is taken in steps


def scid_path(data_dir: str | Path, symbol: str) -> Path:
    return Path(data_dir) / f"{symbol}.scid"


def depth_path(data_dir: str | Path, symbol: str, date: str) -> Path:
    return Path(data_dir) / DEPTH_FOLDER / f"{symbol}.{date}.depth"


class _Tail:
    """One file being followed: the open handle, its sans-IO reader and converter."""

    def __init__(self, path: Path, kind: str, iid: int, *, from_start: bool) -> None:
        self.path = path
        self.kind = kind
        self.iid = iid
        self.from_start = from_start  # read from the beginning once it exists
        self.f = None
        self.ino = None
        self.reader = None
        self.conv = None
        self.last_growth_ns = 0
        self.silent_since_ns = 0  # 0: not reported silent
        self.close_after_ns = 0  # a previous day's depth file: closed after this time

    @property
    def fmt(self):
        return _scid if self.kind == "scid" else _depth

    def open(self, now_ns: int, resume: tuple[int, int] | None = None) -> bool:
        """Open the file when it exists; position at its end unless `from_start`, or after the
        last record a previous run of today logged (`resume`: its ts_event and how many
        records at that time were logged)."""
        try:
            f = open(self.path, "rb")  # read-only; Python opens shared (never locks)
        except FileNotFoundError:
            return False
        fmt = self.fmt
        try:
            head = f.read(fmt.HEADER_SIZE)
            if len(head) < fmt.HEADER_SIZE:  # created, header not flushed yet
                f.close()
                return False
            fmt.parse_header(head, str(self.path))
            st = os.fstat(f.fileno())
            start = 0
            if not self.from_start:
                start = (st.st_size - fmt.HEADER_SIZE) // fmt.RECORD_SIZE
                if resume is not None:
                    start = resume_index(f, self.kind, start, *resume)
            after_end = True
            if self.kind == "depth" and start > 0:
                f.seek(fmt.HEADER_SIZE + (start - 1) * fmt.RECORD_SIZE)
                prev = np.frombuffer(f.read(fmt.RECORD_SIZE), fmt.RECORD_DTYPE)
                after_end = bool(prev["flags"][0] & _depth.FLAG_END_OF_BATCH)
            f.seek(fmt.HEADER_SIZE + start * fmt.RECORD_SIZE)
        except BaseException:
            f.close()
            raise
        if self.kind == "scid":
            self.reader = _scid.ScidReader(str(self.path), header=False, start_record=start)
            self.conv = _scid.ScidConverter(self.iid)
        else:
            self.reader = _depth.DepthReader(str(self.path), header=False, start_record=start)
            self.conv = _depth.DepthConverter(self.iid, after_end=after_end)
        self.f, self.ino = f, st.st_ino
        self.last_growth_ns = now_ns
        self.from_start = True  # a reopen after a replacement reads the new file whole
        return True

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None

    def replaced(self) -> bool:
        try:
            return os.stat(self.path).st_ino != self.ino
        except FileNotFoundError:
            return True

    def read(self, ts_recv: int) -> tuple[list[Event], int, int]:
        """New whole records as events; (events, records, damaged records)."""
        f, reader = self.f, self.reader
        pos = reader.offset + reader.pending
        size = os.fstat(f.fileno()).st_size
        if size <= pos:
            return [], 0, 0
        f.seek(pos)
        data = f.read(min(size - pos, READ_LIMIT))
        recs = reader.feed(data)
        if not len(recs):
            return [], 0, 0
        ok = self.fmt.check_records(recs)
        bad = int(len(recs) - ok.sum())
        if bad:
            recs = recs[ok]
        return self.conv.events(recs, ts_recv), len(recs), bad


class SierraFollower:
    """Follows Sierra's files for `symbols` under `data_dir` (see module doc).

    The recorder's source contract: `source`, `run()`, `stop()`, `emit(event)`.
    """

    def __init__(self, data_dir: str | os.PathLike, symbols: Sequence[str], *,
                 emit: Callable[[Event], None], clock: Clock | None = None,
                 registry: InstrumentRegistry | None = None, depth: bool = True,
                 poll_s: float = 0.05, silence_s: float = 30.0, rollover_grace_s: float = 30.0,
                 market_open: Callable[[int], bool] | None = None,
                 tick_sizes: Mapping[str, float] | None = None,
                 point_values: Mapping[str, float] | None = None,
                 date_of: Callable[[int], str] = utc_day,
                 log_root: str | os.PathLike | None = None,
                 resume_max_s: float = 600.0) -> None:
        self.data_dir = Path(data_dir)
        self.symbols = list(symbols)
        self.source = f"sierra:{self.data_dir}"
        self.emit = emit
        self.clock = clock or SystemClock()
        self.registry = registry or InstrumentRegistry()
        self.depth = depth
        self.poll_s = poll_s
        self.silence_ns = int(silence_s * NS_PER_S)
        self.grace_ns = int(rollover_grace_s * NS_PER_S)
        self.market_open = market_open
        self.date_of = date_of
        self.log_root = log_root
        self.resume_max_ns = int(resume_max_s * NS_PER_S)
        self.records = 0  # records turned into events
        self.damaged = 0
        self._stop = asyncio.Event()
        now = self.clock.now_ns()
        # instruments are built now: an unknown root is a usage error before anything runs
        self._instruments = [instrument_for(s, self.registry.id_for(s), now, self.source,
                                            tick_sizes=tick_sizes, point_values=point_values)
                             for s in self.symbols]
        self._tails: list[_Tail] = []
        self._depth_date = ""
        self._started = False

    # --- the source contract ----------------------------------------------------------------

    async def run(self) -> None:
        self._start()
        try:
            while not self._stop.is_set():
                self.poll()
                try:
                    await asyncio.wait_for(self._stop.wait(), self.poll_s)
                except asyncio.TimeoutError:
                    pass
            self.poll()  # what was flushed before the stop is taken
        finally:
            self.close()  # cancelled too: never leave Sierra's files open

    async def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Release the files (`run()` does it when it returns)."""
        for t in self._tails:
            t.close()

    # --- polling ------------------------------------------------------------------------------

    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        now = self.clock.now_ns()
        for inst in self._instruments:
            self.emit(msgspec.structs.replace(inst, ts_event=now, ts_recv=now))
        for inst in self._instruments:
            self._tails.append(_Tail(scid_path(self.data_dir, inst.symbol), "scid",
                                     inst.instrument, from_start=False))
        if self.depth:
            self._depth_date = self.date_of(now)
            for inst in self._instruments:
                self._tails.append(_Tail(depth_path(self.data_dir, inst.symbol, self._depth_date),
                                         "depth", inst.instrument, from_start=False))
        resume = (resume_points(self.log_root, utc_day(now), self.source)
                  if self.log_root is not None else {})
        for tail in self._tails:
            point = resume.get((self._symbol_of(tail.iid), tail.kind))
            if point is not None and tail.kind == "depth" and \
                    self.date_of(point[0]) != self._depth_date:
                point = None
            if point is not None and now - point[0] > self.resume_max_ns:
                self.emit(Gap(now, now, self.source, point[0], now,
                              f"{tail.path.name}: the recorder was down (mia import fills it)",
                              tail.iid))
                point = None
            opened = tail.open(now, point)
            where = (f"following {tail.path.name} from record {tail.reader.records}" if opened
                     else f"waiting for {tail.path.name}")
            status = FEED_SUBSCRIBED if opened else FEED_UNAVAILABLE
            self.emit(FeedStatus(now, now, self.source, status, tail.iid, where))
            if not opened:
                tail.from_start = True  # appears later: everything in it is new

    def poll(self) -> int:
        """One pass over every file; returns the events emitted."""
        if not self._started:
            self._start()
        now = self.clock.now_ns()
        emitted = 0
        if self.depth:
            self._roll_depth(now)
        for tail in list(self._tails):
            if tail.f is None:
                if not tail.open(now):
                    continue
                self._recovered(tail, now, f"{tail.path.name} appeared")
            try:
                if tail.replaced():
                    self._reopen(tail, now)
                    continue
                ts_recv = self.clock.now_ns()
                events, n, bad = tail.read(ts_recv)
            except SierraFileError as exc:
                self.emit(SourceError(now, now, self.source, str(exc), "file skipped"))
                tail.close()
                continue
            if bad:
                self.damaged += bad
                self.emit(SourceError(ts_recv, ts_recv, self.source,
                                      f"{tail.path.name}: {bad} damaged records skipped",
                                      "records left out"))
            if n or bad:
                if tail.silent_since_ns:
                    self._recovered(tail, ts_recv, f"{tail.path.name} grows again")
                tail.last_growth_ns = ts_recv
                self.records += n
                emit = self.emit
                for ev in events:
                    emit(ev)
                emitted += len(events)
            elif tail.close_after_ns and now >= tail.close_after_ns:
                tail.close()
                self._tails.remove(tail)
            else:
                self._check_silence(tail, now)
        return emitted

    def _roll_depth(self, now: int) -> None:
        date = self.date_of(now)
        if date == self._depth_date:
            return
        self._depth_date = date
        for tail in [t for t in self._tails if t.kind == "depth" and not t.close_after_ns]:
            tail.close_after_ns = now + self.grace_ns
            tail.silent_since_ns = 0
            new = _Tail(depth_path(self.data_dir, self._symbol_of(tail.iid), date), "depth",
                        tail.iid, from_start=True)
            new.last_growth_ns = now
            self._tails.append(new)
            if new.open(now):
                self.emit(FeedStatus(now, now, self.source, FEED_SUBSCRIBED, new.iid,
                                     f"following {new.path.name} from record 0"))
            if tail.f is None:
                self._tails.remove(tail)

    def _symbol_of(self, iid: int) -> str:
        return next(i.symbol for i in self._instruments if i.instrument == iid)

    def _check_silence(self, tail: _Tail, now: int) -> None:
        if tail.silent_since_ns or tail.close_after_ns or now - tail.last_growth_ns < self.silence_ns:
            return
        if self.market_open is not None and not self.market_open(now):
            return
        tail.silent_since_ns = tail.last_growth_ns
        secs = (now - tail.last_growth_ns) / NS_PER_S
        self.emit(FeedStatus(now, now, self.source, FEED_UNAVAILABLE, tail.iid,
                             f"{tail.path.name} has not grown for {secs:.0f}s"))

    def _recovered(self, tail: _Tail, now: int, detail: str) -> None:
        since = tail.silent_since_ns
        if not since:
            self.emit(FeedStatus(now, now, self.source, FEED_SUBSCRIBED, tail.iid,
                                 f"following {tail.path.name} from record {tail.reader.records}"))
            return
        tail.silent_since_ns = 0
        self.emit(FeedStatus(now, now, self.source, FEED_AVAILABLE, tail.iid, detail))
        self.emit(Gap(now, now, self.source, since, now, f"{tail.path.name} silent", tail.iid))

    def _reopen(self, tail: _Tail, now: int) -> None:
        tail.close()
        lost = tail.last_growth_ns
        tail.from_start = False  # the new file's history is not live data
        if tail.open(now):
            self.emit(Gap(now, now, self.source, lost, now,
                          f"{tail.path.name} was replaced; following the new file from its end",
                          tail.iid))
        else:
            tail.from_start = True


def resume_index(f, kind: str, end: int, ts_ns: int, count: int) -> int:
    """Index of the record after the `count`-th record at time `ts_ns` (records are in time
    order): where a run that logged up to there continues. `end` when the file holds nothing
    later."""
    fmt = _scid if kind == "scid" else _depth
    target = ts_ns // 1000 + SC_EPOCH_US

    def dt_at(i: int) -> int:
        f.seek(fmt.HEADER_SIZE + i * fmt.RECORD_SIZE)
        return int(np.frombuffer(f.read(8), "<i8")[0])

    lo, hi = 0, end
    while lo < hi:  # first record at or after the target time
        mid = (lo + hi) // 2
        if dt_at(mid) < target:
            lo = mid + 1
        else:
            hi = mid
    i = lo
    while i < end and count > 0:
        f.seek(fmt.HEADER_SIZE + i * fmt.RECORD_SIZE)
        rec = np.frombuffer(f.read(fmt.RECORD_SIZE), fmt.RECORD_DTYPE)
        if int(rec["dt"][0]) != target:
            break
        if kind == "scid" or int(rec["command"][0]) != _depth.NO_COMMAND:
            count -= 1
        i += 1
    return i


def resume_points(log_root: str | os.PathLike, date: str, source: str
                  ) -> dict[tuple[str, str], tuple[int, int]]:
    """What earlier runs of today logged from `source`: (symbol, "scid"|"depth") -> (the last
    ts_event, how many events at that time). Trades count .scid records, book levels .depth
    records (one event each)."""
    from mia.engine.events import K_BOOK_LEVEL, K_INSTRUMENT, K_TRADE, BookLevel, Instrument, Trade
    from mia.engine.log import EventLog

    log = EventLog(log_root)
    if date not in log.dates():
        return {}
    ids: dict[int, str] = {}
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for b in log.read_batches(date, streams="live", kinds=[Instrument, Trade, BookLevel]):
        inst = np.flatnonzero(b.kind == K_INSTRUMENT)
        for i in inst.tolist():
            ev = b.event(i)
            if ev.source == source:
                ids[ev.instrument] = ev.symbol
            else:
                ids.pop(ev.instrument, None)
        for k, name in ((K_TRADE, "scid"), (K_BOOK_LEVEL, "depth")):
            rows = b.kind == k
            if not rows.any():
                continue
            for iid, sym in ids.items():
                mask = rows & (b.instrument == iid)
                if not mask.any():
                    continue
                ts = b.ts_event[mask]
                last = int(ts[-1])
                n = int((ts == last).sum())
                prev = out.get((sym, name))
                if prev is not None and prev[0] == last:
                    n += prev[1]
                out[(sym, name)] = (last, n)
    return out


__all__ = ["SierraFollower", "scid_path", "depth_path", "DEPTH_FOLDER"]
