"""Chains parsed once: the ChainSnapshot of a snapshot's pages is its fresh parse, column by
column and bit for bit (real pages, simulator chains, mangled rows); the simulators' day logs one
after each chain and `replay --check --deep` proves them; its replay never touches the JSON chain
parser yet gives the derived events the pages give; a day recorded before (day-v0) computes from
its pages as it always did; `--deep` names the first difference it meets."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import msgspec
import numpy as np
import pytest
from helpers import cli_run, write_events
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_polygon_chain_columns import (
    ARRAYS,
    SIM_ROWS,
    _mangle,
    assert_identical,
    page_response,
    pages_of,
    reference_chain_columns,
    sim_rows,
)

from mia.data.polygon import models
from mia.data.polygon.models import PolygonDecodeError, chain_columns, chain_snapshot
from mia.engine.columns import (
    CHAIN_SNAPSHOT_COLUMNS,
    ChainSnapshotError,
    ColumnBatch,
    snapshot_chain,
)
from mia.engine.events import (
    K_CHAIN_SNAPSHOT,
    ChainSnapshot,
    EventCodec,
    PolygonResponse,
    RecordingStarted,
)
from mia.engine.log import EventLog
from mia.fold import Fold
from mia.replay import replay_day
from mia.replay.check import check_chain_snapshots, snapshot_difference

DATA = Path(__file__).parent / "data"
DAY_V0 = DATA / "day-v0"
DATE_V0 = "2026-11-28"
CODEC = EventCodec()


def _roundtrip(ev: ChainSnapshot) -> ChainSnapshot:
    """Through the log's codec, as a replay meets it."""
    return CODEC.decode(CODEC.encode(ev))


def assert_snapshot_is_parse(pages: list[PolygonResponse]) -> ChainSnapshot:
    snap = chain_snapshot(pages)
    fresh = chain_columns(pages)
    back = snapshot_chain(_roundtrip(snap))
    assert_identical(back, fresh)
    assert_identical(back, reference_chain_columns(pages))  # the parser's independent reference
    assert struct.pack("<d", back.spot) == struct.pack("<d", fresh.spot)
    assert (snap.ts_event, snap.ts_recv, snap.pages) == (pages[-1].ts_event, pages[-1].ts_recv, len(pages))
    for name in ARRAYS:
        assert getattr(back, name).flags.writeable, name  # the kernels' own specialisation
    return snap


def test_real_spx_pages():
    pages = [page_response((DATA / "polygon" / "spx_page1.json").read_bytes(), 0, False),
             page_response((DATA / "polygon" / "spx_page2.json").read_bytes(), 1, True)]
    snap = assert_snapshot_is_parse(pages)
    assert snap.underlying == "SPX" and snap.snapshot_id == 3 and len(snap.tickers.split(b"\n")) == 5
    assert set(CHAIN_SNAPSHOT_COLUMNS) == set(ARRAYS)


@pytest.mark.parametrize("underlying", ["SPX", "NDX"])
def test_simulator_chains(underlying):
    snap = assert_snapshot_is_parse(pages_of(sim_rows(underlying, 1200), 250))
    assert len(np.frombuffer(snap.strike, "<f8")) > 500


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 59), st.integers(0, 9), st.integers(0, 20)),
                min_size=0, max_size=80), st.integers(1, 30),
       st.lists(st.sampled_from([-0.0, 0.0, 1e-320, -1e308, 5e-324, 123.456]), max_size=4))
def test_mangled_rows(picks, per_page, odd):
    rows = [_mangle(SIM_ROWS[i], how, k) for i, how, k in picks]
    for j, value in enumerate(odd):  # signed zeros and subnormals keep their bits
        if rows:
            rows[j % len(rows)]["implied_volatility"] = value
            rows[j % len(rows)].setdefault("greeks", {})["gamma"] = value
    assert_snapshot_is_parse(pages_of(rows, per_page))


def test_errors_and_bad_columns():
    with pytest.raises(PolygonDecodeError):
        chain_snapshot([page_response(b"{not json", 0, True)])
    with pytest.raises(PolygonDecodeError):
        chain_snapshot([])
    snap = chain_snapshot(pages_of(sim_rows("SPX", 40), 10))
    with pytest.raises(ChainSnapshotError, match="column iv"):
        snapshot_chain(msgspec.structs.replace(snap, iv=snap.iv[:-8]))
    with pytest.raises(ChainSnapshotError, match="tickers"):
        snapshot_chain(msgspec.structs.replace(snap, tickers=snap.tickers + b"\nO:X"))


def test_difference_names_snapshot_column_and_row():
    snap = chain_snapshot(pages_of(sim_rows("SPX", 40), 10))
    assert snapshot_difference(snap, _roundtrip(snap)) is None
    iv = np.frombuffer(snap.iv, "<f8").copy()
    iv[7] = np.nextafter(iv[7], 1.0)  # one ulp
    msg = snapshot_difference(msgspec.structs.replace(snap, iv=iv.tobytes()), snap)
    ticker = snap.tickers.split(b"\n")[7].decode()
    assert msg is not None and "SPX snapshot 3" in msg and "column iv row 7" in msg and ticker in msg
    nan = np.frombuffer(snap.gamma, "<f8").copy()
    nan[:] = math.nan
    both = msgspec.structs.replace(snap, gamma=nan.tobytes())
    assert snapshot_difference(both, _roundtrip(both)) is None  # NaN equals NaN
    zero = np.zeros(len(nan))
    assert "column delta row 0" in snapshot_difference(
        msgspec.structs.replace(snap, delta=(-zero).tobytes()),
        msgspec.structs.replace(snap, delta=zero.tobytes()))  # -0.0 is not 0.0
    assert "spot" in snapshot_difference(msgspec.structs.replace(snap, spot=snap.spot + 1), snap)


# --- the simulators' day ---------------------------------------------------------------------


def _kinds(root, date):
    rows = [ev for _, ev in EventLog(root).read(date, streams=["live"])]
    finals = [ev for ev in rows if isinstance(ev, PolygonResponse) and ev.final
              and ev.path != models.INDICES_PATH]
    snaps = [ev for ev in rows if isinstance(ev, ChainSnapshot)]
    started = [ev for ev in rows if isinstance(ev, RecordingStarted)]
    return rows, finals, snaps, started


def test_sim_day_logs_a_snapshot_after_each_chain(sim_day):
    rows, finals, snaps, started = _kinds(sim_day.root, sim_day.date)
    assert started and all(ev.chain_snapshots for ev in started)
    assert len(snaps) == len(finals) >= 2
    for snap in snaps:  # right after its final page: same time, the next row
        i = next(i for i, ev in enumerate(rows) if ev is snap)
        page = rows[i - 1]
        assert isinstance(page, PolygonResponse) and page.final
        assert (page.underlying, page.snapshot_id, page.ts_recv) == (snap.underlying, snap.snapshot_id,
                                                                     snap.ts_recv)
    res = cli_run("replay", "--check", "--deep", "-q", "--data-dir", sim_day.root, "--date", sim_day.date)
    assert res.exit_code == 0, res.output[-2000:]
    assert f"check --deep: ok ({len(snaps)} chain snapshots equal to their pages)" in res.stderr


def _no_json_parsing(monkeypatch):
    """Every way the chain parser reads JSON raises."""
    def boom(*a, **k):
        raise AssertionError("the JSON chain parser was called")

    class Decoder:
        decode = staticmethod(boom)

    monkeypatch.setattr(models, "_lean_decoder", Decoder())
    monkeypatch.setattr(models, "_page_decoder", Decoder())
    monkeypatch.setattr("mia.fold.chain_columns", boom)


def test_sim_day_replays_without_parsing_json(sim_day, monkeypatch):
    before = replay_day(sim_day.root, sim_day.date)
    _no_json_parsing(monkeypatch)
    after = replay_day(sim_day.root, sim_day.date)
    assert after.gamma and msgspec.json.encode(after.json()) == msgspec.json.encode(before.json())


def test_day_v0_still_computes_from_its_pages(monkeypatch):
    cfg = str(DAY_V0 / "mia.toml")
    res = cli_run("replay", "--check", "--deep", "-q", "--data-dir", str(DAY_V0), "--date", DATE_V0,
                  "--config", cfg)
    assert res.exit_code == 0, res.output[-2000:]
    assert "check --deep: ok (0 chain snapshots equal to their pages; 3 recorded as pages only)" in res.stderr
    _no_json_parsing(monkeypatch)  # the control: this day has nothing but its pages
    with pytest.raises(AssertionError, match="JSON chain parser"):
        replay_day(str(DAY_V0), DATE_V0)


def _derived(root, date, *, pages: bool) -> list[bytes]:
    """The fold's derived events over the live stream; `pages`: as a recording that logged no
    ChainSnapshots (those rows dropped, RecordingStarted.chain_snapshots cleared)."""
    fold = Fold()
    out = []
    for batch in fold.day_batches(EventLog(root), date):
        if pages:
            batch = batch.take(batch.kind != K_CHAIN_SNAPSHOT)
            batch.objects[:] = [msgspec.structs.replace(ev, chain_snapshots=False)
                                if isinstance(ev, RecordingStarted) else ev for ev in batch.objects]
        out.extend(CODEC.encode(ev) for ev in fold.on_batch(batch))
    return out


def test_snapshots_give_what_the_pages_give(sim_day):
    """Bit for bit, the derived events of the ChainSnapshot rows are those of the raw pages."""
    from_snapshots = _derived(sim_day.root, sim_day.date, pages=False)
    assert from_snapshots == _derived(sim_day.root, sim_day.date, pages=True)
    assert any(CODEC.decode(b).__class__.__name__ == "GammaLevels" for b in from_snapshots)


def test_deep_check_fails_on_a_changed_or_missing_snapshot(sim_day_copy, tmp_path):
    """A live segment whose ChainSnapshot was altered, or dropped, fails `--deep` naming it."""
    rows, finals, snaps, _ = _kinds(sim_day_copy.root, sim_day_copy.date)
    keep = [ev for ev in rows if not isinstance(ev, RecordingStarted) and type(ev).__name__ != "RecordingEnded"]
    bad = snaps[1]
    iv = np.frombuffer(bad.iv, "<f8").copy()
    row = int(np.flatnonzero(np.isfinite(iv))[0])
    iv[row] += 0.01
    changed = [msgspec.structs.replace(ev, iv=iv.tobytes()) if ev is bad else ev for ev in keep]
    for name, events, expect in (
            ("changed", changed, f"{bad.underlying} snapshot {bad.snapshot_id} at ts_recv {bad.ts_recv}: "
                                 f"column iv row {row}"),
            ("missing", [ev for ev in keep if ev is not bad], "readable pages, but no ChainSnapshot")):
        root = tmp_path / name
        write_events(root, events, chain_snapshots=True)
        date = EventLog(root).dates()[0]
        got = check_chain_snapshots(EventLog(root), date)
        assert got.check == "mismatch" and expect in got.mismatch, got


def test_deep_goes_with_check(sim_day):
    res = cli_run("replay", "--deep", "--data-dir", sim_day.root, "--date", sim_day.date)
    assert res.exit_code == 2 and "--deep goes with --check" in res.output


def test_snapshot_batch_row_is_an_object():
    snap = chain_snapshot(pages_of(sim_rows("NDX", 30), 10))
    b = ColumnBatch.from_events([snap], [0])
    assert int(b.kind[0]) == K_CHAIN_SNAPSHOT and b.events_at(0) is snap



def test_the_poller_logs_a_snapshot_right_after_each_readable_final_page():
    import asyncio

    from test_polygon_poller import Rig

    async def scenario():
        rig = Rig()
        try:
            assert await rig.poller.poll_once("SPX")
            rig.sim.faults.malformed_count = 1
            assert not await rig.poller.poll_once("NDX")  # unreadable: no ChainSnapshot
            rig.poller.chain_snapshots = False
            assert await rig.poller.poll_once("SPX")  # a poller told not to log them
            return rig.events
        finally:
            await rig.close()

    events = asyncio.run(scenario())
    snaps = [i for i, ev in enumerate(events) if isinstance(ev, ChainSnapshot)]
    assert len(snaps) == 1
    i = snaps[0]
    pages = [ev for ev in events[:i] if isinstance(ev, PolygonResponse) and ev.snapshot_id == events[i].snapshot_id]
    assert events[i - 1] is pages[-1] and pages[-1].final
    assert CODEC.encode(events[i]) == CODEC.encode(chain_snapshot(pages))
