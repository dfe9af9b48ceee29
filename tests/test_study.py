"""`mia study` and `open_range`: many generated days through the standard fold on Dask.

The days are written with the log writer (ES-like market events and an SPX chain from the
Polygon simulator every 20 s of event time). One LocalCluster (2 worker processes) is shared by
the module; `--workers 1` and `--workers 2` start their own, as a user's `mia study` does."""

from __future__ import annotations

import datetime as dt
import math
import shutil
import sys

import pytest
from helpers import assert_one_line_error, cli_run, last_json_line

pytest.importorskip("distributed")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from mia.engine.errors import NoDataError, UsageError  # noqa: E402
from mia.engine.log import EventLog  # noqa: E402
from mia.replay import open_range, replay_day  # noqa: E402
from mia.replay.study import (  # noqa: E402
    GAMMA_FIELDS,
    INSTRUMENT_FIELDS,
    StudyError,
    default_cache_dir,
    local_cluster,
    map_days,
    study_table,
)

N_PER_DAY = 20_000  # ~46 s of event time: a bar or two, three chain snapshots


@pytest.fixture(scope="module")
def days(tmp_path_factory):
    """Three generated days (2026-11-02..04) and an empty folder day after them."""
    from mia.bench.bench_study import chain_pages, write_days

    root = tmp_path_factory.mktemp("study") / "data"
    pages = chain_pages(expiry_days=2, strike_window=0.02)
    dates = write_days(root, 3, N_PER_DAY, pages, chain_every_s=20.0)
    (root / "2026-11-05").mkdir()  # a folder without segments: not a day with data
    return str(root), dates


@pytest.fixture(scope="module")
def scheduler():
    """A LocalCluster started by the test (2 processes), for --scheduler."""
    cluster = local_cluster(2)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def serial_summary(days):
    root, dates = days
    return {d: replay_day(root, d) for d in dates}


def _study(root, dates, tmp_path, name, *extra):
    out = tmp_path / f"{name}.parquet"
    res = cli_run("study", "--from-date", dates[0], "--to-date", dates[-1], "-o", out,
                  "--data-dir", root, "--json", *extra)
    return res, out


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


def _tables_equal(a, b) -> bool:
    """Same schema and values (NaN equal to NaN, which Table.equals does not grant)."""
    if a.schema != b.schema or a.num_rows != b.num_rows:
        return False
    return all(all(_same(x, y) for x, y in zip(ra.values(), rb.values()))
               for ra, rb in zip(a.to_pylist(), b.to_pylist()))


def test_summary_is_the_same_on_1_and_2_workers_and_a_cluster_and_equals_replay_day(
        days, scheduler, serial_summary, tmp_path):
    root, dates = days
    tables = {}
    for name, extra in [("w1", ("--workers", "1")), ("w2", ("--workers", "2")),
                        ("sched", ("--scheduler", scheduler)), ("serial", ("--workers", "0"))]:
        res, out = _study(root, dates, tmp_path, name, *extra)
        assert res.exit_code == 0, (name, res.output)
        summary = last_json_line(res.stdout)
        assert summary["days"] == dates and summary["failed"] == [], summary
        tables[name] = pq.read_table(out)
    assert last_json_line(_study(root, dates, tmp_path, "again", "--workers", "0")[0].stdout)[
        "workers"] == 0
    for name in ("w2", "sched", "serial"):
        assert _tables_equal(tables[name], tables["w1"]), name
    table = tables["w1"]
    assert table.schema.field("date").type == pa.date32()
    assert table.schema.field("ts").type == pa.timestamp("ns", tz="UTC")

    # Assert: the rows are replay_day's figures, day by day, instruments then underlyings
    rows = table.to_pylist()
    expected = []
    for d in dates:
        r = serial_summary[d]
        for sym in sorted(r.instruments):
            expected.append((d, "instrument", sym,
                             [getattr(r.instruments[sym], f) for f in INSTRUMENT_FIELDS]))
        for u in sorted(r.gamma):
            g = r.gamma[u]
            expected.append((d, "gamma", u, [getattr(g, f) for f in GAMMA_FIELDS]))
    assert len(rows) == len(expected)
    assert {e[1] for e in expected} == {"instrument", "gamma"}  # the days hold gamma levels
    for row, (d, kind, sym, values) in zip(rows, expected):
        assert (row["date"].isoformat(), row["row_type"], row["symbol"]) == (d, kind, sym)
        fields = INSTRUMENT_FIELDS if kind == "instrument" else GAMMA_FIELDS
        got = [row[f] for f in fields]
        if kind == "gamma":
            got[0] = int(pa.scalar(row["ts"], pa.timestamp("ns", tz="UTC")).cast(pa.int64()).as_py())
        assert all(_same(a, b) for a, b in zip(got, values)), (d, sym, got, values)
        other = GAMMA_FIELDS if kind == "instrument" else INSTRUMENT_FIELDS
        assert all(row[f] is None for f in other)


def test_bars_and_levels_on_a_cluster_equal_a_serial_fold(days, scheduler):
    root, dates = days
    for kind, cls in (("bars", "OrderflowBar"), ("levels", "GammaLevels")):
        on_cluster, failures, outcome = study_table(root, dates[0], dates[-1], kind,
                                                    scheduler=scheduler)
        serial, _, _ = study_table(root, dates[0], dates[-1], kind, workers=0)
        assert failures == [] and outcome.workers == 2
        assert _tables_equal(on_cluster, serial), kind
        assert on_cluster.num_rows >= len(dates)
        assert on_cluster.column_names[0] == "date"
        assert on_cluster.schema.field("ts_recv").type == pa.timestamp("ns", tz="UTC")
        # sorted by date; within a day, the fold's order (ts_recv)
        got = on_cluster.select(["date", "ts_recv"]).to_pylist()
        assert got == sorted(got, key=lambda r: (r["date"], r["ts_recv"]))
        assert {r["date"].isoformat() for r in got} == set(dates)
    bars = study_table(root, dates[0], dates[-1], "bars", workers=0)[0]
    assert set(bars.column("symbol").to_pylist()) == {"ESZ6"}


def test_a_corrupt_day_is_reported_and_the_others_finish(days, scheduler, tmp_path):
    root, dates = days
    copy = tmp_path / "data"
    shutil.copytree(root, copy)
    seg = EventLog(copy).segments(dates[1])[0].path
    size = seg.stat().st_size
    with open(seg, "r+b") as f:  # flip 16 bytes in the middle: a frame fails its CRC
        f.seek(size // 2)
        b = f.read(16)
        f.seek(size // 2)
        f.write(bytes(x ^ 0xFF for x in b))
    assert EventLog(copy).verify(dates[1]).bad_frames

    res, out = _study(str(copy), dates, tmp_path, "corrupt", "--scheduler", scheduler)

    assert res.exit_code == 1, res.output
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("mia: error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"mia: error: {dates[1]}: LogCorruptError"), \
        res.stderr
    assert "Traceback" not in res.output
    summary = last_json_line(res.stdout)
    assert summary["days"] == [dates[0], dates[2]]
    assert summary["failed"] == [{"date": dates[1], "error": errors[0].split(": ", 3)[3]}]
    got = {d.isoformat() for d in pq.read_table(out).column("date").to_pylist()}
    assert got == {dates[0], dates[2]}


def test_the_config_reaches_the_workers(days, scheduler, tmp_path):
    root, dates = days
    cfg = tmp_path / "mia.toml"
    cfg.write_text("[orderflow]\nbar_interval_s = 5.0\n")
    res, out = _study(root, dates, tmp_path, "cfg", "--kind", "bars", "--scheduler", scheduler,
                      "--config", cfg)
    assert res.exit_code == 0, res.output
    bars = pq.read_table(out)
    assert set(bars.column("interval_ns").to_pylist()) == {5 * 10**9}
    default = study_table(root, dates[0], dates[-1], "bars", workers=0)[0]
    assert bars.num_rows > default.num_rows


def test_without_dask_study_says_how_to_install_it(days, tmp_path, monkeypatch):
    root, dates = days
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    res, out = _study(root, dates, tmp_path, "nodask", "--workers", "2")
    line = assert_one_line_error(res, 2)
    assert "pip install 'mia[study]'" in line
    assert not out.exists()
    res, out = _study(root, dates, tmp_path, "serial", "--workers", "0")
    assert res.exit_code == 0 and out.exists()


def test_usage_errors(days, tmp_path):
    root, dates = days
    res, _ = _study(root, ["2025-01-01", "2025-01-31"], tmp_path, "none", "--workers", "0")
    assert "no data from 2025-01-01 to 2025-01-31" in assert_one_line_error(res, 2)
    res, _ = _study(root, [dates[1], dates[0]], tmp_path, "rev", "--workers", "0")
    assert_one_line_error(res, 2)
    res, _ = _study(root, dates, tmp_path, "both", "--workers", "2", "--scheduler",
                    "tcp://127.0.0.1:1")
    assert_one_line_error(res, 2)


# --- open_range: the Python API ------------------------------------------------------------------


def test_open_range_days_are_inclusive_and_only_days_with_data(days):
    root, dates = days
    rng = open_range(root, "2026-11-01", "2026-11-05")
    assert rng.dates == dates and len(rng) == 3
    assert [d.date for d in rng] == dates
    assert open_range(root, dates[1], dates[1]).dates == [dates[1]]
    with pytest.raises(NoDataError, match="no data from 2026-11-05 to 2026-11-09"):
        open_range(root, "2026-11-05", "2026-11-09")
    with pytest.raises(UsageError):
        open_range(root, dates[2], dates[0])


def test_open_range_to_pandas_has_a_date_column(days):
    root, dates = days
    rng = open_range(root, dates[0], dates[-1])
    df = rng.to_pandas("Trade")
    assert df.columns[0] == "date" and "ts_event" in df.columns
    per_day = df.groupby("date").size()
    assert [d.isoformat() for d in per_day.index] == dates
    for d in dates:
        assert per_day[dt.date.fromisoformat(d)] == len(
            rng.day(d).columns("Trade")["price"])
    assert set(df["symbol"]) == {"ESZ6"}


def _trade_count(day):
    return len(day.columns("Trade")["price"])


def _fail_on_second(day):
    if day.date.endswith("03"):
        raise ValueError("no good\nat all")
    return day.date


def test_open_range_study_serial_and_on_a_cluster(days, scheduler):
    root, dates = days
    rng = open_range(root, dates[0], dates[-1])
    seen = []
    serial = rng.study(_trade_count, workers=0, progress=lambda done, total: seen.append(
        (done, total)))
    assert list(serial) == dates and all(v > 0 for v in serial.values())
    assert seen == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert rng.study(_trade_count, scheduler=scheduler) == serial
    assert rng.study(lambda day: day.date, scheduler=scheduler) == {d: d for d in dates}

    with pytest.raises(StudyError) as err:
        rng.study(_fail_on_second, scheduler=scheduler)
    outcome = err.value.outcome
    assert outcome.results == {dates[0]: dates[0], dates[2]: dates[2]}
    assert [(f.date, f.error) for f in outcome.failures] == [
        (dates[1], "ValueError: no good at all")]


def _numba_cache_dir_of_worker(day):
    import os

    import numba

    return os.environ.get("NUMBA_CACHE_DIR"), numba.config.CACHE_DIR


def test_workers_of_an_existing_cluster_share_the_numba_cache_dir(days, tmp_path):
    """A cluster started without NUMBA_CACHE_DIR: the study gives its workers the directory
    before they import mia (whose kernels find their cache when defined)."""
    import logging

    from distributed import LocalCluster

    root, dates = days
    cache = default_cache_dir()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1", silence_logs=logging.ERROR,
                      scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                      env={"NUMBA_CACHE_DIR": ""}) as cluster:
        got = map_days(_numba_cache_dir_of_worker, root, dates[:1],
                       scheduler=cluster.scheduler_address, numba_cache_dir=cache)
    assert got.failures == []
    assert got.results[dates[0]] == (cache, cache)


def test_map_days_rejects_workers_and_scheduler_together(days):
    root, dates = days
    with pytest.raises(UsageError):
        map_days(_trade_count, root, dates, workers=2, scheduler="tcp://127.0.0.1:1")
