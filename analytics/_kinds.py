"""numba helpers the reducers' wrappers share: which kinds a batch holds (one pass over its
`kind` column instead of a numpy mask per kind a reducer looks for), and the time range of
the rows of one kind.

A reducer asks `kinds_of(batch.kind)` first and builds its masks only for kinds the batch
has: most batches of a day are market rows alone, and the chain, stream and plumbing reducers
had scanned every one of them several times for rows it did not hold.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _kind_table(kind, table):
    for r in range(kind.shape[0]):
        table[kind[r]] = True


def kinds_of(kind: np.ndarray) -> np.ndarray:
    """A bool table over kind numbers (uint8): True where the column holds that kind."""
    table = np.zeros(256, dtype=np.bool_)
    if kind.dtype != np.uint8:  # not a ColumnBatch column: no kernel writing past the table
        table[np.unique(kind).astype(np.uint8)] = True
    elif kind.shape[0]:
        _kind_table(kind, table)
    return table


@njit(cache=True)
def ts_range(kind, ts, k):
    """(rows of kind k, min ts, max ts) over them; (0, 0, 0) when there is none."""
    n = 0
    lo = np.int64(0)
    hi = np.int64(0)
    for r in range(kind.shape[0]):
        if kind[r] == k:
            t = ts[r]
            if n == 0:
                lo = t
                hi = t
            else:
                if t < lo:
                    lo = t
                if t > hi:
                    hi = t
            n += 1
    return n, lo, hi
