"""The depth book per instrument, rebuilt from BookLevel rows by a numba kernel.

Semantics (the same in `BookReducer` and inside the order-flow reducer):
- Levels are keyed by price; the `level` column is ignored (sources disagree on it, prices do
  not). Bids are kept best (highest) first, asks best (lowest) first, at most `max_levels` a
  side: a level pushed past the depth is dropped for good, as a depth feed of that many levels
  would, and never comes back on its own.
- BOOK_UPSERT sets the size at a price (inserting the level); a size of 0 deletes it.
  BOOK_DELETE removes the level at a price (no-op when absent). BOOK_CLEAR drops one side
  (side 0: both).
- BOOK_SNAPSHOT rows replace the book: the first row of a snapshot (flag BATCH_BEGIN, or the
  first snapshot row after any other row when the source sends no batch flags) clears both
  sides and the resync flag; a snapshot row with a NaN price only clears.
- Resync: the book is flagged when it is crossed or locked (best bid >= best ask) at a point
  where it should be consistent (outside a BATCH_BEGIN...BATCH_END bracket), or when a row is
  malformed (NaN price or size on an upsert, a side other than +1/-1, an unknown action). The
  flag stays until the next snapshot; `imbalance` is NaN while it is set.
- Quote rows do not touch this book. A Quote is a separate top-of-book feed; mixing it into
  depth would let two sources overwrite each other level by level. Without depth the book is
  empty and the imbalance NaN (the order-flow reducer uses Quotes for its aggressor rule).
"""

from __future__ import annotations

import msgspec
import numpy as np

from ..engine.columns import ColumnBatch
from ..engine.lazy import lazy_module

_bk = lazy_module("mia.analytics._book_kernels")  # numba: imported at the first kernel call


class BookSnapshot(msgspec.Struct, frozen=True):
    """One instrument's book, best level first on each side."""

    instrument: int
    bid_price: np.ndarray
    bid_size: np.ndarray
    ask_price: np.ndarray
    ask_size: np.ndarray
    needs_resync: bool


class BookState:
    """The arrays of every instrument's book; grown in place when a new instrument appears."""

    def __init__(self, max_levels: int = 10, capacity: int = 8) -> None:
        if max_levels < 1:
            raise ValueError(f"max_levels must be >= 1, got {max_levels}")
        self.max_levels = max_levels
        self.px = np.zeros((capacity, 2, max_levels), dtype=np.float64)
        self.sz = np.zeros((capacity, 2, max_levels), dtype=np.float64)
        self.nlev = np.zeros((capacity, 2), dtype=np.int64)
        self.bstate = np.zeros((capacity, _bk.N_BSTATE), dtype=np.int64)

    @property
    def capacity(self) -> int:
        return int(self.nlev.shape[0])

    def ensure(self, instrument: int) -> None:
        cap = self.capacity
        if instrument < cap:
            return
        new = max(instrument + 1, 2 * cap)

        def grown(a: np.ndarray) -> np.ndarray:
            out = np.zeros((new,) + a.shape[1:], dtype=a.dtype)
            out[:cap] = a
            return out

        self.px, self.sz = grown(self.px), grown(self.sz)
        self.nlev, self.bstate = grown(self.nlev), grown(self.bstate)

    def snapshot(self, instrument: int) -> BookSnapshot:
        if instrument < 0 or instrument >= self.capacity:
            empty = np.zeros(0, dtype=np.float64)
            return BookSnapshot(instrument, empty, empty.copy(), empty.copy(), empty.copy(), False)
        nb, na = int(self.nlev[instrument, 0]), int(self.nlev[instrument, 1])
        return BookSnapshot(
            instrument,
            self.px[instrument, 0, :nb].copy(),
            self.sz[instrument, 0, :nb].copy(),
            self.px[instrument, 1, :na].copy(),
            self.sz[instrument, 1, :na].copy(),
            bool(self.bstate[instrument, _bk.B_RESYNC]),
        )

    def imbalance(self, instrument: int, n: int) -> float:
        if instrument < 0 or instrument >= self.capacity:
            return float("nan")
        return float(_bk.book_imbalance(self.px, self.sz, self.nlev, self.bstate, instrument, n))

    def needs_resync(self, instrument: int) -> bool:
        return 0 <= instrument < self.capacity and bool(self.bstate[instrument, _bk.B_RESYNC])

    def has_depth(self, instrument: int) -> bool:
        return 0 <= instrument < self.capacity and bool(self.bstate[instrument, _bk.B_HAS_DEPTH])


class BookReducer:
    """Top `max_levels` of the depth book per instrument, from BookLevel rows in log order."""

    def __init__(self, max_levels: int = 10) -> None:
        self.state = BookState(max_levels)

    def on_batch(self, batch: ColumnBatch) -> None:
        start = 0
        while True:
            row = _bk.book_run(batch.kind, batch.instrument, batch.side, batch.price, batch.size,
                           batch.action, batch.flags, self.state.px, self.state.sz,
                           self.state.nlev, self.state.bstate, start)
            if row < 0:
                return
            self.state.ensure(int(batch.instrument[row]))
            start = row

    def book(self, instrument: int) -> BookSnapshot:
        return self.state.snapshot(instrument)

    def imbalance(self, instrument: int, n: int = 5) -> float:
        """(bid size - ask size) / (bid size + ask size) over the top n levels.

        In [-1, 1], positive when bids outweigh offers; NaN without depth, with both sides
        empty, or while the book needs a resync.
        """
        return self.state.imbalance(instrument, n)

    def needs_resync(self, instrument: int) -> bool:
        return self.state.needs_resync(instrument)
