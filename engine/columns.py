"""Columnar forms the reducers consume: event batches and option-chain snapshots.

A ``ColumnBatch`` holds events in log order as numpy arrays, one per field, with a ``kind``
column (the event tag). Market events (Trade, Quote, BookLevel) live entirely in columns; every
other kind has a row too (so ordering against market data is kept) whose ``obj`` column indexes
``objects``, the decoded event. Columns a kind does not use hold NaN (floats) or 0 / -1 (ints).

Column meaning by kind:
- Trade:     price, size, side
- Quote:     bid, bid_size, ask, ask_size
- BookLevel: side, price, size, action, level, orders, flags
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Iterable, Sequence

import numpy as np

from .events import K_BOOK_LEVEL, K_QUOTE, K_TRADE, BookLevel, Event, Quote, Trade, kind_of

# name -> (dtype, fill value for rows that do not use the column)
COLUMN_SPEC: dict[str, tuple[type, object]] = {
    "kind": (np.uint8, 0),
    "seq": (np.int64, -1),
    "ts_event": (np.int64, 0),
    "ts_recv": (np.int64, 0),
    "instrument": (np.int32, -1),
    "price": (np.float64, np.nan),
    "size": (np.float64, np.nan),
    "side": (np.int8, 0),
    "bid": (np.float64, np.nan),
    "bid_size": (np.float64, np.nan),
    "ask": (np.float64, np.nan),
    "ask_size": (np.float64, np.nan),
    "action": (np.int8, -1),
    "level": (np.int16, -1),
    "orders": (np.int32, 0),
    "flags": (np.uint8, 0),
    "obj": (np.int32, -1),
}


@dataclass
class ColumnBatch:
    kind: np.ndarray
    seq: np.ndarray
    ts_event: np.ndarray
    ts_recv: np.ndarray
    instrument: np.ndarray
    price: np.ndarray
    size: np.ndarray
    side: np.ndarray
    bid: np.ndarray
    bid_size: np.ndarray
    ask: np.ndarray
    ask_size: np.ndarray
    action: np.ndarray
    level: np.ndarray
    orders: np.ndarray
    flags: np.ndarray
    obj: np.ndarray
    objects: list[Event] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    @classmethod
    def allocate(cls, n: int) -> "ColumnBatch":
        """A batch of n rows with every column at its fill value."""
        cols = {name: np.full(n, fill, dtype=dt) for name, (dt, fill) in COLUMN_SPEC.items()}
        return cls(**cols, objects=[])

    @classmethod
    def empty(cls) -> "ColumnBatch":
        return cls.allocate(0)

    @classmethod
    def from_events(cls, events: Sequence[Event], seqs: Iterable[int] | None = None) -> "ColumnBatch":
        """Reference (pure Python) conversion; the log has a fast path that must agree with it."""
        n = len(events)
        b = cls.allocate(n)
        if seqs is not None:
            b.seq[:] = np.fromiter(seqs, dtype=np.int64, count=n)
        for i, ev in enumerate(events):
            k = kind_of(ev)
            b.kind[i] = k
            b.ts_event[i] = ev.ts_event
            b.ts_recv[i] = ev.ts_recv
            inst = getattr(ev, "instrument", -1)
            b.instrument[i] = inst
            if k == K_TRADE:
                b.price[i] = ev.price
                b.size[i] = ev.size
                b.side[i] = ev.side
            elif k == K_QUOTE:
                b.bid[i] = ev.bid
                b.bid_size[i] = ev.bid_size
                b.ask[i] = ev.ask
                b.ask_size[i] = ev.ask_size
            elif k == K_BOOK_LEVEL:
                b.side[i] = ev.side
                b.price[i] = ev.price
                b.size[i] = ev.size
                b.action[i] = ev.action
                b.level[i] = ev.level
                b.orders[i] = ev.orders
                b.flags[i] = ev.flags
            else:
                b.obj[i] = len(b.objects)
                b.objects.append(ev)
        return b

    def column_names(self) -> list[str]:
        return list(COLUMN_SPEC)

    def take(self, index: np.ndarray) -> "ColumnBatch":
        """Rows at `index` (bool mask or int positions), objects re-indexed."""
        idx = np.arange(len(self))[index] if np.asarray(index).dtype == bool else np.asarray(index)
        cols = {name: getattr(self, name)[idx] for name in COLUMN_SPEC}
        obj = cols["obj"]
        objects: list[Event] = []
        has = obj >= 0
        new_obj = np.full(obj.shape, -1, dtype=np.int32)
        for j in np.flatnonzero(has):
            new_obj[j] = len(objects)
            objects.append(self.objects[obj[j]])
        cols["obj"] = new_obj
        return ColumnBatch(**cols, objects=objects)

    def events_at(self, i: int) -> Event | None:
        """The decoded object of row i, for non-columnar kinds."""
        j = int(self.obj[i])
        return self.objects[j] if j >= 0 else None

    def event(self, i: int) -> Event:
        """The event of row i: market rows rebuilt from their columns, others from `objects`."""
        k = int(self.kind[i])
        if k == K_TRADE:
            return Trade(int(self.ts_event[i]), int(self.ts_recv[i]), int(self.instrument[i]),
                         float(self.price[i]), float(self.size[i]), int(self.side[i]))
        if k == K_QUOTE:
            return Quote(int(self.ts_event[i]), int(self.ts_recv[i]), int(self.instrument[i]),
                         float(self.bid[i]), float(self.bid_size[i]), float(self.ask[i]),
                         float(self.ask_size[i]))
        if k == K_BOOK_LEVEL:
            return BookLevel(int(self.ts_event[i]), int(self.ts_recv[i]), int(self.instrument[i]),
                             int(self.side[i]), float(self.price[i]), float(self.size[i]),
                             int(self.action[i]), int(self.level[i]), int(self.orders[i]),
                             int(self.flags[i]))
        return self.objects[int(self.obj[i])]

    @staticmethod
    def concat(batches: Sequence["ColumnBatch"]) -> "ColumnBatch":
        if not batches:
            return ColumnBatch.empty()
        cols = {name: np.concatenate([getattr(b, name) for b in batches]) for name in COLUMN_SPEC}
        objects: list[Event] = []
        obj = cols["obj"]
        start = 0
        for b in batches:
            n = len(b)
            part = obj[start : start + n]
            part[part >= 0] += len(objects)
            objects.extend(b.objects)
            start += n
        return ColumnBatch(**cols, objects=objects)


assert [f.name for f in fields(ColumnBatch)][:-1] == list(COLUMN_SPEC)


# --- option chains ----------------------------------------------------------------------------

RIGHT_CALL = 1
RIGHT_PUT = -1


@dataclass(frozen=True)
class ChainColumns:
    """One options-chain snapshot of one underlying as numpy columns, one row per contract.

    Produced by ``mia.data.polygon.models`` from the pages of a snapshot; consumed by
    ``mia.analytics.gamma``. Missing values are NaN (greeks, IV, OI, quotes).
    """

    underlying: str  # "SPX", "NDX"
    ts_ns: int  # when the snapshot was taken (ts_recv of its last page)
    spot: float  # underlying value from the response, NaN when absent
    strike: np.ndarray  # float64
    expiry_ns: np.ndarray  # int64, settlement instant UTC (AM: 09:30 ET, PM: 16:00 ET)
    right: np.ndarray  # int8, RIGHT_CALL / RIGHT_PUT
    open_interest: np.ndarray  # float64
    volume: np.ndarray  # float64 (day volume)
    iv: np.ndarray  # float64, annualised decimal
    delta: np.ndarray
    gamma: np.ndarray
    theta: np.ndarray
    vega: np.ndarray
    bid: np.ndarray
    ask: np.ndarray
    multiplier: np.ndarray  # float64, shares per contract (100)
    am_settled: np.ndarray  # bool
    tickers: tuple[str, ...] = ()
    snapshot_id: int = 0

    def __len__(self) -> int:
        return int(self.strike.shape[0])


from .errors import MiaError  # noqa: E402  (this section's own import: the top belongs to ColumnBatch)

# ChainSnapshot (mia.engine.events) <-> ChainColumns: each column's little-endian dtype in the
# event's bytes, in field order. The one writer is mia.data.polygon.models (chain_snapshot).
CHAIN_SNAPSHOT_COLUMNS: dict[str, str] = {
    "strike": "<f8", "expiry_ns": "<i8", "right": "i1", "open_interest": "<f8", "volume": "<f8",
    "iv": "<f8", "delta": "<f8", "gamma": "<f8", "theta": "<f8", "vega": "<f8", "bid": "<f8",
    "ask": "<f8", "multiplier": "<f8", "am_settled": "u1",
}
_NATIVE: dict[str, type] = {"<f8": np.float64, "<i8": np.int64, "i1": np.int8, "u1": np.bool_}


class ChainSnapshotError(MiaError):
    """A ChainSnapshot whose columns do not fit together (lengths, tickers)."""


def snapshot_chain(ev) -> ChainColumns:
    """A `ChainSnapshot` event as ChainColumns: one `numpy.frombuffer` per column.

    The arrays are writeable native copies (the reducers' numba kernels are compiled for
    writeable arrays; a read-only view would compile a second specialisation). `ts_ns` is the
    event's ts_recv (that of the snapshot's final page). ChainSnapshotError when the columns'
    lengths differ.
    """
    cols: dict[str, np.ndarray] = {}
    n = -1
    for name, dt in CHAIN_SNAPSHOT_COLUMNS.items():
        raw = getattr(ev, name)
        width = np.dtype(dt).itemsize
        if len(raw) % width or (n >= 0 and len(raw) // width != n):
            raise ChainSnapshotError(f"{ev.underlying} snapshot {ev.snapshot_id}: column {name} holds "
                                     f"{len(raw)} bytes, not {n} rows of {width}")
        n = len(raw) // width
        cols[name] = np.frombuffer(raw, dtype=dt).astype(_NATIVE[dt])  # astype copies
    tickers = tuple(ev.tickers.decode("ascii").split("\n")) if ev.tickers else ()
    if len(tickers) != n:
        raise ChainSnapshotError(f"{ev.underlying} snapshot {ev.snapshot_id}: {len(tickers)} tickers "
                                 f"for {n} rows")
    return ChainColumns(underlying=ev.underlying, ts_ns=int(ev.ts_recv), spot=float(ev.spot),
                        tickers=tickers, snapshot_id=int(ev.snapshot_id), **cols)
