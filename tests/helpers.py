"""Helpers shared by the test modules: importable as `helpers` because tests/conftest.py puts
this folder on sys.path (pytest's importlib mode does not, and tests/ has no __init__.py).

- running the command line: `cli_run` (in-process, click's CliRunner), `mia_cmd` (a child
  process), `assert_one_line_error`, `last_json_line`;
- waiting: `wait_until` (a condition with a bounded deadline, never a bare sleep);
- recorded days: `record_sim_day` (the simulators -> `mia record --sim`, stopped once the day
  holds what the tests read), `day_fingerprint`, `recorded_gamma`, `write_events`;
- `free_port`, `OffsetClock`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, TypeVar

import pytest

PY = sys.executable
T = TypeVar("T")


# --- waiting ----------------------------------------------------------------------------------

def wait_until(pred: Callable[[], T], timeout_s: float, what: str, poll_s: float = 0.01) -> T:
    """Poll `pred()` until it returns something truthy and return that; fail the test with
    `what` if `timeout_s` of wall time pass first. The deadline is a bound for a machine under
    load, not an expectation of speed: pick it generously."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(poll_s)


# --- the command line -------------------------------------------------------------------------

def mia_cmd(*args: str) -> list[str]:
    """argv running `mia ARGS...` in a child process with this interpreter."""
    return [PY, "-m", "mia.cli", *args]


def cli_run(*args, **kw):
    """`mia ARGS...` in-process through click's CliRunner; returns its Result (exit_code,
    stdout, stderr, output = both)."""
    from click.testing import CliRunner

    from mia.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], **kw)


def assert_one_line_error(result, code: int) -> str:
    """A user mistake: exit `code`, no traceback, exactly one line `mia: error: ...` in all
    the output; returns that line."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("mia: error: "), result.output
    return lines[0]


def last_json_line(text: str) -> dict:
    """The JSON object on the last non-empty line of `text` (`--json` output)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert lines, "no output"
    return json.loads(lines[-1])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- recorded days ----------------------------------------------------------------------------

class RecordedDay(NamedTuple):
    """A day recorded into `root` (a --data-dir); unpacks as `root, date = day`."""

    root: str
    date: str


# What `mia record --sim` records (README: ES, NQ and VX futures, SPX and NDX chains) and what
# the tests of the recorded day need of it before it is stopped.
SIM_SYMBOLS = ("ESZ6", "NQZ6")
SIM_UNDERLYINGS = ("SPX", "NDX")
SIM_MIN_SECONDS = 6.0  # as long as the modules used to record on their own
SIM_GAMMA_PER_UNDERLYING = 2  # two chain snapshots each: "levels known at a moment" differ


def _sim_day_progress(root: Path) -> dict | None:
    """What the day being recorded in `root` holds so far (None before its first segment)."""
    from mia.engine.events import GammaLevels, Instrument, OrderflowBar, Trade
    from mia.engine.log import EventLog

    log = EventLog(root)
    dates = log.dates()
    if not dates:
        return None
    date = dates[-1]
    symbols: dict[int, str] = {}
    trades: dict[str, int] = {}
    gamma: dict[str, int] = {}
    bars = 0
    first = last = None
    for _, ev in log.read(date, kinds=[Instrument, Trade, GammaLevels, OrderflowBar]):
        if type(ev) is Instrument:
            symbols[ev.instrument] = ev.symbol
        elif type(ev) is Trade:
            sym = symbols.get(ev.instrument, "?")
            trades[sym] = trades.get(sym, 0) + 1
            first = ev.ts_recv if first is None else first
            last = ev.ts_recv
        elif type(ev) is GammaLevels:
            if not ev.stale:
                gamma[ev.underlying] = gamma.get(ev.underlying, 0) + 1
        else:
            bars += 1
    seconds = 0.0 if first is None else (last - first) / 1e9
    return {"date": date, "trades": trades, "gamma": gamma, "bars": bars, "seconds": seconds}


def _sim_day_is_enough(progress: dict | None, *, stopped: bool = False) -> bool:
    """Enough to stop the recording; once `stopped`, also the bars its stop closed."""
    return (progress is not None
            and progress["seconds"] >= SIM_MIN_SECONDS
            and all(progress["trades"].get(s, 0) > 0 for s in SIM_SYMBOLS)
            and all(progress["gamma"].get(u, 0) >= SIM_GAMMA_PER_UNDERLYING
                    for u in SIM_UNDERLYINGS)
            and (progress["bars"] > 0 or not stopped))


def record_sim_day(root: Path, *, timeout_s: float = 240.0) -> RecordedDay:
    """Record a day from the embedded simulators with `mia record --sim` in a child process,
    stopped cleanly (SIGTERM) once the day holds at least SIM_MIN_SECONDS of trades of every
    SIM_SYMBOLS and SIM_GAMMA_PER_UNDERLYING fresh GammaLevels of every SIM_UNDERLYINGS (and,
    once stopped, OrderflowBars); on a loaded machine that takes longer, never less.
    `timeout_s` bounds it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    err_path = root.parent / f"{root.name}-record.stderr"
    argv = mia_cmd("record", "--sim", "--no-publish", "-q", "--data-dir", str(root),
                   "--duration", f"{int(timeout_s) + 60}s")  # a bound of its own, too
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err, cwd=root.parent)
    progress = None

    def enough_or_exited():
        nonlocal progress
        if proc.poll() is not None:
            return True
        progress = _sim_day_progress(root)
        return _sim_day_is_enough(progress)

    try:
        wait_until(enough_or_exited, timeout_s, f"the simulators' day in {root}", poll_s=0.5)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # a clean stop: RecordingEnded, files closed
        proc.wait(60)
    except BaseException as exc:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        pytest.fail(f"`mia record --sim` did not record the day: {exc}; so far: {progress}; "
                    f"stderr: {err_path.read_text(errors='replace')[-2000:]}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"`mia record --sim` exited {proc.returncode} (day so far: {progress}): "
                    f"{err_path.read_text(errors='replace')[-2000:]}", pytrace=False)
    progress = _sim_day_progress(root)
    if not _sim_day_is_enough(progress, stopped=True):
        pytest.fail(f"`mia record --sim` stopped early: {progress}", pytrace=False)
    return RecordedDay(str(root), progress["date"])


def day_fingerprint(root) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime ns) of every file under `root`: changes when anything is
    written, created or removed there."""
    root = Path(root)
    out = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            st = p.stat()
            out.append((str(p.relative_to(root)), st.st_size, st.st_mtime_ns))
    return sorted(out)


def recorded_gamma(root, date: str, before: int | None = None) -> dict:
    """{underlying: the last GammaLevels the recorder wrote live} (with `before`: the last one
    whose ts_recv is earlier)."""
    from mia.engine.events import GammaLevels
    from mia.engine.log import EventLog

    out = {}
    for _, g in EventLog(root).read(date, kinds=[GammaLevels], streams=["derived"]):
        if before is None or g.ts_recv < before:
            out[g.underlying] = g
    return out


def write_events(root, events: Iterable, *, stream: str = "live", **writer_kw) -> Path:
    """Write `events` as one recording of `stream`, the writer's clock following each event's
    ts_recv; returns the segment's path."""
    from mia.engine.clock import ManualClock
    from mia.engine.log import EventLog

    events = list(events)
    clock = ManualClock(events[0].ts_recv)
    with EventLog(root).writer(stream, clock=clock, **writer_kw) as w:
        for ev in events:
            clock.set(ev.ts_recv)
            w.append(ev)
        return w.path


class OffsetClock:
    """The wall clock shifted so that it reads `start_ns` now (e.g. 2 s before UTC midnight),
    or, with `from_first_use`, when it is first read: a test's slow start on a loaded machine
    then does not eat the time before the instant it is about."""

    def __init__(self, start_ns: int, *, from_first_use: bool = False) -> None:
        self._start = start_ns
        self._offset = None if from_first_use else start_ns - time.time_ns()

    def now_ns(self) -> int:
        now = time.time_ns()
        if self._offset is None:
            self._offset = self._start - now
        return now + self._offset
