"""`mia inspect` and `mia verify`: output, exit codes, one clear line for bad input."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import assert_one_line_error, cli_run, write_events

from mia.engine.clock import NS_PER_DAY
from mia.engine.clock import utc_day as day_of
from mia.engine.events import Instrument, Trade
from mia.engine.log import EventLog

DAY0 = 19_676 * NS_PER_DAY
DATE = day_of(DAY0)


def _day(root, n=50):
    events = [Instrument(DAY0, DAY0, 1, "ESZ3", "dtc")]
    events += [Trade(DAY0 + i, DAY0 + i, 1, float(i), 1.0, 1) for i in range(n)]
    return write_events(root, events, frame_max_events=16)


def _run(*args):
    return cli_run(*args)


def test_inspect_json_counts(tmp_path):
    _day(tmp_path)
    result = _run("inspect", "--data-dir", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    (day,) = out["days"]
    (seg,) = day["segments"]
    assert day["date"] == DATE and seg["state"] == "clean" and seg["stream"] == "live"
    assert seg["kinds"] == {"RecordingStarted": 1, "Instrument": 1, "Trade": 50,
                            "RecordingEnded": 1}
    assert seg["instruments"] == {"ESZ3": 51}
    assert seg["events"] == 53 and seg["first_seq"] == 0 and seg["last_seq"] == 52
    assert seg["bytes"] > 0 and seg["compression_ratio"] > 1


def test_inspect_text_names_segments(tmp_path):
    path = _day(tmp_path)
    result = _run("inspect", "--data-dir", str(tmp_path), "--date", DATE)
    assert result.exit_code == 0, result.output
    assert path.name in result.output and "state=clean" in result.output
    assert "Trade 50" in result.output


def test_verify_ok_then_torn_then_repaired(tmp_path):
    path = _day(tmp_path)
    assert _run("verify", "--data-dir", str(tmp_path)).exit_code == 0
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 5)
    damaged = _run("verify", "--data-dir", str(tmp_path), "--json")
    assert damaged.exit_code == 1
    report = json.loads(damaged.output)
    assert report["ok"] is False and report["days"][0]["torn_tails"][0]["path"] == str(path)
    repaired = _run("verify", "--data-dir", str(tmp_path), "--date", DATE, "--repair")
    assert repaired.exit_code == 0, repaired.output
    assert "truncated" in repaired.output
    assert _run("verify", "--data-dir", str(tmp_path)).exit_code == 0
    state = json.loads(_run("inspect", "--data-dir", str(tmp_path), "--json").output)
    assert state["days"][0]["segments"][0]["state"] == "crashed"


def test_verify_repairs_a_torn_tail_of_a_recorded_day(sim_day_copy):
    # Arrange: a copy of the simulators' day, its live segment torn mid-frame
    root, date = sim_day_copy
    (seg,) = Path(root, date).glob("*-live.mseg")
    ok = _run("verify", "--data-dir", root, "--date", date, "--json")
    assert ok.exit_code == 0 and json.loads(ok.stdout)["ok"] is True, ok.output
    whole = [seq for seq, _ in EventLog(root).read(date, streams=["live"])]
    with open(seg, "r+b") as f:
        f.truncate(seg.stat().st_size - 7)
    # Act
    damaged = _run("verify", "--data-dir", root, "--date", date, "--json")
    repaired = _run("verify", "--data-dir", root, "--date", date, "--repair")
    # Assert: reported, truncated to the last whole frame, which is all that is lost
    assert damaged.exit_code == 1
    (torn,) = json.loads(damaged.stdout)["days"][0]["torn_tails"]
    assert torn["path"] == str(seg)
    assert repaired.exit_code == 0 and "truncated" in repaired.output, repaired.output
    assert seg.stat().st_size == torn["offset"]
    assert _run("verify", "--data-dir", root, "--date", date).exit_code == 0
    kept = [seq for seq, _ in EventLog(root).read(date, streams=["live"], strict=True)]
    assert 0 < len(kept) < len(whole) and kept == whole[:len(kept)]


def test_verify_reports_corrupt_frame_with_offset(tmp_path):
    path = _day(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    result = _run("verify", "--data-dir", str(tmp_path), "--repair")
    assert result.exit_code == 1  # a corrupt middle frame cannot be repaired
    assert "bad frame" in result.output and str(path) in result.output


def test_missing_data_dir(tmp_path):
    line = assert_one_line_error(_run("inspect", "--data-dir", str(tmp_path / "nope")), 2)
    assert "does not exist" in line
    assert_one_line_error(_run("verify", "--data-dir", str(tmp_path / "nope")), 2)


def test_bad_date_string(tmp_path):
    _day(tmp_path)
    line = assert_one_line_error(_run("inspect", "--data-dir", str(tmp_path), "--date", "yesterday"), 2)
    assert "yesterday" in line
    assert_one_line_error(_run("verify", "--data-dir", str(tmp_path), "--date", "2023-02-30"), 2)


def test_missing_and_empty_day(tmp_path):
    _day(tmp_path)
    line = assert_one_line_error(_run("inspect", "--data-dir", str(tmp_path), "--date", "2020-01-01"),
                           2)
    assert "2020-01-01" in line
    (tmp_path / "2020-01-02").mkdir()
    assert_one_line_error(_run("verify", "--data-dir", str(tmp_path), "--date", "2020-01-02"), 2)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(_run("inspect", "--data-dir", str(empty)), 2)


def test_not_a_mia_log_and_newer_version(tmp_path):
    path = _day(tmp_path)
    good = path.read_bytes()
    path.write_bytes(b"PK\x03\x04 this is a zip file, not a log")
    line = assert_one_line_error(_run("inspect", "--data-dir", str(tmp_path)), 1)
    assert str(path) in line and "not a mia log" in line
    newer = bytearray(good)
    newer[8] = 7  # format version
    path.write_bytes(bytes(newer))
    line = assert_one_line_error(_run("verify", "--data-dir", str(tmp_path)), 1)
    assert "newer" in line and str(path) in line


def test_commands_have_help():
    for cmd in ("inspect", "verify"):
        result = _run(cmd, "--help")
        assert result.exit_code == 0 and "--date" in result.output
