"""mia export: Parquet and CSV round-trip exactly against open_day, counts agree with inspect."""

from __future__ import annotations

import json
import sys

import msgspec
import numpy as np
import pytest
from helpers import assert_one_line_error, cli_run

pa = pytest.importorskip("pyarrow")
import pyarrow.csv as pcsv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from mia.data.polygon.models import is_indices_response, parse_page  # noqa: E402
from mia.engine.events import EventCodec, GammaLevels, PolygonResponse  # noqa: E402
from mia.replay import open_day  # noqa: E402
from mia.replay.export import (  # noqa: E402
    EXPORT_KINDS,
    MissingExtraError,
    event_schema,
    events_from_table,
    export_day,
)

EVENT_KINDS = ["trades", "quotes", "book", "bars", "levels"]


def _encoded(events):
    codec = EventCodec()
    return [codec.encode(e) for e in events]


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_parquet_round_trips_every_field(sim_day, tmp_path, kind):
    # Arrange
    root, date = sim_day
    out = tmp_path / f"{kind}.parquet"
    expected = list(open_day(root, date).events(kinds=[EXPORT_KINDS[kind]]))
    # Act
    summary = export_day(root, date, kind, "parquet", out)
    table = pq.read_table(out)
    # Assert: same events, every field, timestamps equal in ns (NaN equal to NaN: compare bytes)
    assert summary.rows == len(expected) == table.num_rows > 0
    assert _encoded(events_from_table(kind, table)) == _encoded(expected)
    assert table.schema.field("ts_event").type == pa.timestamp("ns", tz="UTC")
    assert table.schema.field("ts_recv").type == pa.timestamp("ns", tz="UTC")


def test_parquet_types_and_symbols(sim_day, tmp_path):
    root, date = sim_day
    out = tmp_path / "t.parquet"
    export_day(root, date, "trades", "parquet", out)
    table = pq.read_table(out)
    assert table.schema.field("side").type == pa.int8()
    assert table.schema.field("symbol").type == pa.string()
    day = open_day(root, date)
    symbols = day.symbols()
    got = table.to_pydict()
    assert got["symbol"] == [symbols[i] for i in got["instrument"]]
    # pandas reads it with UTC datetimes and exact ns
    df = table.to_pandas()
    cols = day.columns("Trade")
    assert str(df["ts_recv"].dtype) == "datetime64[ns, UTC]"
    assert np.array_equal(df["ts_recv"].astype("int64").to_numpy(), cols["ts_recv"])
    assert np.array_equal(df["seq"].to_numpy(), cols["seq"])


@pytest.mark.parametrize("kind", ["trades", "levels"])
def test_csv_round_trips(sim_day, tmp_path, kind):
    root, date = sim_day
    out = tmp_path / f"{kind}.csv"
    export_day(root, date, kind, "csv", out)
    schema = event_schema(kind)
    text = out.read_text()
    assert "Z" in text.splitlines()[1]  # ISO 8601 in UTC
    types = {f.name: f.type for f in schema if not pa.types.is_list(f.type)}
    table = pcsv.read_csv(out, convert_options=pcsv.ConvertOptions(column_types=types))
    # list columns are JSON text in CSV
    for f in schema:
        if pa.types.is_list(f.type):
            idx = table.schema.get_field_index(f.name)
            table = table.set_column(idx, f.name, pa.array([json.loads(v) for v in table[f.name].to_pylist()],
                                                           type=f.type))
    expected = list(open_day(root, date).events(kinds=[EXPORT_KINDS[kind]]))
    assert table.num_rows == len(expected) > 0
    assert _encoded(events_from_table(kind, table)) == _encoded(expected)


def test_counts_equal_inspect_json(sim_day, tmp_path):
    root, date = sim_day
    res = cli_run("inspect", "--date", date, "--data-dir", root, "--json")
    assert res.exit_code == 0, res.output
    counts: dict[str, int] = {}
    for seg in json.loads(res.stdout)["days"][0]["segments"]:
        for k, v in seg["kinds"].items():
            counts[k] = counts.get(k, 0) + v
    for kind in EVENT_KINDS:
        out = tmp_path / f"{kind}.parquet"
        res = cli_run("export", "--date", date, "--data-dir", root, "--kind", kind, "-o", out, "--json")
        assert res.exit_code == 0, res.output
        summary = json.loads(res.stdout)
        assert summary["rows"] == counts[EXPORT_KINDS[kind]] == pq.read_metadata(out).num_rows > 0


def test_chains_one_row_per_contract_per_page(sim_day, tmp_path):
    # Arrange: the definition: every contract of every HTTP 200 options-chain page of the day
    # (the day also holds indices snapshots, /v3/snapshot/indices: no contracts there)
    root, date = sim_day
    day = open_day(root, date)
    pages = [ev for ev in day.events(kinds=[PolygonResponse])
             if ev.status == 200 and not is_indices_response(ev)]
    expected = sum(len(parse_page(p.body).results or []) for p in pages)
    # Act
    out = tmp_path / "chains.parquet"
    summary = export_day(root, date, "chains", "parquet", out)
    table = pq.read_table(out)
    # Assert
    assert summary.rows == table.num_rows == expected > 0
    assert table.schema.field("ts").type == pa.timestamp("ns", tz="UTC")
    # each snapshot's rows equal the contract count of the GammaLevels it produced
    rows = table.group_by(["underlying", "snapshot_id"]).aggregate([("page", "count")]).to_pylist()
    per_snapshot = {(r["underlying"], r["snapshot_id"]): r["page_count"] for r in rows}
    levels = [g for g in day.events(kinds=[GammaLevels]) if not g.stale]
    assert levels
    for g in levels:
        assert per_snapshot[(g.underlying, g.snapshot_id)] == g.contracts
    # flattened fields carry the contract values
    first = parse_page(pages[0].body).results[0]
    row = table.slice(0, 1).to_pylist()[0]
    assert row["details_strike_price"] == first.details.strike_price
    assert row["greeks_gamma"] == (first.greeks.gamma if first.greeks else None)
    assert row["underlying"] == pages[0].underlying
    assert table["details_strike_price"].null_count == 0  # every row is an option contract


def test_symbols_and_window_filter(sim_day, tmp_path):
    root, date = sim_day
    day = open_day(root, date)
    sym = sorted(set(day.symbols().values()))[0]
    ts = day.columns("Trade")["ts_recv"]
    start, end = int(ts[len(ts) // 4]), int(ts[3 * len(ts) // 4])
    cols = day.columns("Trade", symbols=[sym], start=start, end=end)
    out = tmp_path / "w.parquet"
    summary = export_day(root, date, "trades", "parquet", out, symbols=[sym], start=start, end=end)
    table = pq.read_table(out)
    assert summary.rows == len(cols["seq"]) > 0
    assert set(table["symbol"].to_pylist()) == {sym}
    assert np.array_equal(table["seq"].to_numpy(), cols["seq"])


def test_cli_errors_are_one_line(sim_day, tmp_path):
    root, date = sim_day
    res = cli_run("export", "--date", date, "--data-dir", root, "--kind", "trades",
                  "--symbols", "NOPE", "-o", tmp_path / "x.parquet")
    assert "NOPE" in assert_one_line_error(res, 2)
    res = cli_run("export", "--date", "1999-01-01", "--data-dir", root, "--kind", "trades",
                  "-o", tmp_path / "x.parquet")
    assert "no data" in assert_one_line_error(res, 2)
    assert not (tmp_path / "x.parquet").exists()


def test_missing_pyarrow_is_a_clear_message(sim_day, tmp_path, monkeypatch):
    root, date = sim_day
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'mia\[export\]'"):
        export_day(root, date, "trades", "parquet", tmp_path / "x.parquet")
    res = cli_run("export", "--date", date, "--data-dir", root, "--kind", "trades",
                  "-o", tmp_path / "x.parquet")
    assert "mia[export]" in assert_one_line_error(res, 1)
    assert not (tmp_path / "x.parquet").exists()


def test_polars_and_duckdb_read_the_parquet(sim_day, tmp_path):
    root, date = sim_day
    out = tmp_path / "t.parquet"
    export_day(root, date, "trades", "parquet", out)
    n = pq.read_metadata(out).num_rows
    try:
        import polars as pl
    except ImportError:
        pl = None
    try:
        import duckdb
    except ImportError:
        duckdb = None
    if pl is None and duckdb is None:
        pytest.skip("neither polars nor duckdb installed")
    if pl is not None:
        df = pl.read_parquet(out)
        assert df.height == n
        assert df.schema["ts_event"] == pl.Datetime("ns", "UTC")
        assert df.schema["symbol"] == pl.String
    if duckdb is not None:
        rows = duckdb.sql(f"select typeof(ts_event), typeof(symbol), count(*) from '{out}' "
                          "group by all").fetchall()
        assert len(rows) == 1 and rows[0][2] == n
        assert rows[0][0] in ("TIMESTAMPTZ_NS", "TIMESTAMP WITH TIME ZONE")  # tz-aware
        assert rows[0][1] == "VARCHAR"


def test_every_event_field_is_exported():
    # every field of each exported event kind has a column (the schema only grows)
    from mia.engine.events import KIND_BY_NAME, TYPE_OF_KIND

    for kind in EVENT_KINDS:
        names = {f.name for f in event_schema(kind)}
        fields = {f.name for f in msgspec.structs.fields(TYPE_OF_KIND[KIND_BY_NAME[EXPORT_KINDS[kind]]])}
        assert fields <= names
