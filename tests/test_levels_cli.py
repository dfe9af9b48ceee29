"""mia levels: the Sierra Chart levels file of any moment of a recorded day."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from mia.analytics.levels import build_levels, format_levels_file, parse_levels_file
from mia.cli import cli
from mia.engine.events import GammaLevels
from mia.engine.log import EventLog
from mia.replay import replay_day
from mia.replay.outputs import levels_at


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    root = tmp_path_factory.mktemp("levels-day")
    subprocess.run([sys.executable, "-m", "mia.cli", "record", "--sim", "--duration", "6s", "--no-publish",
                    "--data-dir", str(root), "-q"], check=True, timeout=120, capture_output=True)
    return str(root), EventLog(root).dates()[-1]


def _recorded_gamma(root, date, before: int | None = None) -> dict[str, GammaLevels]:
    out = {}
    for _, g in EventLog(root).read(date, kinds=[GammaLevels], streams=["derived"]):
        if before is None or g.ts_recv < before:
            out[g.underlying] = g
    return out


def _run(*args):
    return CliRunner().invoke(cli, ["levels", *args])


def test_stdout_is_the_levels_file_of_the_recorded_day(recorded):
    # Arrange: the file built independently from what was recorded live and `mia replay`'s summary
    root, date = recorded
    gamma = _recorded_gamma(root, date)
    flows = replay_day(root, date).instruments
    expected = format_levels_file(build_levels(gamma, flows, date=date))
    # Act
    res = _run("--date", date, "--data-dir", root)
    # Assert
    assert res.exit_code == 0, res.output
    assert res.stdout_bytes == expected.encode()  # CRLF kept (CliRunner.stdout folds it)
    labels = [lv.label for lv in parse_levels_file(res.stdout)]
    assert any("Zero Gamma" in lb for lb in labels) and any("POC" in lb for lb in labels)


def test_at_a_moment_uses_the_levels_known_then(recorded):
    root, date = recorded
    history = [g for _, g in EventLog(root).read(date, kinds=[GammaLevels], streams=["derived"])]
    cut = history[-1].ts_recv
    got = levels_at(root, date, cut)
    gamma_then = _recorded_gamma(root, date, before=cut)
    gamma_now = _recorded_gamma(root, date)
    gamma_lines = [lv for lv in got if lv.source.startswith("gamma:")]
    assert gamma_lines == [lv for lv in build_levels(gamma_then, None, date=date)]
    assert gamma_then != gamma_now  # the moment matters


def test_at_before_the_recording_has_only_the_header(recorded):
    root, date = recorded
    res = _run("--date", date, "--data-dir", root, "--at", "00:00")
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == ["Date, Label, Color, Width, Value, Value2"]


def test_output_file_and_json_agree(recorded, tmp_path):
    root, date = recorded
    out = tmp_path / "mia-levels.txt"
    res = _run("--date", date, "--data-dir", root, "-o", str(out))
    assert res.exit_code == 0, res.output
    assert res.stdout == ""
    file_levels = parse_levels_file(out.read_text())
    res = _run("--date", date, "--data-dir", root, "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["levels"]
    assert [(r["label"], r["value"], r["date"]) for r in rows] == \
        [(lv.label, lv.value, lv.date) for lv in file_levels]
    assert out.read_bytes().startswith(b"Date, Label, Color, Width, Value, Value2\r\n")
    assert [p.name for p in tmp_path.iterdir()] == ["mia-levels.txt"]  # no temporary left behind


@pytest.mark.parametrize("args, needle", [
    (["--at", "25:99"], "bad time"),
    (["--date", "2026-13-40"], "bad date"),
    (["--date", "1999-01-01"], "no data"),
])
def test_usage_errors_are_one_line_exit_2(recorded, args, needle):
    root, date = recorded
    base = ["--date", date, "--data-dir", root]
    if "--date" in args:
        base = ["--data-dir", root]
    res = _run(*base, *args)
    assert res.exit_code == 2, res.output
    assert needle in res.stderr and res.stderr.count("\n") == 1


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


def test_progress_bar_only_on_a_terminal_and_not_with_quiet(recorded):
    root, date = recorded
    code, out, term = _stderr_on_a_terminal(["levels", "--date", date, "--data-dir", root])
    assert code == 0 and out.startswith("Date, Label")
    assert f"replay {date}" in term and "%" in term
    code, out, term = _stderr_on_a_terminal(["levels", "--date", date, "--data-dir", root, "-q"])
    assert code == 0 and out.startswith("Date, Label")
    assert term.strip() == ""
