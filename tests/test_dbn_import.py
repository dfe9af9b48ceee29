"""`mia import dbn`: DBN files written with databento-dbn's own encoder, imported and replayed.

Every schema mia imports (trades, mbp-1, tbbo, mbp-10, mbo, definition) is checked against sums
over the records themselves; the MBO book against a plain dict rebuild of the orders; the MBP-10
book against the records' own levels; re-import adds nothing; another schema is one error line.
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
from dataclasses import dataclass

import numpy as np
import pytest
import zstandard

dbn = pytest.importorskip("databento_dbn")

from helpers import assert_one_line_error, cli_run, last_json_line  # noqa: E402

from mia.analytics.book import BookReducer  # noqa: E402
from mia.data.databento.importer import import_files  # noqa: E402
from mia.engine.clock import NS_PER_DAY, utc_day  # noqa: E402
from mia.engine.events import (  # noqa: E402
    BATCH_BEGIN,
    BOOK_DELETE,
    BOOK_SNAPSHOT,
    BOOK_UPSERT,
    BookLevel,
    Instrument,
    Quote,
    Trade,
)
from mia.engine.log import EventLog  # noqa: E402
from mia.replay import open_day, replay_day  # noqa: E402

DAY0 = 20_781 * NS_PER_DAY  # 2026-11-24, a Tuesday
DATE = utc_day(DAY0)
START = DAY0 + 14 * 3600 * 10**9  # 14:00 UTC: one CME trade date
TICK = 250_000_000  # 0.25 in 1e-9 units
ES_ID = 4916


@dataclass
class _Interval:
    start_date: dt.date
    end_date: dt.date
    symbol: str


@dataclass
class _Mapping:
    raw_symbol: str
    intervals: list


def write_dbn(path, schema, records, *, symbol="ESZ6", iid=ES_ID, zst=False, days=2):
    """A DBN file as Databento ships it: metadata (with the symbol's mapping) then records."""
    d0 = dt.date.fromisoformat(DATE)
    mappings = [_Mapping(symbol, [_Interval(d0, d0 + dt.timedelta(days=days), str(iid))])]
    meta = dbn.Metadata("GLBX.MDP3", START, dbn.SType.RAW_SYMBOL, dbn.SType.INSTRUMENT_ID,
                        schema, symbols=[symbol], mappings=mappings)
    raw = bytes(meta) + b"".join(bytes(r) for r in records)
    if zst:
        raw = zstandard.ZstdCompressor(level=3).compress(raw)
    path.write_bytes(raw)
    return path


def _rng(seed):
    return np.random.default_rng(seed)


def trade_records(n, seed=1, start=START, sides=("B", "A")):
    rng = _rng(seed)
    px = 6000 * 4
    out = []
    ts = start
    for _ in range(n):
        ts += int(rng.integers(1_000, 2_000_000))
        px += int(rng.choice([-1, 0, 0, 1]))
        side = dbn.Side(str(rng.choice(list(sides))))
        out.append(dbn.TradeMsg(1, ES_ID, ts - 500, px * TICK, int(rng.integers(1, 30)),
                                dbn.Action.TRADE, side, 0, ts, flags=dbn.F_LAST))
    return out


def expected_flow(recs):
    """trades, volume, buy, sell, delta, vwap summed over trade records (side B buys)."""
    t = [r for r in recs if r.action == dbn.Action.TRADE]
    vol = sum(r.size for r in t)
    buy = sum(r.size for r in t if r.side == dbn.Side.BID)
    sell = sum(r.size for r in t if r.side == dbn.Side.ASK)
    vwap = sum(r.price * 1e-9 * r.size for r in t) / vol
    return len(t), vol, buy, sell, buy - sell, vwap


def assert_flow(root, recs, symbol="ESZ6"):
    trades, vol, buy, sell, delta, vwap = expected_flow(recs)
    got = replay_day(str(root), DATE).instruments[symbol]
    assert got.trades == trades
    assert got.volume == vol
    assert got.buy_volume == buy
    assert got.sell_volume == sell
    assert got.cum_delta == delta
    assert got.vwap == pytest.approx(vwap, rel=1e-12)


def _events(root, date=DATE, kinds=None):
    return list(open_day(str(root), date).events(kinds=kinds))


# --- trades -------------------------------------------------------------------------------------


@pytest.mark.parametrize("zst", [False, True])
def test_trades_import_replays_to_the_records_sums(tmp_path, zst):
    # Arrange
    recs = trade_records(3000)
    path = write_dbn(tmp_path / ("es.trades.dbn" + (".zst" if zst else "")), dbn.Schema.TRADES,
                     recs, zst=zst)
    root = tmp_path / "log"
    # Act
    s = import_files(root, [path], read_bytes=4096)
    # Assert
    assert s.imported == s.records == 3000
    assert s.files[0].schema == "trades" and s.files[0].symbols == ["ESZ6"]
    trades = _events(root, kinds=[Trade])
    assert len(trades) == 3000
    assert [t.ts_recv for t in trades] == [r.ts_recv for r in recs]
    assert [t.ts_event for t in trades] == [r.ts_event for r in recs]
    assert_flow(root, recs)


def test_side_n_is_unknown_and_days_split_at_utc_midnight(tmp_path):
    # Arrange: from 2 s before UTC midnight to past it
    recs = trade_records(4000, seed=3, start=DAY0 + NS_PER_DAY - 2 * 10**9, sides=("B", "A", "N"))
    path = write_dbn(tmp_path / "es.dbn", dbn.Schema.TRADES, recs)
    root = tmp_path / "log"
    # Act
    s = import_files(root, [path])
    # Assert
    by_day = {}
    for r in recs:
        by_day.setdefault(utc_day(r.ts_recv), []).append(r)
    assert s.files[0].days == sorted(by_day) and len(by_day) == 2
    want_side = {"B": 1, "A": -1, "N": 0}
    for day, rs in by_day.items():
        got = _events(root, day, kinds=[Trade])
        assert [t.side for t in got] == [want_side[str(r.side.value)] for r in rs]
        assert [t.price for t in got] == [r.price * 1e-9 for r in rs]
        assert sum(t.size for t in got) == sum(r.size for r in rs)


def test_reimport_adds_nothing_and_a_renamed_copy_is_the_same_file(tmp_path):
    # Arrange
    recs = trade_records(2000, seed=5, start=DAY0 + NS_PER_DAY - 2 * 10**9)
    path = write_dbn(tmp_path / "es.dbn.zst", dbn.Schema.TRADES, recs, zst=True)
    root = tmp_path / "log"
    first = import_files(root, [path])
    before = {d: len(_events(root, d)) for d in EventLog(root).dates()}
    copy = tmp_path / "renamed.dbn.zst"
    shutil.copy(path, copy)
    # Act
    again = import_files(root, [path])
    again2 = import_files(root, [copy])
    # Assert
    assert first.imported == 2000
    assert again.imported == 0 and again.already_present == 2000
    assert again2.imported == 0 and again2.already_present == 2000
    assert {d: len(_events(root, d)) for d in EventLog(root).dates()} == before


# --- mbp-1 and tbbo ---------------------------------------------------------------------------


def mbp1_records(n, seed=7):
    """A top of book moving by adds/cancels, with trades between."""
    rng = _rng(seed)
    bid, ask = 6000 * 4, 6000 * 4 + 1
    bsz, asz = 10, 12
    out = []
    ts = START
    for _ in range(n):
        ts += int(rng.integers(1_000, 500_000))
        k = int(rng.integers(0, 10))
        if k < 3:
            side = dbn.Side.BID if rng.random() < 0.5 else dbn.Side.ASK
            size = int(rng.integers(1, 5))
            px = ask if side == dbn.Side.BID else bid
            rec = (dbn.Action.TRADE, side, px, size)
        else:
            if rng.random() < 0.5:
                bsz = int(rng.integers(1, 40))
                if rng.random() < 0.1:
                    bid, ask = bid + 1, ask + 1
                rec = (dbn.Action.MODIFY, dbn.Side.BID, bid, bsz)
            else:
                asz = int(rng.integers(1, 40))
                if rng.random() < 0.1:
                    bid, ask = bid - 1, ask - 1
                rec = (dbn.Action.MODIFY, dbn.Side.ASK, ask, asz)
        action, side, px, size = rec
        out.append(dbn.MBP1Msg(1, ES_ID, ts - 300, px * TICK, size, action, side, 0, ts,
                               flags=dbn.F_LAST,
                               levels=dbn.BidAskPair(bid * TICK, ask * TICK, bsz, asz, 1, 1)))
    return out


def _quotes_of(recs):
    out, last = [], None
    for r in recs:
        lv = r.levels[0]
        q = (lv.bid_px * 1e-9, float(lv.bid_sz), lv.ask_px * 1e-9, float(lv.ask_sz))
        if q != last:
            out.append(q)
            last = q
    return out


def test_mbp1_gives_trades_and_top_of_book_quotes(tmp_path):
    # Arrange
    recs = mbp1_records(3000)
    path = write_dbn(tmp_path / "es.mbp-1.dbn.zst", dbn.Schema.MBP_1, recs, zst=True)
    root = tmp_path / "log"
    # Act
    import_files(root, [path])
    # Assert
    quotes = _events(root, kinds=[Quote])
    assert [(q.bid, q.bid_size, q.ask, q.ask_size) for q in quotes] == _quotes_of(recs)
    assert_flow(root, recs)


def test_tbbo_gives_the_quote_before_each_trade(tmp_path):
    # Arrange: TBBO records are trades carrying the book just before them
    recs = [r for r in mbp1_records(3000, seed=9) if r.action == dbn.Action.TRADE]
    path = write_dbn(tmp_path / "es.tbbo.dbn", dbn.Schema.TBBO, recs)
    root = tmp_path / "log"
    # Act
    import_files(root, [path])
    # Assert
    evs = [e for e in _events(root) if isinstance(e, (Quote, Trade))]
    assert isinstance(evs[0], Quote) and isinstance(evs[1], Trade)
    quotes = [e for e in evs if isinstance(e, Quote)]
    assert [(q.bid, q.bid_size, q.ask, q.ask_size) for q in quotes] == _quotes_of(recs)
    assert_flow(root, recs)


# --- books --------------------------------------------------------------------------------------


def reducer_book(root, date, end=None):
    red = BookReducer(max_levels=10)
    for b in EventLog(root).read_batches(date, end=end, streams=("import",)):
        red.on_batch(b)
    snap = red.book(1)
    assert not red.needs_resync(1)
    return ([(float(p), float(s)) for p, s in zip(snap.bid_price, snap.bid_size)],
            [(float(p), float(s)) for p, s in zip(snap.ask_price, snap.ask_size)])


def events_book(root, date):
    """The BookLevel rows folded by a plain dict (keeps order counts too)."""
    sides = {1: {}, -1: {}}
    for ev in _events(root, date, kinds=[BookLevel]):
        if ev.action == BOOK_SNAPSHOT and ev.flags & BATCH_BEGIN:
            sides = {1: {}, -1: {}}
        if ev.action in (BOOK_SNAPSHOT, BOOK_UPSERT):
            sides[ev.side][ev.price] = (ev.size, ev.orders)
        elif ev.action == BOOK_DELETE:
            sides[ev.side].pop(ev.price, None)
    return (sorted(sides[1].items(), reverse=True), sorted(sides[-1].items()))


def mbp10_records(n, seed=11):
    """A 10-level book moving level by level, every record carrying its 10 levels."""
    rng = _rng(seed)
    mid = 6000 * 4
    bids = {mid - i: int(rng.integers(1, 50)) for i in range(12)}
    asks = {mid + 1 + i: int(rng.integers(1, 50)) for i in range(12)}
    out, ts = [], START
    for _ in range(n):
        ts += int(rng.integers(1_000, 300_000))
        action = dbn.Action.MODIFY
        if rng.random() < 0.5:
            book, side = bids, dbn.Side.BID
        else:
            book, side = asks, dbn.Side.ASK
        best_bid, best_ask = max(bids), min(asks)
        r = rng.random()
        if r < 0.15:  # a trade, no book change
            action = dbn.Action.TRADE
            px, size = (best_ask if side == dbn.Side.BID else best_bid), int(rng.integers(1, 5))
        elif r < 0.35 and len(book) > 3:  # a level empties
            px = (max(book) if book is bids else min(book)) - int(rng.integers(0, 3)) * (
                1 if book is bids else -1)
            book.pop(px, None)
            action, size = dbn.Action.CANCEL, 0
        elif r < 0.5:  # a new level (inside the spread when there is room, else deeper)
            if book is bids:
                px = best_bid + 1 if best_ask - best_bid > 1 else min(bids) - 1
            else:
                px = best_ask - 1 if best_ask - best_bid > 1 else max(asks) + 1
            size = book[px] = int(rng.integers(1, 50))
            action = dbn.Action.ADD
        else:
            px = list(book)[int(rng.integers(0, len(book)))]
            size = book[px] = int(rng.integers(1, 50))
        tb = sorted(bids, reverse=True)[:10]
        ta = sorted(asks)[:10]
        levels = []
        for i in range(10):
            b = tb[i] if i < len(tb) else None
            a = ta[i] if i < len(ta) else None
            levels.append(dbn.BidAskPair(
                b * TICK if b is not None else dbn.UNDEF_PRICE,
                a * TICK if a is not None else dbn.UNDEF_PRICE,
                bids[b] if b is not None else 0, asks[a] if a is not None else 0,
                (bids[b] % 7 + 1) if b is not None else 0, (asks[a] % 7 + 1) if a is not None else 0))
        out.append(dbn.MBP10Msg(1, ES_ID, ts - 300, px * TICK, size, action, side, 0, ts,
                                flags=dbn.F_LAST, levels=levels))
    return out


def _levels_of(rec):
    bids = [(lv.bid_px * 1e-9, float(lv.bid_sz)) for lv in rec.levels
            if lv.bid_px != dbn.UNDEF_PRICE and lv.bid_sz > 0]
    asks = [(lv.ask_px * 1e-9, float(lv.ask_sz)) for lv in rec.levels
            if lv.ask_px != dbn.UNDEF_PRICE and lv.ask_sz > 0]
    return bids, asks


def test_mbp10_book_equals_the_records_levels_throughout(tmp_path):
    # Arrange
    recs = mbp10_records(2500)
    path = write_dbn(tmp_path / "es.mbp-10.dbn.zst", dbn.Schema.MBP_10, recs, zst=True)
    root = tmp_path / "log"
    # Act
    import_files(root, [path], read_bytes=8192)
    # Assert: at several records, the replayed book is that record's levels
    for k in (0, 1, 17, 600, 1499, len(recs) - 1):
        assert reducer_book(root, DATE, end=recs[k].ts_recv + 1) == _levels_of(recs[k]), k
    last = recs[-1]
    bids, asks = events_book(root, DATE)
    assert [o for _, (_, o) in bids] == [lv.bid_ct for lv in last.levels][: len(bids)]
    assert_flow(root, recs)


class DictMboBook:
    """The reference: orders in a dict, levels summed from them on demand."""

    def __init__(self):
        self.orders = {}

    def apply(self, r):
        a = r.action
        if a == dbn.Action.ADD:
            self.orders[r.order_id] = [str(r.side.value), r.price, r.size]
        elif a == dbn.Action.CANCEL:
            o = self.orders.get(r.order_id)
            if o is not None:
                o[2] -= r.size
                if o[2] <= 0:
                    del self.orders[r.order_id]
        elif a == dbn.Action.MODIFY:
            self.orders[r.order_id] = [str(r.side.value), r.price, r.size]
        elif a == dbn.Action.CLEAR:
            self.orders.clear()

    def levels(self):
        agg = {"B": {}, "A": {}}
        for side, px, size in self.orders.values():
            z, c = agg[side].get(px, (0, 0))
            agg[side][px] = (z + size, c + 1)
        bids = sorted(agg["B"].items(), reverse=True)[:10]
        asks = sorted(agg["A"].items())[:10]
        return ([(p * 1e-9, (float(z), c)) for p, (z, c) in bids],
                [(p * 1e-9, (float(z), c)) for p, (z, c) in asks])


def mbo_records(n, seed=13, start=START):
    """Adds, partial and full cancels, modifies (size, price), trades then fills then cancels,
    a clear and rebuild; some venue events span several records (F_LAST on the last)."""
    rng = _rng(seed)
    mid = 6000 * 4
    live = {}  # order id -> (side, px, size)
    out, ts, oid = [], start, 1000

    def rec(action, side, px, size, order_id, last=True):
        nonlocal ts
        ts += int(rng.integers(1_000, 200_000))
        out.append(dbn.MBOMsg(1, ES_ID, ts - 300, order_id, px * TICK, size, action, side, ts,
                              flags=dbn.F_LAST if last else 0))

    while len(out) < n:
        r = rng.random()
        if r < 0.45 or len(live) < 20:
            side = dbn.Side.BID if rng.random() < 0.5 else dbn.Side.ASK
            px = mid - int(rng.integers(0, 25)) if side == dbn.Side.BID else \
                mid + 1 + int(rng.integers(0, 25))
            size = int(rng.integers(1, 20))
            oid += 1
            live[oid] = (side, px, size)
            rec(dbn.Action.ADD, side, px, size, oid)
        elif r < 0.65:
            o = list(live)[int(rng.integers(0, len(live)))]
            side, px, size = live[o]
            cut = int(rng.integers(1, size + 1))
            if cut >= size:
                del live[o]
            else:
                live[o] = (side, px, size - cut)
            rec(dbn.Action.CANCEL, side, px, cut, o)
        elif r < 0.8:
            o = list(live)[int(rng.integers(0, len(live)))]
            side, px, size = live[o]
            if rng.random() < 0.5:
                px += int(rng.integers(-2, 3)) * (1 if side == dbn.Side.BID else -1)
                px = min(px, mid) if side == dbn.Side.BID else max(px, mid + 1)
            size = int(rng.integers(1, 20))
            live[o] = (side, px, size)
            rec(dbn.Action.MODIFY, side, px, size, o)
        elif r < 0.97:  # an aggressor hits the best resting order: T, F, then C (one event)
            side = dbn.Side.BID if rng.random() < 0.5 else dbn.Side.ASK
            rest = dbn.Side.ASK if side == dbn.Side.BID else dbn.Side.BID
            cands = [(o, v) for o, v in live.items() if v[0] == rest]
            if not cands:
                continue
            best = (min if rest == dbn.Side.ASK else max)(cands, key=lambda x: x[1][1])
            o, (_, px, size) = best
            q = int(rng.integers(1, size + 1))
            rec(dbn.Action.TRADE, side, px, q, 0, last=False)
            rec(dbn.Action.FILL, rest, px, q, o, last=False)
            if q >= size:
                del live[o]
            else:
                live[o] = (rest, px, size - q)
            rec(dbn.Action.CANCEL, rest, px, q, o)
        else:  # a clear, then the book rebuilt (as a snapshot would)
            rec(dbn.Action.CLEAR, dbn.Side.NONE, 0, 0, 0, last=False)
            items = list(live.items())
            for i, (o, (side, px, size)) in enumerate(items):
                rec(dbn.Action.ADD, side, px, size, o, last=(i == len(items) - 1))
    return out


def test_mbo_book_equals_a_dict_rebuild_and_fills_are_not_trades(tmp_path):
    # Arrange
    recs = mbo_records(6000)
    path = write_dbn(tmp_path / "es.mbo.dbn.zst", dbn.Schema.MBO, recs, zst=True)
    root = tmp_path / "log"
    ref = DictMboBook()
    checkpoints = {}
    marks = {500, 2000, 4000, len(recs) - 1}
    # Act
    import_files(root, [path], read_bytes=16384)
    # Assert: at venue-event ends, the replayed book is the dict rebuild's top 10
    for i, r in enumerate(recs):
        ref.apply(r)
        if i >= min(marks, default=len(recs)) and r.flags & dbn.F_LAST:
            checkpoints[r.ts_recv] = ref.levels()
            marks.discard(min(marks))
    for ts, (bids, asks) in checkpoints.items():
        got = reducer_book(root, DATE, end=ts + 1)
        assert got == ([(p, z) for p, (z, _) in bids], [(p, z) for p, (z, _) in asks])
    assert events_book(root, DATE) == ref.levels()
    assert_flow(root, recs)
    fills = sum(1 for r in recs if r.action == dbn.Action.FILL)
    assert fills > 0 and len(_events(root, kinds=[Trade])) == expected_flow(recs)[0]


def test_mbo_across_midnight_each_day_replays_its_own_book(tmp_path):
    # Arrange: the book carries over midnight; day 2 starts with a snapshot of it
    recs = mbo_records(3000, seed=17, start=DAY0 + NS_PER_DAY - 100_000_000)
    path = write_dbn(tmp_path / "es.mbo.dbn", dbn.Schema.MBO, recs)
    root = tmp_path / "log"
    # Act
    s = import_files(root, [path])
    # Assert
    assert len(s.files[0].days) == 2
    ref = DictMboBook()
    at_midnight = None
    for r in recs:
        if at_midnight is None and utc_day(r.ts_recv) != DATE:
            at_midnight = ref.levels()
        ref.apply(r)
    day2 = utc_day(DAY0 + NS_PER_DAY)
    assert events_book(root, day2) == ref.levels()
    want = ref.levels()
    assert reducer_book(root, day2) == ([(p, z) for p, (z, _) in want[0]],
                                        [(p, z) for p, (z, _) in want[1]])
    first_book = [e for e in _events(root, day2, kinds=[BookLevel])][0]
    assert first_book.action == BOOK_SNAPSHOT and first_book.flags & BATCH_BEGIN
    assert at_midnight is not None


# --- definitions --------------------------------------------------------------------------------


def definition_records():
    ts = START - 3600 * 10**9
    es = dbn.InstrumentDefMsg(1, ES_ID, ts, ts, TICK, 1_000_000_000, "ESZ6", "ES", "FUT",
                              dbn.InstrumentClass.FUTURE, dbn.SecurityUpdateAction.ADD,
                              min_price_increment_amount=12_500_000_000,
                              unit_of_measure_qty=50_000_000_000, exchange="XCME")
    nq = dbn.InstrumentDefMsg(1, 4917, ts, ts, TICK, 1_000_000_000, "NQZ6", "NQ", "FUT",
                              dbn.InstrumentClass.FUTURE, dbn.SecurityUpdateAction.ADD,
                              unit_of_measure_qty=20_000_000_000, exchange="XCME")
    return [es, nq]


def test_definitions_declare_instruments_that_later_files_reuse(tmp_path):
    # Arrange
    root = tmp_path / "log"
    defs = write_dbn(tmp_path / "defs.dbn", dbn.Schema.DEFINITION, definition_records())
    trades = write_dbn(tmp_path / "t.dbn", dbn.Schema.TRADES, trade_records(200, seed=21))
    # Act
    import_files(root, [defs])
    import_files(root, [trades])
    # Assert
    insts = _events(root, kinds=[Instrument])
    by_sym = {}
    for i in insts:
        by_sym.setdefault(i.symbol, []).append(i)
    es = by_sym["ESZ6"][0]
    assert (es.tick_size, es.point_value, es.kind, es.exchange) == (0.25, 50.0, "future", "XCME")
    nq = by_sym["NQZ6"][0]
    assert (nq.tick_size, nq.point_value) == (0.25, 20.0)
    assert {i.instrument for i in by_sym["ESZ6"]} == {es.instrument}
    assert all(i.tick_size == 0.25 and i.point_value == 50.0 for i in by_sym["ESZ6"])
    trades_ev = _events(root, kinds=[Trade])
    assert {t.instrument for t in trades_ev} == {es.instrument}


def test_a_symbol_without_mapping_or_definition_is_named_by_its_id(tmp_path):
    # Arrange: a file whose metadata maps nothing
    recs = trade_records(50, seed=23)
    meta = dbn.Metadata("GLBX.MDP3", START, dbn.SType.RAW_SYMBOL, dbn.SType.INSTRUMENT_ID,
                        dbn.Schema.TRADES)
    path = tmp_path / "bare.dbn"
    path.write_bytes(bytes(meta) + b"".join(bytes(r) for r in recs))
    # Act
    s = import_files(tmp_path / "log", [path])
    # Assert
    assert s.files[0].symbols == [f"GLBX.MDP3:{ES_ID}"]


# --- the command --------------------------------------------------------------------------------


def test_cli_imports_with_json_and_unsupported_schema_is_one_line(tmp_path):
    # Arrange
    root = tmp_path / "log"
    path = write_dbn(tmp_path / "es.dbn.zst", dbn.Schema.TRADES, trade_records(100), zst=True)
    bars = [dbn.OHLCVMsg(0x21, 1, ES_ID, START + i * 60 * 10**9, 1, 2, 1, 2, 10)
            for i in range(3)]
    ohlcv = write_dbn(tmp_path / "es.ohlcv.dbn", dbn.Schema.OHLCV_1M, bars)
    # Act
    ok = cli_run("import", "dbn", str(path), "--data-dir", str(root), "--json", "-q")
    again = cli_run("import", "dbn", str(path), "--data-dir", str(root), "--json", "-q")
    bad = cli_run("import", "dbn", str(ohlcv), "--data-dir", str(root))
    # Assert
    assert ok.exit_code == 0, ok.output
    assert last_json_line(ok.stdout)["imported"] == 100
    assert last_json_line(again.stdout)["imported"] == 0
    line = assert_one_line_error(bad, 2)
    assert "ohlcv-1m" in line and "unsupported DBN schema" in line


def test_a_file_that_is_not_dbn_is_one_line(tmp_path):
    path = tmp_path / "x.dbn"
    path.write_bytes(b"not a dbn file at all" * 10)
    bad = cli_run("import", "dbn", str(path), "--data-dir", str(tmp_path / "log"))
    line = assert_one_line_error(bad, 2)
    assert "not a DBN file" in line


def test_statistics_schema_is_refused_before_anything_is_written(tmp_path):
    root = tmp_path / "log"
    good = write_dbn(tmp_path / "t.dbn", dbn.Schema.TRADES, trade_records(10))
    stats = write_dbn(tmp_path / "s.dbn", dbn.Schema.STATISTICS, [])
    bad = cli_run("import", "dbn", str(good), str(stats), "--data-dir", str(root))
    line = assert_one_line_error(bad, 2)
    assert "statistics" in line
    assert not root.exists() or EventLog(root).dates() == []
    assert math.isfinite(1.0)
