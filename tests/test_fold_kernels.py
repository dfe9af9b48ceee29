"""The fold's fast paths compute exactly what the numpy expressions they replaced computed."""

from __future__ import annotations

import numpy as np

from mia.analytics import _kinds, _monitor_kernels
from mia.analytics.book import BookReducer
from mia.analytics.monitor import SUB, latency_bins
from mia.engine.columns import ColumnBatch
from mia.engine.events import BOOK_UPSERT, BookLevel

EDGES = np.array([-(2**63), -5, 0, 1, 2, 3, 63, 64, 65, 255, 256, 999_999_999, 2**52 - 1, 2**52,
                  2**53 - 1, 2**53, 2**53 + 1, 2**62 + 12_345, 2**63 - 1], dtype=np.int64)


def _reference_rows(ts_recv, ts_event, inst, table, now, sub):
    """What MonitorReducer._market computed with numpy before its kernel."""
    clock = np.maximum.accumulate(np.maximum(ts_recv, now))
    inst = inst.astype(np.int64)
    known = (inst >= 0) & (inst < table.shape[0])
    src = np.where(known, table[np.where(known, inst, 0)], -1)
    lat = ts_recv - ts_event
    m, e = np.frexp(lat.astype(np.float64))
    bins = e.astype(np.int64) * sub + ((m - 0.5) * (2 * sub)).astype(np.int64)
    bins[lat <= 0] = 0
    return clock, src, lat, bins, ts_event > 0


def test_monitor_market_rows_equal_the_numpy_expressions():
    rng = np.random.default_rng(7)
    n = 20_000
    ts_event = np.concatenate([np.zeros(len(EDGES), np.int64), rng.integers(-10, 2**62, n)])
    ts_recv = np.concatenate([EDGES, ts_event[len(EDGES):] + rng.integers(-10**6, 10**12, n)])
    inst = rng.integers(-3, 20, len(ts_recv)).astype(np.int32)
    table = np.full(16, -1, np.int64)
    table[[1, 2, 5]] = [0, 1, 2]
    for sub in (SUB, 32, 48):  # 48: not a power of two, the frexp path
        got = _monitor_kernels.market_rows(ts_recv, ts_event, inst, table, 12345, sub)
        want = _reference_rows(ts_recv, ts_event, inst, table, 12345, sub)
        for g, w in zip(got[:5], want):
            assert g.dtype == w.dtype and np.array_equal(g, w)
        assert got[5] == bool((want[1] < 0).any())
    lat = np.concatenate([EDGES, rng.integers(1, 2**63 - 1, n)])
    bins = _monitor_kernels.market_rows(lat, np.zeros_like(lat), np.zeros(len(lat), np.int32),
                                        table, 0, SUB)[3]
    assert np.array_equal(bins, latency_bins(lat))


def test_monitor_count_latency_equals_masked_sums():
    rng = np.random.default_rng(3)
    src = rng.integers(0, 3, 5000)
    lat = rng.integers(-100, 10**9, 5000)
    valid = rng.random(5000) > 0.2
    bins = latency_bins(lat)
    for k in (-1, 0, 1, 2):
        mask = np.ones(len(src), bool) if k < 0 else src == k
        ok = valid & mask
        hist = np.zeros(65 * SUB, np.int64)
        count, n, total, vmax = _monitor_kernels.count_latency(src, lat, bins, valid, k, hist)
        assert (count, n, total, vmax) == (mask.sum(), ok.sum(), lat[ok].sum(), lat[ok].max())
        assert np.array_equal(hist, np.bincount(bins[ok], minlength=65 * SUB))


def test_kinds_table_and_trade_range():
    rng = np.random.default_rng(1)
    kind = rng.choice(np.array([3, 10, 11, 200], np.uint8), 1000)
    ts = rng.integers(0, 10**12, 1000)
    table = _kinds.kinds_of(kind)
    assert set(np.flatnonzero(table)) == {3, 10, 11, 200}
    assert not _kinds.kinds_of(np.empty(0, np.uint8)).any()
    assert set(np.flatnonzero(_kinds.kinds_of(kind.astype(np.int64)))) == {3, 10, 11, 200}
    n, lo, hi = _kinds.ts_range(kind, ts, 10)
    assert (n, lo, hi) == ((kind == 10).sum(), ts[kind == 10].min(), ts[kind == 10].max())
    assert _kinds.ts_range(kind, ts, 99) == (0, 0, 0)


def _reference_book(rows, depth):
    """Top-of-book per side by a plain sort, for upserts of positive size (no deletes)."""
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    for side, px, sz in rows:
        book, better = (bids, lambda p, q: p > q) if side == 1 else (asks, lambda p, q: p < q)
        if px in book:
            book[px] = sz
            continue
        ranked = sorted(book, reverse=side == 1)
        if len(ranked) < depth or better(px, ranked[-1]):
            book[px] = sz
            if len(book) > depth:  # pushed past the depth: dropped for good
                del book[sorted(book, reverse=side == 1)[-1]]
    return bids, asks


def test_book_upserts_keep_the_best_levels_in_order():
    rng = np.random.default_rng(5)
    rows = [(int(rng.choice([-1, 1])), float(rng.integers(90, 110)) * 0.25, float(rng.integers(1, 50)))
            for _ in range(3000)]
    events = [BookLevel(i, i, 1, s, p, z, BOOK_UPSERT, 0, 1, 0) for i, (s, p, z) in enumerate(rows)]
    red = BookReducer(max_levels=10)
    red.on_batch(ColumnBatch.from_events(events))
    snap = red.book(1)
    bids, asks = _reference_book(rows, 10)
    assert list(snap.bid_price) == sorted(bids, reverse=True)
    assert list(snap.bid_size) == [bids[p] for p in sorted(bids, reverse=True)]
    assert list(snap.ask_price) == sorted(asks)
    assert list(snap.ask_size) == [asks[p] for p in sorted(asks)]
