"""History from Databento DBN files into the log: `mia import dbn FILE.dbn[.zst]...`.

Decoding is the official `databento-dbn` decoder's (`DBNDecoder`, plain or zstd), fed the file
in 1 MiB pieces: memory stays bounded whatever the size of the file. Events go to the `import`
stream, one segment per UTC day of the records' `ts_recv` (`ts_event` from the record's
`ts_event`), through `mia.data.history` (the writer, id seeding and ledger the Sierra importer
shares).

Schemas (one per file, from the metadata; a file without one is read record type by record type):
- definition: each `InstrumentDefMsg` becomes an `Instrument` (raw symbol, tick size =
  min_price_increment, point value = min_price_increment_amount / tick, else
  unit_of_measure_qty, else contract_multiplier; kind from instrument_class).
- trades: `Trade`, side from the aggressor: B (buyer) +1, A (seller) -1, N 0.
- mbp-1: a `Trade` on each trade action (T), then a `Quote` of the top of book when it changed.
  tbbo: the `Quote` (the book just before the trade) when it changed, then the `Trade`.
- mbp-10: `Trade` on T; the book as *upserts and deletes of the levels that changed* since the
  instrument's previous record (deletes first, so the 10-level reducer never pushes a live level
  out), bracketed BATCH_BEGIN..BATCH_END when more than one row. Each segment starts with a
  BOOK_SNAPSHOT batch of the book as it stands, so a day replays alone.
- mbo: the price-level book the orders imply (size and order count per price, 10 levels a
  side), emitted as the same upserts/deletes after each venue event (the record flagged
  F_LAST); A adds, C cancels (the size cancelled), M modifies, R clears the instrument's book;
  T is a trade (`Trade`); F (fill) and N change nothing (the cancels that follow fills do).
- anything else (ohlcv-*, statistics, status, imbalance, bbo-*, cbbo, ...): a UsageError naming
  the schema, before anything is written (the CLI exits 2).

Symbols: a definition in the file (raw_symbol), else a symbol-mapping record, else the
metadata's mappings for the record's day (input symbol -> instrument id), else
"<dataset>:<instrument id>". Tick size and point value come from the file's definitions, else
from the day's earlier declaration of the symbol, else NaN (the reducers' default tick).

Idempotent: a file is read twice (a scan for its UTC-day runs, its definitions and its identity,
then the import); every segment names what it holds in `RecordingStarted.sources`:
``dbn <file id> records=<first>-<last> schema=<schema> file=<name>`` (record indices over the
whole file). The file id hashes the metadata and the first record, so a renamed copy is the same
source; records a segment of their day already holds are skipped.
"""

from __future__ import annotations

import bisect
import datetime as dt
import hashlib
import logging
import math
import os
import re
from pathlib import Path
from typing import Callable, Final, Iterable, Iterator

import msgspec

from mia.engine.clock import NS_PER_DAY, day_bounds, parse_date, utc_day
from mia.engine.errors import UsageError
from mia.engine.events import (
    BATCH_BEGIN,
    BATCH_END,
    BOOK_DELETE,
    BOOK_SNAPSHOT,
    BOOK_UPSERT,
    BookLevel,
    Event,
    Instrument,
    Quote,
    Trade,
)
from mia.engine.log import EventLog

from ..history import IMPORT_STREAM, DayIds, ImportWriter, covered_ranges, subtract_ranges

logger = logging.getLogger(__name__)

SUPPORTED: Final = ("trades", "mbp-1", "tbbo", "mbp-10", "mbo", "definition")
READ_BYTES: Final = 1 << 20
MAX_LEVELS: Final = 10
ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
PX: Final = 1e-9
_PROVENANCE = re.compile(r"^dbn (?P<id>[0-9a-f]{16}) records=(?P<a>\d+)-(?P<b>\d+)")
_UNDEF_TS: Final = (1 << 64) - 1
_I32_MAX: Final = (1 << 31) - 1
_KIND_OF_CLASS: Final = {"F": "future", "C": "option", "P": "option", "K": "equity",
                         "X": "other", "B": "other", "M": "other", "S": "other", "T": "other"}


def _dbn():
    try:
        import databento_dbn
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise UsageError("mia import dbn needs the databento-dbn package "
                         "(pip install databento-dbn)") from exc
    return databento_dbn


class FileImport(msgspec.Struct):
    path: str
    schema: str
    dataset: str
    file_id: str
    records: int = 0  # records in the file
    imported: int = 0  # records written now
    already_present: int = 0  # records an earlier import holds
    outside_dates: int = 0
    events: int = 0
    symbols: list[str] = []
    days: list[str] = []
    segments: list[str] = []
    torn_bytes: int = 0  # an incomplete last record, left out


class ImportSummary(msgspec.Struct):
    data_dir: str
    stream: str
    files: list[FileImport]
    records: int = 0
    imported: int = 0
    already_present: int = 0
    events: int = 0


# --- reading ----------------------------------------------------------------------------------


def _decoded(path: Path, read_bytes: int = READ_BYTES) -> Iterator[tuple[object, list, int]]:
    """(metadata, records, bytes read so far) per piece of the file, the metadata first."""
    dbn = _dbn()
    with open(path, "rb") as f:
        magic = f.read(4)
        f.seek(0)
        comp = dbn.Compression.ZSTD if magic == ZSTD_MAGIC else dbn.Compression.NONE
        if comp is dbn.Compression.NONE and magic[:3] != b"DBN":
            raise UsageError(f"{path}: not a DBN file (no DBN or zstd magic)")
        dec = dbn.DBNDecoder(compression=comp)
        meta = None
        pos = 0
        while True:
            buf = f.read(read_bytes)
            if not buf:
                break
            pos += len(buf)
            try:
                recs = dec.write_and_decode(buf)
            except Exception as exc:  # DBNError, or a zstd error surfaced by the decoder
                raise UsageError(f"{path}: not a readable DBN file: {exc}") from None
            if meta is None:
                if not recs:
                    continue
                meta, recs = recs[0], recs[1:]
                if not isinstance(meta, dbn.Metadata):
                    raise UsageError(f"{path}: not a DBN file (no metadata)")
            yield meta, recs, pos
        if meta is None:
            raise UsageError(f"{path}: not a DBN file (no metadata)")
        yield meta, [], -len(dec.buffer())  # the torn tail, as a negative count


def _schema_of(meta) -> str:
    return str(meta.schema) if meta.schema is not None else ""


def check_file(path: Path) -> str:
    """The file's schema; a UsageError naming it when mia does not import it."""
    for meta, _, _ in _decoded(path, 1 << 14):
        schema = _schema_of(meta)
        if schema and schema not in SUPPORTED:
            raise UsageError(f"{path}: unsupported DBN schema {schema!r} "
                             f"(mia imports {', '.join(SUPPORTED)})")
        return schema
    raise UsageError(f"{path}: not a DBN file")  # pragma: no cover - _decoded raises first


def _ts(rec) -> int:
    ts = getattr(rec, "ts_recv", _UNDEF_TS)
    return rec.ts_event if ts == _UNDEF_TS else ts


def _px(v: int) -> float:
    return math.nan if v == _UNDEF_PX else v * PX


_UNDEF_PX: Final = (1 << 63) - 1


class _Scan(msgspec.Struct):
    """What the first pass learns: day runs, definitions, symbol mappings, identity."""

    meta: object
    file_id: str
    records: int
    runs: list[tuple[int, int, int]]  # (day number, first, last)
    defs: dict
    mapped: dict
    torn: int


def _scan(path: Path, progress: Callable[[int], None]) -> _Scan:
    dbn = _dbn()
    runs: list[list[int]] = []
    defs: dict[int, object] = {}
    mapped: dict[int, str] = {}
    n = 0
    fid = ""
    meta = None
    torn = 0
    for meta, recs, pos in _decoded(path):
        if pos < 0:
            torn = -pos
            break
        if not recs:
            continue
        if not fid:
            h = hashlib.blake2b(digest_size=8)
            h.update(bytes(meta))
            h.update(bytes(recs[0]))
            fid = h.hexdigest()
        for rec in recs:
            tp = type(rec)
            if tp is dbn.InstrumentDefMsg:
                defs[rec.instrument_id] = rec
            elif tp is dbn.SymbolMappingMsg:
                mapped[rec.instrument_id] = rec.stype_out_symbol
            k = _ts(rec) // NS_PER_DAY
            if runs and runs[-1][0] == k:
                runs[-1][2] = n
            else:
                runs.append([k, n, n])
            n += 1
        progress(pos)
    if not fid:
        fid = hashlib.blake2b(bytes(meta), digest_size=8).hexdigest()
    return _Scan(meta, fid, n, [(k, a, b) for k, a, b in runs], defs, mapped, torn)


# --- symbols and instruments --------------------------------------------------------------------


class _Symbols:
    def __init__(self, scan: _Scan) -> None:
        meta = scan.meta
        self.dataset = meta.dataset
        self.defs = scan.defs
        self.mapped = scan.mapped
        self.intervals: dict[int, list[tuple[dt.date, dt.date, str]]] = {}
        keys_by_id: dict[tuple[str, dt.date, dt.date], set[int]] = {}
        for key, intervals in (meta.mappings or {}).items():
            for iv in intervals:
                try:
                    iid = int(iv["symbol"])
                except (TypeError, ValueError):
                    continue
                span = (key, iv["start_date"], iv["end_date"])
                keys_by_id.setdefault(span, set()).add(iid)
        for (key, a, b), iids in keys_by_id.items():
            if len(iids) == 1:  # a parent symbol (ES.FUT) naming many ids names none of them
                self.intervals.setdefault(next(iter(iids)), []).append((a, b, key))

    def symbol(self, iid: int, day: str) -> str:
        d = self.defs.get(iid)
        if d is not None and d.raw_symbol:
            return d.raw_symbol
        s = self.mapped.get(iid)
        if s:
            return s
        date = dt.date.fromisoformat(day)
        for a, b, key in self.intervals.get(iid, ()):
            if a <= date < b or a == b == date:
                return key
        return f"{self.dataset}:{iid}"


def instrument_of_def(rec, iid: int, symbol: str, source: str, ts: int, ts_event: int
                      ) -> Instrument:
    """The `Instrument` a DBN definition declares."""
    tick = _px(rec.min_price_increment)
    if not tick > 0:
        tick = math.nan
    pv = math.nan
    amount = _px(rec.min_price_increment_amount)
    if amount > 0 and tick > 0:
        pv = amount / tick
    elif _px(rec.unit_of_measure_qty) > 0:
        pv = _px(rec.unit_of_measure_qty)
    elif 0 < rec.contract_multiplier < _I32_MAX:
        pv = float(rec.contract_multiplier)
    cls = getattr(rec.instrument_class, "value", str(rec.instrument_class))
    return Instrument(ts_event, ts, iid, symbol, source, rec.exchange or "", tick, pv,
                      _KIND_OF_CLASS.get(cls, "other"), rec.asset or "", rec.currency or "USD")


# --- books ------------------------------------------------------------------------------------


class _LevelBook:
    """One instrument's full price-level book from orders (MBO): size and count per price."""

    __slots__ = ("orders", "size", "count", "prices", "dirty")

    def __init__(self) -> None:
        self.orders: dict[int, tuple[int, int, int]] = {}  # order id -> (side, price, size)
        self.size = ({}, {})  # [0] bids, [1] asks: price -> size
        self.count = ({}, {})
        self.prices: tuple[list[int], list[int]] = ([], [])  # ascending
        self.dirty = False

    def _level(self, s: int, price: int, dsize: int, dcount: int) -> None:
        sz, ct = self.size[s], self.count[s]
        new = sz.get(price, 0) + dsize
        cnt = ct.get(price, 0) + dcount
        if price not in sz:
            bisect.insort(self.prices[s], price)
        if new <= 0 or cnt <= 0:
            sz.pop(price, None)
            ct.pop(price, None)
            lst = self.prices[s]
            i = bisect.bisect_left(lst, price)
            if i < len(lst) and lst[i] == price:
                del lst[i]
        else:
            sz[price] = new
            ct[price] = cnt
        self.dirty = True

    def add(self, oid: int, s: int, price: int, size: int) -> None:
        if oid in self.orders:
            self.modify(oid, s, price, size)
            return
        self.orders[oid] = (s, price, size)
        self._level(s, price, size, 1)

    def cancel(self, oid: int, size: int) -> None:
        o = self.orders.get(oid)
        if o is None:
            return
        s, price, have = o
        left = have - size
        if left > 0:
            self.orders[oid] = (s, price, left)
            self._level(s, price, -size, 0)
        else:
            del self.orders[oid]
            self._level(s, price, -have, -1)

    def modify(self, oid: int, s: int, price: int, size: int) -> None:
        o = self.orders.get(oid)
        if o is None:
            self.add(oid, s, price, size)
            return
        os_, op, osz = o
        if os_ == s and op == price:
            self.orders[oid] = (s, price, size)
            self._level(s, price, size - osz, 0)
        else:
            del self.orders[oid]
            self._level(os_, op, -osz, -1)
            self.orders[oid] = (s, price, size)
            self._level(s, price, size, 1)

    def clear(self) -> None:
        self.orders.clear()
        for s in (0, 1):
            self.size[s].clear()
            self.count[s].clear()
            self.prices[s].clear()
        self.dirty = True

    def top(self, s: int) -> list[tuple[int, int, int]]:
        """Best first: (price, size, orders) of up to MAX_LEVELS levels of side s."""
        lst = self.prices[s]
        ps = lst[: -MAX_LEVELS - 1: -1] if s == 0 else lst[:MAX_LEVELS]
        sz, ct = self.size[s], self.count[s]
        return [(p, sz[p], ct[p]) for p in ps]


def _diff_rows(iid: int, ts_event: int, ts: int, old: tuple[dict, dict],
               new: tuple[list, list]) -> list[BookLevel]:
    """Deletes of the levels that left, then upserts of the new or changed ones; `old` (the
    view the log's book holds: price -> (size, orders)) is brought up to `new`."""
    dels: list[BookLevel] = []
    ups: list[BookLevel] = []
    for s, side in ((0, 1), (1, -1)):
        prev = old[s]
        cur = new[s]
        if len(cur) == len(prev):
            for p, z, c in cur:
                if prev.get(p) != (z, c):
                    break
            else:
                continue  # this side did not change
        keys = {p for p, _, _ in cur}
        for p in [p for p in prev if p not in keys]:
            dels.append(BookLevel(ts_event, ts, iid, side, p * PX, 0.0, BOOK_DELETE))
            del prev[p]
        for i, (p, z, c) in enumerate(cur):
            if prev.get(p) != (z, c):
                ups.append(BookLevel(ts_event, ts, iid, side, p * PX, float(z), BOOK_UPSERT,
                                     i, c))
                prev[p] = (z, c)
    return _bracket(dels + ups)


def _bracket(rows: list[BookLevel]) -> list[BookLevel]:
    if len(rows) > 1:
        rows[0] = msgspec.structs.replace(rows[0], flags=BATCH_BEGIN)
        rows[-1] = msgspec.structs.replace(rows[-1], flags=BATCH_END)
    return rows


def _snapshot_rows(iid: int, ts: int, view: tuple[dict, dict]) -> list[BookLevel]:
    rows = []
    for s, side in ((0, 1), (1, -1)):
        levels = sorted(view[s].items(), reverse=(s == 0))
        for i, (p, (z, c)) in enumerate(levels):
            rows.append(BookLevel(ts, ts, iid, side, p * PX, float(z), BOOK_SNAPSHOT, i, c))
    if rows:
        rows[0] = msgspec.structs.replace(rows[0], flags=rows[0].flags | BATCH_BEGIN)
        rows[-1] = msgspec.structs.replace(rows[-1], flags=rows[-1].flags | BATCH_END)
    return rows


# --- conversion -------------------------------------------------------------------------------


class _Converter:
    """Records -> events for one file; book state runs across the file's segments."""

    def __init__(self, schema: str, symbols: _Symbols, ids: DayIds, source: str) -> None:
        dbn = _dbn()
        self.dbn = dbn
        self.schema = schema
        self.symbols = symbols
        self.ids = ids
        self.source = source
        self.side = {dbn.Side.BID: 1, dbn.Side.ASK: -1}
        self.bookside = {dbn.Side.BID: 0, dbn.Side.ASK: 1}
        self.T = dbn.Action.TRADE
        self.A, self.C, self.M, self.R = (dbn.Action.ADD, dbn.Action.CANCEL, dbn.Action.MODIFY,
                                          dbn.Action.CLEAR)
        self.F_LAST = dbn.F_LAST
        self.books: dict[int, _LevelBook] = {}  # mbo, by DBN instrument id
        self.views: dict[int, tuple[dict, dict]] = {}  # what the log's book holds, by DBN id
        self.day = ""
        self.iids: dict[int, int] = {}  # DBN id -> mia id declared in the open segment
        self.quotes: dict[int, tuple] = {}
        self.seen: set[str] = set()
        self._declared: set[tuple] = set()  # definitions declared in the open segment
        self._last_ts = 0

    # segment bracketing
    def begin(self, day: str, ts: int) -> list[Event]:
        """A new segment of `day` opens at `ts`: declare and snapshot the books held so far."""
        self.day = day
        self.iids = {}
        self.quotes = {}
        self._declared = set()
        out: list[Event] = []
        for did, view in self.views.items():
            if view[0] or view[1]:
                iid = self._iid(did, ts, ts, out)
                out.extend(_snapshot_rows(iid, ts, view))
        return out

    def end(self) -> list[Event]:
        """Pending MBO changes (an event cut by the segment's end) before the segment closes."""
        out: list[Event] = []
        for did, book in self.books.items():
            if book.dirty and did in self.iids:
                out.extend(self._emit_book(did, book, self._last_ts, self._last_ts))
        return out

    def _iid(self, did: int, ts_event: int, ts: int, out: list) -> int:
        iid = self.iids.get(did)
        if iid is not None:
            return iid
        sym = self.symbols.symbol(did, self.day)
        iid = self.iids[did] = self.ids.id_for(self.day, sym)
        self.seen.add(sym)
        d = self.symbols.defs.get(did)
        if d is not None:
            inst = instrument_of_def(d, iid, sym, self.source, ts, ts_event)
        else:
            prev = self.ids.declaration(self.day, sym)
            if prev is not None:
                inst = msgspec.structs.replace(prev, ts_event=ts_event, ts_recv=ts,
                                               instrument=iid)
            else:
                inst = Instrument(ts_event, ts, iid, sym, self.source)
        out.append(inst)
        return iid

    def _emit_book(self, did: int, book: _LevelBook, ts_event: int, ts: int) -> list[Event]:
        book.dirty = False
        view = self.views.setdefault(did, ({}, {}))
        iid = self.iids[did]
        return _diff_rows(iid, ts_event, ts, view, (book.top(0), book.top(1)))

    # records
    def run(self, recs: list, emit: bool) -> list[Event]:
        """Events of `recs` (all of one segment when `emit`); else only advance book state."""
        out: list[Event] = []
        if not recs:
            return out
        schema = self.schema
        if schema == "mbo":
            self._mbo(recs, emit, out)
        elif schema == "mbp-10":
            self._mbp10(recs, emit, out)
        elif emit:
            if schema == "trades":
                self._trades(recs, out)
            elif schema in ("mbp-1", "tbbo"):
                self._mbp1(recs, out, schema == "tbbo")
            else:
                self._mixed(recs, out)
        return out

    def _trade(self, r, out: list) -> None:
        ts = r.ts_recv
        iid = self.iids.get(r.instrument_id)
        if iid is None:
            iid = self._iid(r.instrument_id, r.ts_event, ts, out)
        out.append(Trade(r.ts_event, ts, iid, r.price * PX, float(r.size), self.side.get(r.side, 0)))

    def _trades(self, recs: list, out: list) -> None:
        dbn = self.dbn
        for r in recs:
            if type(r) is dbn.TradeMsg:
                self._trade(r, out)
            else:
                self._other(r, out)

    def _mbp1(self, recs: list, out: list, tbbo: bool) -> None:
        dbn, T, quotes = self.dbn, self.T, self.quotes
        for r in recs:
            if type(r) is not dbn.MBP1Msg:
                self._other(r, out)
                continue
            is_trade = r.action == T
            if is_trade and not tbbo:
                self._trade(r, out)
            lv = r.levels[0]
            q = (lv.bid_px, lv.bid_sz, lv.ask_px, lv.ask_sz)
            did = r.instrument_id
            if quotes.get(did) != q:
                quotes[did] = q
                iid = self.iids.get(did)
                if iid is None:
                    iid = self._iid(did, r.ts_event, r.ts_recv, out)
                out.append(Quote(r.ts_event, r.ts_recv, iid, _px(q[0]), float(q[1]), _px(q[2]),
                                 float(q[3])))
            if is_trade and tbbo:
                self._trade(r, out)

    def _mbp10(self, recs: list, emit: bool, out: list) -> None:
        dbn, T = self.dbn, self.T
        undef = _UNDEF_PX
        views = self.views
        for r in recs:
            if type(r) is not dbn.MBP10Msg:
                if emit:
                    self._other(r, out)
                continue
            did = r.instrument_id
            if emit and r.action == T:
                self._trade(r, out)
            bids, asks = [], []
            for i, lv in enumerate(r.levels):
                if lv.bid_px != undef and lv.bid_sz > 0:
                    bids.append((lv.bid_px, lv.bid_sz, lv.bid_ct))
                if lv.ask_px != undef and lv.ask_sz > 0:
                    asks.append((lv.ask_px, lv.ask_sz, lv.ask_ct))
            view = views.setdefault(did, ({}, {}))
            if emit:
                iid = self.iids.get(did)
                if iid is None:
                    iid = self._iid(did, r.ts_event, r.ts_recv, out)
                out.extend(_diff_rows(iid, r.ts_event, r.ts_recv, view, (bids, asks)))
            else:
                for s, lv in ((0, bids), (1, asks)):
                    view[s].clear()
                    view[s].update((p, (z, c)) for p, z, c in lv)

    def _mbo(self, recs: list, emit: bool, out: list) -> None:
        dbn = self.dbn
        T, A, C, M, R = self.T, self.A, self.C, self.M, self.R
        bookside = self.bookside
        books = self.books
        last = self.F_LAST
        for r in recs:
            if type(r) is not dbn.MBOMsg:
                if emit:
                    self._other(r, out)
                continue
            did = r.instrument_id
            book = books.get(did)
            if book is None:
                book = books[did] = _LevelBook()
            act = r.action
            if act == T:
                if emit:
                    self._trade(r, out)
            elif act == A:
                s = bookside.get(r.side)
                if s is not None:
                    book.add(r.order_id, s, r.price, r.size)
            elif act == C:
                book.cancel(r.order_id, r.size)
            elif act == M:
                s = bookside.get(r.side)
                if s is not None:
                    book.modify(r.order_id, s, r.price, r.size)
            elif act == R:
                book.clear()
            if r.flags & last and book.dirty:
                if emit:
                    if did not in self.iids:
                        self._iid(did, r.ts_event, r.ts_recv, out)
                    out.extend(self._emit_book(did, book, r.ts_event, r.ts_recv))
                else:
                    book.dirty = False
                    view = self.views.setdefault(did, ({}, {}))
                    for s in (0, 1):
                        view[s].clear()
                        view[s].update((p, (z, c)) for p, z, c in book.top(s))
            self._last_ts = r.ts_recv

    def _mixed(self, recs: list, out: list) -> None:
        for r in recs:
            self._other(r, out)

    def _other(self, r, out: list) -> None:
        """A definition declares; records of the file's other kinds are converted on their own;
        the rest (symbol mappings, system and error messages) carry nothing for the log."""
        dbn = self.dbn
        tp = type(r)
        if tp is dbn.InstrumentDefMsg:
            did = r.instrument_id
            sym = r.raw_symbol or self.symbols.symbol(did, self.day)
            iid = self.ids.id_for(self.day, sym)
            inst = instrument_of_def(r, iid, sym, self.source, _ts(r), r.ts_event)
            key = (sym, inst.tick_size, inst.point_value)
            if self.iids.get(did) != iid or key not in self._declared:
                self._declared.add(key)
                self.iids[did] = iid
                self.seen.add(sym)
                out.append(inst)
        elif tp is dbn.TradeMsg:
            self._trade(r, out)
        elif tp is dbn.MBP1Msg:
            self._mbp1([r], out, False)


# --- the import -------------------------------------------------------------------------------


def import_files(data_dir: str | os.PathLike, paths: Iterable[str | os.PathLike], *,
                 date_from: str | None = None, date_to: str | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 frame_max_events: int = 4096, fsync: str = "interval",
                 read_bytes: int = READ_BYTES) -> ImportSummary:
    """Import DBN files (plain or zstd) into `data_dir` (see the module doc)."""
    lo_day = parse_date(date_from) if date_from else None
    hi_day = parse_date(date_to) if date_to else None
    if lo_day and hi_day and hi_day < lo_day:
        raise UsageError(f"empty range: --from {lo_day} is after --to {hi_day}")
    lo_n = day_bounds(lo_day)[0] // NS_PER_DAY if lo_day else None
    hi_n = day_bounds(hi_day)[0] // NS_PER_DAY if hi_day else None
    paths = [Path(p) for p in paths]
    if not paths:
        raise UsageError("no files to import")
    sizes = {}
    for p in paths:
        if not p.is_file():
            raise UsageError(f"no such file: {p}")
        sizes[p] = p.stat().st_size
    schemas = {p: check_file(p) for p in paths}  # every file checked before anything is written
    log = EventLog(data_dir)
    ids = DayIds(log)
    total = 2 * sum(sizes.values())
    base = 0
    summary = ImportSummary(str(data_dir), IMPORT_STREAM, [])

    def tell(done: int) -> None:
        if progress is not None:
            progress(base + done, total)

    for path in paths:
        size = sizes[path]
        scan = _scan(path, tell)
        base += size
        meta = scan.meta
        schema = schemas[path]
        report = FileImport(str(path), schema or "mixed", meta.dataset, scan.file_id,
                            scan.records, torn_bytes=scan.torn)
        summary.files.append(report)
        if scan.torn:
            logger.warning("dbn import torn tail path=%s bytes=%d", path, scan.torn)
        todo: list[tuple[str, int, int]] = []
        for daynum, a, b in scan.runs:
            if (lo_n is not None and daynum < lo_n) or (hi_n is not None and daynum > hi_n):
                report.outside_dates += b - a + 1
                continue
            day = utc_day(daynum * NS_PER_DAY)
            left = subtract_ranges(a, b, covered_ranges(log, day, scan.file_id, _PROVENANCE))
            todo.extend((day, x, y) for x, y in left)
            report.already_present += (b - a + 1) - sum(y - x + 1 for x, y in left)
        if todo:
            conv = _Converter(schema, _Symbols(scan), ids, f"dbn:{meta.dataset}")
            _write(log, path, scan, schema, conv, todo, report, frame_max_events, fsync,
                   read_bytes, lambda k, z=size, n=scan.records: tell(int(z * k / max(n, 1))))
            report.symbols = sorted(conv.seen)
        base += size
        tell(0)
        summary.records += report.records
        summary.imported += report.imported
        summary.already_present += report.already_present
        summary.events += report.events
    return summary


def _write(log: EventLog, path: Path, scan: _Scan, schema: str, conv: _Converter,
           todo: list[tuple[str, int, int]], report: FileImport, frame_max_events: int,
           fsync: str, read_bytes: int, progress: Callable[[int], None]) -> None:
    """The second pass: records -> events, into one segment per range of `todo`."""
    k = 0  # the next range of todo
    writer: ImportWriter | None = None
    i0 = 0  # index of recs[0] in the file
    try:
        for _, recs, pos in _decoded(path, read_bytes):
            if pos < 0:
                break
            n = len(recs)
            j = 0
            while j < n:
                i = i0 + j
                if k < len(todo) and todo[k][1] <= i:  # inside range k
                    day, a, b = todo[k]
                    stop = min(n, b - i0 + 1)
                    if writer is None:
                        t0 = _ts(recs[j])
                        src = (f"dbn {scan.file_id} records={a}-{b} schema={schema or 'mixed'} "
                               f"file={path.name}")
                        writer = ImportWriter(log, [src], t0, frame_max_events=frame_max_events,
                                              fsync=fsync)
                        writer.append_many(conv.begin(day, t0))
                    writer.append_many(conv.run(recs[j:stop], True))
                    j = stop
                    if i0 + j > b:  # range k done
                        writer.append_many(conv.end())
                        writer.close("stopped")
                        report.imported += b - a + 1
                        report.events += writer.events
                        report.segments.append(writer.name)
                        if day not in report.days:
                            report.days.append(day)
                        writer = None
                        k += 1
                else:
                    stop = n if k >= len(todo) else min(n, todo[k][1] - i0)
                    conv.run(recs[j:stop], False)
                    j = stop
            i0 += n
            progress(i0)
    except BaseException:
        if writer is not None:
            writer.close("error")
        raise
    if writer is not None:  # a range past the end of the file (it shrank): keep what it held
        writer.close("stopped")


__all__ = ["import_files", "check_file", "ImportSummary", "FileImport", "SUPPORTED",
           "instrument_of_def"]
