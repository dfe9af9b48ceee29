"""A day recorded by mia before the one-fold change (commit 166069d: `mia record --sim` with the
mia.toml beside it) still replays with `--check` ok, and its summary, levels, report values and
health are the ones that version printed (tests/data/day-v0/out-*.{json,txt}).

The log is the truth and it is forever: what changes in the code must not change what an old
day means.
"""

import json
import math
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from mia.cli import cli

DATA = Path(__file__).resolve().parent / "data" / "day-v0"
DATE = "2026-11-28"


@pytest.fixture(scope="module")
def day(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("day-v0")
    shutil.copytree(DATA / DATE, root / DATE)
    return root


def _run(*args: str) -> str:
    res = CliRunner().invoke(cli, list(args))
    assert res.exit_code == 0, res.output[-2000:]
    return res.stdout


def _same(old, new, where="$") -> None:
    """Equal values, NaN equal to NaN and to null (the old version printed bare NaN in places);
    keys the new version adds are allowed, none may go missing."""
    if isinstance(old, dict):
        assert isinstance(new, dict), where
        missing = set(old) - set(new)
        assert not missing, f"{where}: missing {missing}"
        for k in old:
            _same(old[k], new[k], f"{where}.{k}")
    elif isinstance(old, list):
        assert isinstance(new, list) and len(old) == len(new), where
        for i, (a, b) in enumerate(zip(old, new)):
            _same(a, b, f"{where}[{i}]")
    elif old is None or (isinstance(old, float) and math.isnan(old)):
        assert new is None or (isinstance(new, float) and math.isnan(new)), (where, new)
    else:
        assert old == new, (where, old, new)


def _old(name: str):
    return json.loads((DATA / name).read_text().strip().splitlines()[-1])


def test_old_day_replays_with_check_ok_and_the_same_summary(day):
    out = json.loads(_run("replay", "--data-dir", str(day), "--date", DATE, "--check", "--json",
                          "-q", "--config", str(DATA / "mia.toml")).strip().splitlines()[-1])
    assert out["check"] == "ok"
    old = _old("out-replay.json")
    _same(old["instruments"], out["instruments"])
    _same(old["gamma"], out["gamma"])
    assert out["events"] == old["events"]


def test_old_day_levels_are_unchanged(day):
    text = _run("levels", "--data-dir", str(day), "--date", DATE, "-q",
                "--config", str(DATA / "mia.toml"))
    assert text == (DATA / "out-levels.txt").read_text()
    new = json.loads(_run("levels", "--data-dir", str(day), "--date", DATE, "--json", "-q",
                          "--config", str(DATA / "mia.toml")))
    _same(_old("out-levels.json"), new)


def test_old_day_report_values_are_unchanged(day, tmp_path):
    pytest.importorskip("matplotlib")
    new = json.loads(_run("report", "--data-dir", str(day), "--date", DATE, "--json", "-q",
                          "--config", str(DATA / "mia.toml"), "-o", str(tmp_path / "r.html")))
    _same(_old("out-report.json")["figures"], new["figures"])


def test_old_day_health_is_unchanged(day):
    res = CliRunner().invoke(cli, ["health", "--data-dir", str(day), "--date", DATE, "--json",
                                   "--config", str(DATA / "mia.toml")])
    assert res.exit_code in (0, 1), res.output[-2000:]  # 1: quality below its threshold
    _same(_old("out-health.json"), json.loads(res.stdout.strip().splitlines()[-1]))
