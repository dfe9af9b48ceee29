"""BookReducer against a dictionary-based reference, plus hand-checked cases."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mia.analytics.book import BookReducer
from mia.engine.columns import ColumnBatch
from mia.engine.events import (
    BATCH_BEGIN,
    BATCH_END,
    BOOK_CLEAR,
    BOOK_DELETE,
    BOOK_SNAPSHOT,
    BOOK_UPSERT,
    BookLevel,
    Quote,
    Trade,
)

DEPTH = 4


class RefBook:
    """Plain dicts {price: size} per side, truncated to the depth after every row."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.resync = False
        self.in_batch = False
        self.in_snapshot = False
        self.has_depth = False

    def _truncate(self) -> None:
        self.bids = dict(sorted(self.bids.items(), reverse=True)[: self.depth])
        self.asks = dict(sorted(self.asks.items())[: self.depth])

    def apply(self, ev: BookLevel) -> None:
        self.has_depth = True
        if ev.flags & BATCH_BEGIN:
            self.in_batch = True
        if ev.action == BOOK_SNAPSHOT:
            if ev.flags & BATCH_BEGIN or not self.in_snapshot:
                self.bids, self.asks, self.resync = {}, {}, False
            self.in_snapshot = not (ev.flags & BATCH_END)
        else:
            self.in_snapshot = False
        side = {1: self.bids, -1: self.asks}.get(ev.side)
        if ev.action not in (BOOK_SNAPSHOT, BOOK_UPSERT, BOOK_DELETE, BOOK_CLEAR):
            self.resync = True
        elif ev.action == BOOK_CLEAR:
            if ev.side >= 0:
                self.bids = {}
            if ev.side <= 0:
                self.asks = {}
        elif side is None:
            if not (ev.action == BOOK_SNAPSHOT and math.isnan(ev.price)):
                self.resync = True
        elif math.isnan(ev.price):
            self.resync = self.resync or ev.action != BOOK_SNAPSHOT
        elif ev.action == BOOK_DELETE:
            side.pop(ev.price, None)
        elif math.isnan(ev.size):
            self.resync = True
        elif ev.size <= 0:
            side.pop(ev.price, None)
        else:
            side[ev.price] = ev.size
        self._truncate()
        if ev.flags & BATCH_END:
            self.in_batch = False
        if not self.in_batch and self.bids and self.asks and max(self.bids) >= min(self.asks):
            self.resync = True

    def imbalance(self, n: int) -> float:
        if not self.has_depth or self.resync:
            return math.nan
        b = sum(s for _, s in sorted(self.bids.items(), reverse=True)[:n])
        a = sum(s for _, s in sorted(self.asks.items())[:n])
        return math.nan if b + a <= 0 else (b - a) / (b + a)


prices = st.sampled_from([99.0, 99.25, 99.5, 99.75, 100.0, 100.25, 100.5, 100.75, math.nan])
book_rows = st.builds(
    lambda inst, side, price, size, action, flags: BookLevel(0, 0, inst, side, price, size, action, -1, 0, flags),
    st.sampled_from([1, 3]),
    st.sampled_from([1, -1, 0]),
    prices,
    st.sampled_from([0.0, 1.0, 2.0, 5.0, 17.0, math.nan]),
    st.sampled_from([BOOK_SNAPSHOT, BOOK_UPSERT, BOOK_UPSERT, BOOK_DELETE, BOOK_CLEAR, 7]),
    st.sampled_from([0, 0, 0, BATCH_BEGIN, BATCH_END, BATCH_BEGIN | BATCH_END]),
)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@settings(max_examples=150, deadline=None)
@given(st.lists(book_rows, min_size=1, max_size=120), st.sampled_from([1, 5, 64]))
def test_book_equals_dict_reference(rows, cut):
    # Arrange
    reducer = BookReducer(max_levels=DEPTH)
    refs = {1: RefBook(DEPTH), 3: RefBook(DEPTH)}
    # Act: feed in batches of `cut` rows, check after each batch
    for lo in range(0, len(rows), cut):
        chunk = rows[lo : lo + cut]
        reducer.on_batch(ColumnBatch.from_events(chunk))
        for ev in chunk:
            refs[ev.instrument].apply(ev)
        # Assert
        for inst, ref in refs.items():
            got = reducer.book(inst)
            want_bids = sorted(ref.bids.items(), reverse=True)
            want_asks = sorted(ref.asks.items())
            assert list(got.bid_price) == [p for p, _ in want_bids]
            assert list(got.bid_size) == [s for _, s in want_bids]
            assert list(got.ask_price) == [p for p, _ in want_asks]
            assert list(got.ask_size) == [s for _, s in want_asks]
            assert reducer.needs_resync(inst) == ref.resync
            for n in (1, 2, DEPTH):
                assert _same(reducer.imbalance(inst, n), ref.imbalance(n))


def test_snapshot_then_updates_by_hand():
    # Arrange: a 3-level snapshot, then an upsert, a delete, a zero-size upsert
    rows = [
        BookLevel(1, 1, 2, 1, 100.0, 10.0, BOOK_SNAPSHOT, 0, 0, BATCH_BEGIN),
        BookLevel(1, 1, 2, 1, 99.75, 20.0, BOOK_SNAPSHOT),
        BookLevel(1, 1, 2, -1, 100.25, 5.0, BOOK_SNAPSHOT),
        BookLevel(1, 1, 2, -1, 100.5, 15.0, BOOK_SNAPSHOT, 0, 0, BATCH_END),
        BookLevel(2, 2, 2, 1, 99.5, 30.0, BOOK_UPSERT),
        BookLevel(3, 3, 2, -1, 100.25, 0.0, BOOK_UPSERT),
        BookLevel(4, 4, 2, -1, 100.75, 7.0, BOOK_UPSERT),
        Quote(5, 5, 2, 1.0, 1.0, 2.0, 2.0),  # quotes leave the depth book alone
        Trade(5, 5, 2, 100.5, 1.0, 1),
    ]
    reducer = BookReducer(max_levels=10)
    # Act
    reducer.on_batch(ColumnBatch.from_events(rows))
    book = reducer.book(2)
    # Assert
    assert list(book.bid_price) == [100.0, 99.75, 99.5]
    assert list(book.bid_size) == [10.0, 20.0, 30.0]
    assert list(book.ask_price) == [100.5, 100.75]
    assert list(book.ask_size) == [15.0, 7.0]
    assert not book.needs_resync
    # top 2: bids 10 + 20 = 30, asks 15 + 7 = 22 -> 8 / 52
    assert reducer.imbalance(2, n=2) == (30.0 - 22.0) / 52.0
    assert math.isnan(reducer.imbalance(99))


def test_crossed_book_flags_resync_until_next_snapshot():
    reducer = BookReducer(max_levels=10)
    reducer.on_batch(ColumnBatch.from_events([
        BookLevel(1, 1, 0, 1, 100.0, 1.0, BOOK_UPSERT),
        BookLevel(1, 1, 0, -1, 100.25, 1.0, BOOK_UPSERT),
    ]))
    assert not reducer.needs_resync(0)
    # inside a batch a transient cross is fine
    reducer.on_batch(ColumnBatch.from_events([
        BookLevel(2, 2, 0, 1, 100.25, 1.0, BOOK_UPSERT, -1, 0, BATCH_BEGIN),
        BookLevel(2, 2, 0, -1, 100.25, 1.0, BOOK_DELETE, -1, 0, BATCH_END),
    ]))
    assert not reducer.needs_resync(0)
    # a lone crossing upsert flags it, and later updates do not clear it
    reducer.on_batch(ColumnBatch.from_events([
        BookLevel(3, 3, 0, -1, 99.0, 1.0, BOOK_UPSERT),
        BookLevel(3, 3, 0, -1, 99.0, 1.0, BOOK_DELETE),
    ]))
    assert reducer.needs_resync(0)
    assert math.isnan(reducer.imbalance(0))
    reducer.on_batch(ColumnBatch.from_events([
        BookLevel(4, 4, 0, 1, 100.0, 3.0, BOOK_SNAPSHOT, -1, 0, BATCH_BEGIN),
        BookLevel(4, 4, 0, -1, 100.25, 1.0, BOOK_SNAPSHOT, -1, 0, BATCH_END),
    ]))
    assert not reducer.needs_resync(0)
    assert reducer.imbalance(0) == 0.5
    assert list(reducer.book(0).bid_price) == [100.0]


def test_depth_limit_drops_levels_for_good():
    rows = [BookLevel(1, 1, 0, 1, 100.0 - 0.25 * k, 1.0 + k, BOOK_UPSERT) for k in range(5)]
    rows.append(BookLevel(2, 2, 0, 1, 100.0, 0.0, BOOK_DELETE))
    reducer = BookReducer(max_levels=3)
    reducer.on_batch(ColumnBatch.from_events(rows))
    assert list(reducer.book(0).bid_price) == [99.75, 99.5]
    assert np.array_equal(reducer.book(0).bid_size, [2.0, 3.0])
