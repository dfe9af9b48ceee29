"""`mia export`: one kind of a recorded day as a typed Parquet or CSV table.

    from mia.replay.export import export_day, export_table, events_from_table
    summary = export_day("./mia-data", "2026-11-20", "trades", "parquet", "es.parquet")
    table = export_table(open_day("./mia-data", "2026-11-20"), "levels")   # a pyarrow.Table

Kinds: trades (Trade), quotes (Quote), book (BookLevel), bars (OrderflowBar), levels
(GammaLevels), chains (every contract of every Polygon chain page, one row each), term
(TermStructure: VIX and the VX curve as list columns), iv (IvSurface: per-expiry lists and the
flattened smiles; --symbols filters by underlying), option_trades (OptionTrade: Polygon's option
trade stream, `conditions` a list column), flow (OptionFlow bars: customer-signed option flow per
underlying, the by-contract lists as list columns), unusual (UnusualTrade); --symbols filters
these by underlying.

Column types: times (ts_event, ts_recv, bar_start, chain_ts, ts) are timestamp[ns, UTC];
`symbol` is the instrument's symbol as a string beside the integer `instrument`; sides are int8;
prices float64 (NaN where unset); lists (pin_strikes) are list<float64> in Parquet and JSON text in
CSV. Market kinds carry the log's `seq`. CSV timestamps are ISO 8601 with nanoseconds and a Z.

Chains: a row per contract per page with HTTP status 200, in log order: snapshot_id, page, ts
(ts_recv of the page), underlying, then every field of the contract with nested objects flattened
as ``details_strike_price``, ``greeks_gamma``, ``last_quote_bid`` and so on. So the row count is
the sum of ``len(results)`` over the day's 200 pages (a snapshot that later failed a page is kept:
its pages were received).

pyarrow is an optional extra: ``pip install 'mia[export]'``.
"""

from __future__ import annotations

import json
import logging
import os
import types
import typing
from typing import Callable, Sequence

import msgspec
import numpy as np

from mia.engine.columns import COLUMN_SPEC
from mia.engine.errors import MiaError, UsageError
from mia.engine.events import (
    DERIVED_KINDS,
    K_BOOK_LEVEL,
    K_QUOTE,
    K_TRADE,
    KIND_BY_NAME,
    TYPE_OF_KIND,
    Event,
    PolygonResponse,
)
from mia.engine.files import write_atomically
from mia.replay.day import Day, open_day, time_span

logger = logging.getLogger(__name__)

__all__ = ["EXPORT_KINDS", "FORMATS", "ExportSummary", "export_day", "export_table", "write_table",
           "events_from_table", "MissingExtraError"]

EXPORT_KINDS: dict[str, str] = {
    "trades": "Trade",
    "quotes": "Quote",
    "book": "BookLevel",
    "bars": "OrderflowBar",
    "levels": "GammaLevels",
    "chains": "PolygonResponse",
    "term": "TermStructure",
    "iv": "IvSurface",
    "option_trades": "OptionTrade",
    "flow": "OptionFlow",
    "unusual": "UnusualTrade",
}
_EXPORT_NAME_OF = {v: k for k, v in EXPORT_KINDS.items()}
FORMATS = ("parquet", "csv")
TIME_FIELDS = frozenset({"ts_event", "ts_recv", "bar_start", "chain_ts", "ts"})
INT8_FIELDS = frozenset({"side", "action"})
MARKET = (K_TRADE, K_QUOTE, K_BOOK_LEVEL)
PER_UNDERLYING = ("levels", "iv", "term", "option_trades", "flow", "unusual")

Progress = Callable[[int, int], None]


class MissingExtraError(MiaError):
    """An optional dependency (an extra of the mia package) is not installed."""


def _pa():
    try:
        import pyarrow as pa
    except ImportError:
        raise MissingExtraError("mia export needs pyarrow: pip install 'mia[export]'") from None
    return pa


class ExportSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What `mia export` wrote (its --json output)."""

    date: str
    kind: str
    format: str
    path: str
    rows: int
    columns: list[str]
    bytes: int
    first_ts: int | None
    last_ts: int | None



def _kind(kind: str) -> int:
    if kind not in EXPORT_KINDS:
        raise UsageError(f"unknown export kind {kind!r}; expected one of {', '.join(EXPORT_KINDS)}")
    return KIND_BY_NAME[EXPORT_KINDS[kind]]


def _arrow_type(pa, name: str, tp):
    if name in TIME_FIELDS:
        return pa.timestamp("ns", tz="UTC")
    if name in INT8_FIELDS:
        return pa.int8()
    if tp is bool:
        return pa.bool_()
    if tp is int:
        return pa.int64()
    if tp is float:
        return pa.float64()
    if tp is str:
        return pa.string()
    if tp is bytes:
        return pa.binary()
    if typing.get_origin(tp) is list:
        (inner,) = typing.get_args(tp)
        return pa.list_(_arrow_type(pa, "", inner))
    raise TypeError(f"no arrow type for field {name}: {tp}")


def event_schema(kind: str):
    """The pyarrow schema of an event kind's export (chains excluded: see chain_schema)."""
    pa = _pa()
    cls = TYPE_OF_KIND[_kind(kind)]
    fields = [] if _kind(kind) not in MARKET else [pa.field("seq", pa.int64())]
    for f in msgspec.structs.fields(cls):
        fields.append(pa.field(f.name, _arrow_type(pa, f.name, f.type)))
        if f.name == "instrument":
            fields.append(pa.field("symbol", pa.string()))
    return pa.schema(fields)


def _chain_fields(prefix: str, cls) -> list[tuple[str, tuple[str, ...], object]]:
    """(column name, attribute path, type) for every leaf of a vendor struct, depth first."""
    out = []
    for f in msgspec.structs.fields(cls):
        tp = f.type
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        base = args[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1 else tp
        name = f"{prefix}{f.name}"
        if isinstance(base, type) and issubclass(base, msgspec.Struct):
            out.extend((n, (f.name, *path), t) for n, path, t in _chain_fields(f"{name}_", base))
        else:
            out.append((name, (f.name,), base))
    return out


def chain_columns_spec():
    from mia.data.polygon.models import ChainContract

    return _chain_fields("", ChainContract)


def chain_schema():
    pa = _pa()
    fields = [pa.field("snapshot_id", pa.int64()), pa.field("page", pa.int64()),
              pa.field("ts", pa.timestamp("ns", tz="UTC")), pa.field("underlying", pa.string())]
    for name, _, tp in chain_columns_spec():
        fields.append(pa.field(name, _arrow_type(pa, name, tp)))
    return pa.schema(fields)


def _progress_of(day: Day, start: int | None, end: int | None, progress: Progress | None):
    if progress is None:
        return lambda ts: None
    lo, hi = time_span(day, start, end)
    return lambda ts: progress(max(0, min(int(ts) - lo, hi - lo)), hi - lo)


def _market_table(day: Day, k: int, ids, start, end, tick):
    pa = _pa()
    schema = event_schema(_EXPORT_NAME_OF[TYPE_OF_KIND[k].__name__])
    names = [f.name for f in schema if f.name != "symbol"]
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for b in day.log.read_batches(day.date, start=start, end=end, kinds=[k], instruments=ids):
        sel = b.kind == k
        for n in names:
            parts[n].append(getattr(b, n)[sel])
        if len(b):
            tick(b.ts_recv[-1])
    cols = {n: (np.concatenate(p) if p else np.empty(0, COLUMN_SPEC[n][0])) for n, p in parts.items()}
    return _assemble(pa, schema, cols, day.symbols())


def _assemble(pa, schema, cols: dict, symbols: dict[int, str]):
    arrays = []
    for f in schema:
        if f.name == "symbol":
            inst = np.asarray(cols["instrument"])
            arrays.append(_symbols(pa, inst, symbols))
            continue
        values = cols[f.name]
        if pa.types.is_timestamp(f.type):
            arrays.append(pa.array(np.asarray(values, dtype=np.int64), type=pa.int64()).cast(f.type))
        elif isinstance(values, np.ndarray) and values.dtype != object:
            arrays.append(pa.array(values.astype(f.type.to_pandas_dtype(), copy=False), type=f.type))
        else:
            arrays.append(pa.array(list(values), type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _symbols(pa, inst: np.ndarray, symbols: dict[int, str]):
    # Dictionary-decode: one lookup per distinct id, not per row.
    ids, inverse = np.unique(inst, return_inverse=True)
    names = pa.array([symbols.get(int(i), str(int(i))) for i in ids], type=pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(inverse.astype(np.int32)), names).cast(pa.string())


def _object_table(day: Day, k: int, ids, start, end, tick):
    pa = _pa()
    cls = TYPE_OF_KIND[k]
    schema = event_schema(_EXPORT_NAME_OF[cls.__name__])
    fields = [f.name for f in schema if f.name != "symbol"]
    cols: dict[str, list] = {n: [] for n in fields}
    streams = ("derived",) if k in DERIVED_KINDS else None
    for _, ev in day.log.read(day.date, start=start, end=end, kinds=[k], instruments=ids, streams=streams):
        for n in fields:
            cols[n].append(getattr(ev, n))
        tick(ev.ts_recv)
    return _assemble(pa, schema, cols, day.symbols())


def _chain_table(day: Day, start, end, tick):
    from mia.data.polygon.models import is_indices_response, parse_page

    pa = _pa()
    schema = chain_schema()
    spec = chain_columns_spec()
    cols: dict[str, list] = {f.name: [] for f in schema}
    for _, ev in day.log.read(day.date, start=start, end=end, kinds=[PolygonResponse]):
        tick(ev.ts_recv)
        if ev.status != 200 or is_indices_response(ev):  # index values, not contracts
            continue
        page = parse_page(ev.body)
        for c in page.results or ():
            cols["snapshot_id"].append(ev.snapshot_id)
            cols["page"].append(ev.page)
            cols["ts"].append(ev.ts_recv)
            cols["underlying"].append(ev.underlying)
            for name, path, _ in spec:
                v = c
                for attr in path:
                    v = getattr(v, attr) if v is not None else None
                cols[name].append(v)
    arrays = []
    for f in schema:
        if pa.types.is_timestamp(f.type):
            arrays.append(pa.array(cols[f.name], type=pa.int64()).cast(f.type))
        else:
            arrays.append(pa.array(cols[f.name], type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def export_table(day: Day, kind: str, *, symbols: Sequence[str] | None = None, start: int | None = None,
                 end: int | None = None, progress: Progress | None = None):
    """One kind of the day in [start, end) (ts_recv, ns) as a typed pyarrow Table."""
    k = _kind(kind)
    tick = _progress_of(day, start, end, progress)
    if kind == "chains":
        if symbols:
            raise UsageError("--symbols does not apply to chains (they are per underlying)")
        return _chain_table(day, start, end, tick)
    if kind in PER_UNDERLYING:  # per underlying (term: the one VIX curve), no instrument
        table = _object_table(day, k, None, start, end, tick)
        if symbols and kind != "term":
            import pyarrow.compute as pc

            table = table.filter(pc.is_in(table["underlying"], value_set=_pa().array(list(symbols))))
        return table
    ids = day._instrument_ids(symbols)
    if k in MARKET:
        return _market_table(day, k, ids, start, end, tick)
    return _object_table(day, k, ids, start, end, tick)


def write_table(table, path: str | os.PathLike, fmt: str) -> int:
    """Write atomically (temporary file beside it, then rename); returns the bytes written."""
    pa = _pa()
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; expected parquet or csv")
    def write(tmp: str) -> None:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        else:
            _write_csv(pa, table, tmp)

    write_atomically(path, write, fsync=False)
    return os.path.getsize(path)


def _write_csv(pa, table, path: str) -> None:
    import pyarrow.csv as pcsv

    cols, names = [], []
    for f, col in zip(table.schema, table.columns):
        if pa.types.is_timestamp(f.type):
            # ISO 8601 with all nine digits and a Z: exact, and parsed by pandas, polars, DuckDB.
            ns = col.cast(pa.int64()).to_numpy().astype("datetime64[ns]")
            col = pa.array(np.char.add(np.datetime_as_string(ns, unit="ns"), "Z"), type=pa.string())
        elif pa.types.is_list(f.type) or pa.types.is_binary(f.type):
            col = pa.array([None if v is None else json.dumps(v) if not isinstance(v, bytes) else v.hex()
                            for v in col.to_pylist()], type=pa.string())
        cols.append(col)
        names.append(f.name)
    pcsv.write_csv(pa.Table.from_arrays(cols, names=names), path)


def export_day(root: str, date: str, kind: str, fmt: str, path: str | os.PathLike, *,
               symbols: Sequence[str] | None = None, start: int | None = None, end: int | None = None,
               progress: Progress | None = None) -> ExportSummary:
    """Write one kind of a recorded day to `path` as Parquet or CSV; return what was written."""
    _kind(kind)
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; expected parquet or csv")
    day = open_day(root, date)
    table = export_table(day, kind, symbols=symbols, start=start, end=end, progress=progress)
    size = write_table(table, path, fmt)
    ts_col = "ts" if kind == "chains" else "ts_recv"
    ts = table[ts_col].cast(_pa().int64()).to_numpy() if table.num_rows else np.empty(0, np.int64)
    logger.info("exported kind=%s rows=%d path=%s", kind, table.num_rows, path)
    return ExportSummary(date=day.date, kind=kind, format=fmt, path=os.fspath(path), rows=table.num_rows,
                         columns=table.column_names, bytes=size,
                         first_ts=int(ts.min()) if ts.size else None,
                         last_ts=int(ts.max()) if ts.size else None)


def events_from_table(kind: str, table) -> list[Event]:
    """Rebuild the events of an exported table (not chains): the inverse of export_table."""
    k = _kind(kind)
    if kind == "chains":
        raise UsageError("chains rows are contracts, not events")
    cls = TYPE_OF_KIND[k]
    pa = _pa()
    cols = {}
    for f in msgspec.structs.fields(cls):
        col = table[f.name]
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.int64())
        cols[f.name] = col.to_pylist()
    n = table.num_rows
    return [cls(**{name: values[i] for name, values in cols.items()}) for i in range(n)]
