"""mia levels: the Sierra Chart levels file of any moment of a recorded day."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import assert_one_line_error, cli_run, recorded_gamma

from mia.analytics.levels import build_levels, format_levels_file, parse_levels_file
from mia.engine.events import GammaLevels, TermStructure
from mia.engine.log import EventLog
from mia.replay import replay_day
from mia.replay.outputs import levels_at


def _run(*args):
    return cli_run("levels", *args)


def test_stdout_is_the_levels_file_of_the_recorded_day(sim_day):
    # Arrange: the file built independently from what was recorded live and `mia replay`'s summary
    root, date = sim_day
    gamma = recorded_gamma(root, date)
    flows = replay_day(root, date).instruments
    terms = [t for _, t in EventLog(root).read(date, kinds=[TermStructure], streams=["derived"])]
    assert gamma and flows and terms
    expected = format_levels_file(build_levels(gamma, flows, date=date, term=terms[-1]))
    # Act
    res = _run("--date", date, "--data-dir", root)
    # Assert
    assert res.exit_code == 0, res.output
    assert res.stdout_bytes == expected.encode()  # CRLF kept (CliRunner.stdout folds it)
    labels = [lv.label for lv in parse_levels_file(res.stdout)]
    assert any("Zero Gamma" in lb for lb in labels) and any("POC" in lb for lb in labels)
    assert any(lb.startswith("VIX") for lb in labels)


def test_at_a_moment_uses_the_levels_known_then(sim_day):
    root, date = sim_day
    history = [g for _, g in EventLog(root).read(date, kinds=[GammaLevels], streams=["derived"])]
    cut = history[-1].ts_recv
    got = levels_at(root, date, cut)
    gamma_then = recorded_gamma(root, date, before=cut)
    gamma_now = recorded_gamma(root, date)
    gamma_lines = [lv for lv in got if lv.source.startswith("gamma:")]
    assert gamma_lines and gamma_lines == [lv for lv in build_levels(gamma_then, None, date=date)]
    assert gamma_then != gamma_now  # the moment matters


def test_at_before_the_recording_has_only_the_header(sim_day):
    root, date = sim_day
    res = _run("--date", date, "--data-dir", root, "--at", "00:00")
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == ["Date, Label, Color, Width, Value, Value2"]


def test_output_file_and_json_agree(sim_day, tmp_path):
    root, date = sim_day
    out = tmp_path / "mia-levels.txt"
    res = _run("--date", date, "--data-dir", root, "-o", str(out))
    assert res.exit_code == 0, res.output
    assert res.stdout == ""
    file_levels = parse_levels_file(out.read_text())
    res = _run("--date", date, "--data-dir", root, "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["levels"]
    assert rows and [(r["label"], r["value"], r["date"]) for r in rows] == \
        [(lv.label, lv.value, lv.date) for lv in file_levels]
    assert out.read_bytes().startswith(b"Date, Label, Color, Width, Value, Value2\r\n")
    assert [p.name for p in tmp_path.iterdir()] == ["mia-levels.txt"]  # no temporary left behind


@pytest.mark.parametrize("args, needle", [
    (["--at", "25:99"], "bad time"),
    (["--date", "2026-13-40"], "bad date"),
    (["--date", "1999-01-01"], "no data"),
])
def test_usage_errors_are_one_line_exit_2(sim_day, args, needle):
    root, date = sim_day
    base = ["--date", date, "--data-dir", root]
    if "--date" in args:
        base = ["--data-dir", root]
    res = _run(*base, *args)
    assert needle in assert_one_line_error(res, 2)
    assert res.stdout == ""


def _stderr_on_a_terminal(args: list[str]) -> tuple[int, str, str]:
    """Run `mia ...` with stderr on a pseudo-terminal; (exit code, stdout, what the terminal got)."""
    import os
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "mia.cli", *args], stdout=subprocess.PIPE,
                                stderr=slave, stdin=subprocess.DEVNULL)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        out, _ = proc.communicate(timeout=120)
        return proc.returncode, out.decode(), b"".join(chunks).decode(errors="replace")
    finally:
        os.close(master)


def test_progress_bar_only_on_a_terminal_and_not_with_quiet(sim_day):
    root, date = sim_day
    code, out, term = _stderr_on_a_terminal(["levels", "--date", date, "--data-dir", root])
    assert code == 0 and out.startswith("Date, Label"), (code, term[-2000:])
    assert f"replay {date}" in term and "%" in term
    code, out, term = _stderr_on_a_terminal(["levels", "--date", date, "--data-dir", root, "-q"])
    assert code == 0 and out.startswith("Date, Label"), (code, term[-2000:])
    assert term.strip() == ""
