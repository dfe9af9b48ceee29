"""`mia import scid|depth`: exact trades, per-UTC-day segments, idempotence, damage, ids, replay."""

import asyncio
import json
import threading
import time

import msgspec
import numpy as np
import pytest
from click.testing import CliRunner

from mia.cli import cli
from mia.config import Config
from mia.data.sierra import scid as _scid
from mia.data.sierra.common import scdt_to_ns, widen_f32
from mia.data.sierra.config import SierraConfig
from mia.data.sierra.importer import import_files
from mia.data.sierra.simwriter import SimWriter, make_depth, make_trades, write_depth, write_scid
from mia.engine.clock import NS_PER_S, ManualClock, day_bounds, utc_day
from mia.engine.events import BookLevel, Instrument, RecordingStarted, Trade
from mia.engine.log import EventLog
from mia.recorder.live import Recorder

# 2026-11-27 23:00 UTC: an hour before midnight, so a file spans two UTC days
T0 = day_bounds("2026-11-27")[0] + 23 * 3600 * NS_PER_S


def _trades(log, date, stream="import"):
    ids = {}
    out = []
    for _, ev in log.read(date, streams=stream, kinds=[Instrument, Trade]):
        if isinstance(ev, Instrument):
            ids[ev.instrument] = ev.symbol
        else:
            out.append((ids[ev.instrument], ev.ts_event, ev.ts_recv, ev.price, ev.size, ev.side))
    return out


def _expected(recs, symbol):
    side = np.where(recs["ask_volume"] > 0, 1, np.where(recs["bid_volume"] > 0, -1, 0))
    return [(symbol, t, t, p, s, d) for t, p, s, d in zip(
        scdt_to_ns(recs["dt"]).tolist(), widen_f32(recs["close"]).tolist(),
        recs["total_volume"].astype(float).tolist(), side.tolist())]


@pytest.fixture
def es_file(tmp_path):
    recs = make_trades(20_000, T0, seed=1, step_ns=400_000_000)  # ~2.2 h: across midnight
    path = tmp_path / "sierra" / "ESZ6.scid"
    path.parent.mkdir()
    write_scid(path, recs)
    return path, recs


def test_import_gives_exactly_the_files_trades_per_utc_day(tmp_path, es_file):
    # Arrange
    path, recs = es_file
    root = tmp_path / "log"
    # Act: small chunks, so chunk edges are crossed many times
    summary = import_files(root, [path], "scid", chunk_records=3_000)
    # Assert
    log = EventLog(root)
    days = [utc_day(scdt_to_ns(int(recs["dt"][0]))), utc_day(scdt_to_ns(int(recs["dt"][-1])))]
    assert days == ["2026-11-27", "2026-11-28"] and log.dates() == days
    got = _trades(log, days[0]) + _trades(log, days[1])
    assert got == _expected(recs, "ESZ6")  # price, size, side, time to the µs; ts_recv = ts_event
    f = summary.files[0]
    assert (f.records, f.imported, f.already_present, f.damaged) == (20_000, 20_000, 0, 0)
    assert f.days == days and len(f.segments) == 2
    for day in days:  # one import segment per day, closed cleanly, naming its records
        (seg,) = [s for s in log.segments(day) if s.stream == "import"]
        first = next(ev for _, ev in log.read(day, streams="import", kinds=[RecordingStarted]))
        assert first.sources[0].startswith(f"sierra-scid {f.file_id} records=")
        assert log.verify(day).ok


def test_import_twice_adds_nothing_and_a_grown_file_adds_only_the_new_records(tmp_path, es_file):
    path, recs = es_file
    root = tmp_path / "log"
    import_files(root, [path], "scid")
    log = EventLog(root)
    before = {d: [s.path.name for s in log.segments(d)] for d in log.dates()}
    counts = {d: len(_trades(log, d)) for d in log.dates()}
    # Act: the same file again, and a copy of it under another folder
    again = import_files(root, [path], "scid")
    copy = tmp_path / "copy" / "ESZ6.scid"
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    again2 = import_files(root, [copy], "scid")
    # Assert
    for s in (again, again2):
        assert (s.imported, s.already_present, s.events) == (0, 20_000, 0)
    assert {d: [s.path.name for s in log.segments(d)] for d in log.dates()} == before
    assert {d: len(_trades(log, d)) for d in log.dates()} == counts
    # Sierra appended: only the new records come in
    more = make_trades(500, scdt_to_ns(int(recs["dt"][-1])) + NS_PER_S, seed=2)
    write_scid(path, more, append=True)
    grown = import_files(root, [path], "scid")
    assert (grown.imported, grown.already_present) == (500, 20_000)
    all_trades = _trades(log, "2026-11-28") + _trades(log, "2026-11-27")
    assert sorted(all_trades, key=lambda r: r[1]) == _expected(np.concatenate([recs, more]), "ESZ6")


def test_a_damaged_file_reports_the_offset_and_keeps_what_was_good(tmp_path):
    recs = make_trades(1_000, T0 - 3600 * NS_PER_S, seed=3)
    data = bytearray(_scid.encode_header() + _scid.encode_records(recs))
    bad_at = 56 + 400 * 40
    data[bad_at:bad_at + 8 * 40] = b"\xff" * (8 * 40)  # 8 records of garbage
    data += b"\x01\x02\x03"  # and a torn tail
    path = tmp_path / "ESZ6.scid"
    path.write_bytes(bytes(data))
    res = CliRunner().invoke(cli, ["import", "scid", str(path), "--data-dir", str(tmp_path / "log"),
                                   "--json", "-q"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    f = out["files"][0]
    assert (f["records"], f["imported"], f["damaged"]) == (1_000, 992, 8)
    assert f["damage"][0] == {"offset": bad_at, "records": 8, "reason": f["damage"][0]["reason"]}
    assert f["damage"][1]["offset"] == 56 + 1_000 * 40 and "torn tail" in f["damage"][1]["reason"]
    assert f"at byte {bad_at}" in res.stderr
    good = np.concatenate([recs[:400], recs[408:]])
    assert _trades(EventLog(tmp_path / "log"), "2026-11-27") == _expected(good, "ESZ6")


def test_a_foreign_file_is_one_clear_error(tmp_path):
    path = tmp_path / "notes.scid"
    path.write_bytes(b"hello, this is not a Sierra file at all" * 3)
    res = CliRunner().invoke(cli, ["import", "scid", str(path), "--data-dir", str(tmp_path)])
    assert res.exit_code == 1
    assert "notes.scid at byte 0: not a Sierra Chart .scid file" in res.stderr
    assert "Traceback" not in res.output


def test_depth_import_and_ids_that_do_not_collide_with_the_days_live_ids(tmp_path):
    root = tmp_path / "log"
    day_start = day_bounds("2026-11-27")[0]
    # Arrange: a live segment of the day declares NQZ6 as 1 and ESZ6 as 2
    clock = ManualClock(day_start + 3600 * NS_PER_S)
    with EventLog(root).writer("live", clock=clock) as w:
        t = clock.now_ns()
        w.append(Instrument(t, t, 1, "NQZ6", "dtc:x"))
        w.append(Instrument(t, t, 2, "ESZ6", "dtc:x"))
        w.append(Trade(t, t, 1, 21000.0, 1.0, 1))
    drecs = make_depth(3_000, day_start + 7200 * NS_PER_S, seed=4)
    dpath = tmp_path / "MarketDepthData" / "ESZ6.2026-11-27.depth"
    write_depth(dpath, drecs)
    vx = make_trades(100, day_start + 7200 * NS_PER_S, seed=5, tick=0.05, price=18.0)
    write_scid(tmp_path / "VXZ6.scid", vx)
    # Act
    sd = import_files(root, [dpath], "depth")
    sv = import_files(root, [tmp_path / "VXZ6.scid"], "scid")
    # Assert: ESZ6 keeps its id 2, VXZ6 gets a new one (3)
    log = EventLog(root)
    decl = {(ev.symbol, ev.instrument) for _, ev in log.read("2026-11-27", streams="import",
                                                            kinds=[Instrument])}
    assert decl == {("ESZ6", 2), ("VXZ6", 3)}
    vx_inst = next(ev for _, ev in log.read("2026-11-27", streams="import", kinds=[Instrument])
                   if ev.symbol == "VXZ6")
    assert (vx_inst.tick_size, vx_inst.point_value) == (0.05, 1000.0)
    assert [p for *_, p, _s, _d in _trades(log, "2026-11-27")][:3] == \
        widen_f32(vx["close"][:3]).tolist()
    books = [ev for _, ev in log.read("2026-11-27", streams="import", kinds=[BookLevel])]
    assert len(books) == sd.files[0].events == 3_000 and sd.imported == 3_000
    assert [b.ts_event for b in books] == scdt_to_ns(drecs["dt"]).tolist()
    assert sv.imported == 100
    assert import_files(root, [dpath], "depth").imported == 0


def test_from_to_limit_the_days(tmp_path, es_file):
    path, _ = es_file
    s = import_files(tmp_path / "log", [path], "scid", date_from="2026-11-28", date_to="2026-11-28")
    assert EventLog(tmp_path / "log").dates() == ["2026-11-28"]
    assert s.files[0].outside_dates > 0 and s.imported + s.files[0].outside_dates == 20_000


def test_replay_check_of_a_day_with_live_and_imported_data_is_ok(tmp_path):
    """A live recording that follows Sierra's files, then history of the same day imported."""
    sierra = tmp_path / "sierra"
    sierra.mkdir()
    root = tmp_path / "log"
    now = time.time_ns()
    write_scid(sierra / "ESZ6.scid", make_trades(50, now - 60 * NS_PER_S, seed=6))
    writer = SimWriter(sierra, ["ESZ6"], rate=200, flush_s=0.05, depth=True, seed=7)
    stop = threading.Event()
    th = threading.Thread(target=writer.run, args=(30.0,), kwargs={"stop": stop.is_set})
    cfg = Config()
    cfg = msgspec.structs.replace(
        cfg, bus=msgspec.structs.replace(cfg.bus, enabled=False),
        polygon=msgspec.structs.replace(cfg.polygon, enabled=False),
        sierra=[SierraConfig(data_dir=str(sierra), symbols=["ESZ6"], poll_s=0.02)])
    th.start()
    try:
        result = asyncio.run(Recorder(cfg, str(root)).run(1.5))
    finally:
        stop.set()
        th.join()
    date = result.date
    assert result.events > 50
    # history of the same day, from a file of another symbol and an earlier hour
    lo = day_bounds(date)[0]
    hist = tmp_path / "NQZ6.scid"
    write_scid(hist, make_trades(2_000, max(lo, now - 3 * 3600 * NS_PER_S), seed=8,
                                 step_ns=100_000_000))
    s = import_files(root, [hist], "scid", date_from=date, date_to=date)
    assert s.imported > 0
    res = CliRunner().invoke(cli, ["replay", "--data-dir", str(root), "--date", date, "--check",
                                   "--json", "-q"])
    assert res.exit_code == 0, res.output[-800:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["check"] == "ok"
    assert "ESZ6" in json.dumps(out["instruments"]) and "NQZ6" in json.dumps(out["instruments"])
