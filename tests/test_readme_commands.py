"""The README's command-line examples run: every `mia ...` line of its fenced blocks, against a
day recorded from the simulators (date and --data-dir substituted, outputs into tmp_path).

Not run, each with its reason: synopsis lines (they show [options] and alternatives), commands
that need a real Sierra Chart or Polygon, and commands that run until stopped."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from helpers import cli_run, last_json_line

from mia.cli import cli

README = Path(__file__).resolve().parent.parent / "README.md"
README_DATE = "2026-11-20"


def readme_commands() -> list[str]:
    """Each `mia ` line of a fenced block, continuation lines joined."""
    out, in_block = [], False
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            in_block = not in_block
            continue
        if not in_block:
            continue
        if line.startswith("mia "):
            out.append(line.split("#", 1)[0].strip())
        elif out and line.startswith(" ") and line.strip().startswith(("[", "-")) and in_block:
            out[-1] += " " + line.strip()
    return out


def skip_reason(cmd: str) -> str | None:
    words = shlex.split(cmd)
    if any(ch in cmd for ch in "[|") or "YYYY" in cmd or "..." in cmd:
        return "synopsis"
    name = words[1]
    if name == "record" and "--sim" not in words:
        return "needs a real Sierra Chart and Polygon"
    if name in ("sim", "tail") and "--duration" not in words and "--timeout" not in words:
        return "runs until stopped"
    if name == "demo":
        return "records 20 s from the simulators (make demo runs it)"
    return None


def test_readme_has_runnable_examples_of_each_research_command():
    runnable = [c for c in readme_commands() if skip_reason(c) is None]
    names = {shlex.split(c)[1] for c in runnable}
    assert {"inspect", "replay", "levels", "export", "report"} <= names, runnable
    assert all(skip_reason(c) for c in readme_commands() if shlex.split(c)[1] in ("sim", "tail", "demo"))


def localize(cmd: str, root: str, date: str, out_dir: Path) -> list[str]:
    words = shlex.split(cmd.replace(README_DATE, date))[1:]
    for i, w in enumerate(words):
        if words[i - 1] in ("-o", "--output") and i > 0:
            words[i] = str(out_dir / Path(w).name)
    return [*words, "--data-dir", root]


@pytest.mark.parametrize("cmd", [c for c in readme_commands() if skip_reason(c) is None])
def test_readme_command_runs(sim_day, tmp_path, cmd):
    root, date = sim_day
    args = localize(cmd, root, date, tmp_path)
    res = cli_run(*args, catch_exceptions=False)
    assert res.exit_code == 0, f"{cmd!r} -> exit {res.exit_code}: {res.stdout[-500:]} {res.stderr[-500:]}"
    if "--json" in args:
        out = last_json_line(res.stdout)
        if args[0] == "replay":
            assert out["date"] == date and out["check"] is None
    if "-o" in args:
        target = Path(args[args.index("-o") + 1])
        assert target.exists() and target.stat().st_size > 0
    if "--check" in args:
        assert "check: ok" in res.stderr
    assert res.stdout.strip() or re.search(r"\S", res.stderr)


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_has_help_with_an_example(name):
    res = cli_run(name, "--help")
    assert res.exit_code == 0
    assert "Example" in res.stdout, f"mia {name} --help shows no example"


@pytest.mark.parametrize("cmd", [c for c in readme_commands() if skip_reason(c) == "synopsis"])
def test_readme_synopsis_names_real_options(cmd):
    name = shlex.split(cmd)[1]
    assert name in cli.commands, f"README shows `mia {name}`, which does not exist"
    known = {opt for p in cli.commands[name].params for opt in (*p.opts, *p.secondary_opts)}
    shown = set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", cmd.split(" ", 2)[-1]))
    assert shown <= known, f"README's `mia {name}` shows unknown options {sorted(shown - known)}"
