"""numba kernels of the depth book: state lives in arrays owned by the Python wrapper.

Layout, for instrument `i` and side index `s` (0 bid, 1 ask):
- `px[i, s, :n]`, `sz[i, s, :n]`: price and size of the top `n = nlev[i, s]` levels, best first
  (bids descending, asks ascending). Levels pushed past `max_levels` are dropped for good, as a
  depth feed of that many levels would.
- `bstate[i, B_*]`: flags (see the constants).
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
from numba import njit

from ..engine.events import (
    BATCH_BEGIN,
    BATCH_END,
    BOOK_CLEAR,
    BOOK_DELETE,
    BOOK_SNAPSHOT,
    BOOK_UPSERT,
    K_BOOK_LEVEL,
)

B_RESYNC: Final = 0  # crossed / inconsistent since the last snapshot
B_IN_BATCH: Final = 1  # between BATCH_BEGIN and BATCH_END: the book may be transiently crossed
B_IN_SNAPSHOT: Final = 2  # the previous row was a snapshot row that did not end its batch
B_HAS_DEPTH: Final = 3  # any BookLevel row seen
N_BSTATE: Final = 4

_BATCH_BEGIN: Final = BATCH_BEGIN
_BATCH_END: Final = BATCH_END
_SNAPSHOT: Final = BOOK_SNAPSHOT
_UPSERT: Final = BOOK_UPSERT
_DELETE: Final = BOOK_DELETE
_CLEAR: Final = BOOK_CLEAR
_K_BOOK: Final = K_BOOK_LEVEL


# The per-row helpers are inlined into their callers at numba IR level (`inline="always"`): a
# call of a function taking four arrays costs about as much as the row's work (~20 ns a depth
# row on bench_pipeline's day), and LLVM does not inline `book_apply` on its own.
@njit(cache=True, inline="always")
def _delete(px, sz, nlev, i, s, price):
    n = nlev[i, s]
    for j in range(n):
        if px[i, s, j] == price:
            for k in range(j, n - 1):
                px[i, s, k] = px[i, s, k + 1]
                sz[i, s, k] = sz[i, s, k + 1]
            nlev[i, s] = n - 1
            return


@njit(cache=True, inline="always")
def _upsert(px, sz, nlev, i, s, price, size):
    # the first level not better than `price` (levels are never NaN): set it or insert before it
    n = nlev[i, s]
    cap = px.shape[2]
    p = px[i, s]
    q = sz[i, s]
    j = 0
    if s == 0:
        while j < n and p[j] > price:
            j += 1
    else:
        while j < n and p[j] < price:
            j += 1
    if j < n and p[j] == price:
        q[j] = size
        return
    if j == n:
        if n < cap:
            p[n] = price
            q[n] = size
            nlev[i, s] = n + 1
        return
    last = n if n < cap else cap - 1
    for k in range(last, j, -1):
        p[k] = p[k - 1]
        q[k] = q[k - 1]
    p[j] = price
    q[j] = size
    if n < cap:
        nlev[i, s] = n + 1


@njit(cache=True, inline="always")
def book_apply(px, sz, nlev, bstate, i, side, price, size, action, flags):
    """Apply one BookLevel row to instrument i's book."""
    bstate[i, B_HAS_DEPTH] = 1
    if flags & _BATCH_BEGIN:
        bstate[i, B_IN_BATCH] = 1
    if action == _SNAPSHOT:
        # A snapshot batch replaces the book: its first row (BATCH_BEGIN, or the first snapshot
        # row after anything else when the source sends no flags) clears it and the resync flag.
        if (flags & _BATCH_BEGIN) or bstate[i, B_IN_SNAPSHOT] == 0:
            nlev[i, 0] = 0
            nlev[i, 1] = 0
            bstate[i, B_RESYNC] = 0
        bstate[i, B_IN_SNAPSHOT] = 0 if (flags & _BATCH_END) else 1
    else:
        bstate[i, B_IN_SNAPSHOT] = 0
    if action == _CLEAR:
        if side >= 0:
            nlev[i, 0] = 0
        if side <= 0:
            nlev[i, 1] = 0
    elif action == _SNAPSHOT or action == _UPSERT or action == _DELETE:
        if side == 1 or side == -1:
            s = 0 if side == 1 else 1
            if math.isnan(price):
                if action != _SNAPSHOT:  # a snapshot of an empty side may carry no price
                    bstate[i, B_RESYNC] = 1
            elif action == _DELETE or not (size > 0.0):
                if math.isnan(size) and action != _DELETE:
                    bstate[i, B_RESYNC] = 1
                else:
                    _delete(px, sz, nlev, i, s, price)
            else:
                _upsert(px, sz, nlev, i, s, price, size)
        elif not (action == _SNAPSHOT and math.isnan(price)):
            bstate[i, B_RESYNC] = 1
    else:
        bstate[i, B_RESYNC] = 1
    if flags & _BATCH_END:
        bstate[i, B_IN_BATCH] = 0
    # Check crossing only where the source says the book is consistent.
    if bstate[i, B_IN_BATCH] == 0 and nlev[i, 0] > 0 and nlev[i, 1] > 0:
        if px[i, 0, 0] >= px[i, 1, 0]:
            bstate[i, B_RESYNC] = 1


@njit(cache=True)
def book_imbalance(px, sz, nlev, bstate, i, n):
    """(bid size - ask size) / (bid size + ask size) over the top n levels; NaN when undefined."""
    if i < 0 or i >= nlev.shape[0] or bstate[i, B_HAS_DEPTH] == 0 or bstate[i, B_RESYNC] != 0:
        return np.nan
    b = 0.0
    for j in range(min(n, nlev[i, 0])):
        b += sz[i, 0, j]
    a = 0.0
    for j in range(min(n, nlev[i, 1])):
        a += sz[i, 1, j]
    if b + a <= 0.0:
        return np.nan
    return (b - a) / (b + a)


@njit(cache=True)
def book_run(kind, instrument, side, price, size, action, flags, px, sz, nlev, bstate, start):
    """Apply every BookLevel row from `start`; returns -1 when done or the row whose instrument
    needs more capacity (the wrapper grows the arrays and calls again from that row)."""
    cap = nlev.shape[0]
    for r in range(start, kind.shape[0]):
        if kind[r] != _K_BOOK:
            continue
        i = instrument[r]
        if i < 0:
            continue
        if i >= cap:
            return r
        book_apply(px, sz, nlev, bstate, i, side[r], price[r], size[r], action[r], flags[r])
    return -1
