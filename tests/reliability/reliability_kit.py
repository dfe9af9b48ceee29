"""Shared helpers of the reliability suite (imported by name: conftest.py puts this folder on
sys.path, as pytest's importlib mode does not): processes, recorder runs, log reading, figures.

Each test appends a line of figures (trials, faults injected, events lost, crashes) to
``$MIA_RELIABILITY_FIGURES`` when that variable names a file; RELIABILITY.md is written from it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mia.engine.events import Instrument, Trade
from mia.engine.log import EventLog

HERE = Path(__file__).resolve().parent
PY = sys.executable
SIM_SCRIPT = str(HERE / "dtc_sim_proc.py")
AT_BID, AT_ASK = 1, 2
AGGRESSOR_SIDE = {AT_ASK: 1, AT_BID: -1}  # DTC AtBidOrAsk -> Trade.side


def record_figures(test: str, **figures) -> None:
    """Append one JSON line of figures for RELIABILITY.md (only when asked to)."""
    path = os.environ.get("MIA_RELIABILITY_FIGURES")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"test": test, **figures}) + "\n")


class SimProcess:
    """tests/reliability/dtc_sim_proc.py in a child process; `stop()` returns what it sent."""

    def __init__(self, tmp: Path, *, rate: float, seed: int, symbols: str = "ESZ6,NQZ6") -> None:
        self.sent_path = tmp / f"sent-{seed}-{time.monotonic_ns()}.json"
        self.stderr_path = tmp / f"sim-{seed}-{time.monotonic_ns()}.err"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [PY, SIM_SCRIPT, "--rate", str(rate), "--seed", str(seed), "--symbols", symbols,
                 "--sent", str(self.sent_path)],
                stdout=subprocess.PIPE, stderr=err, text=True)
        line = self.proc.stdout.readline()  # bounded: the child prints PORT or dies
        self.proc.stdout.close()
        if not line.startswith("PORT "):
            self.kill()
            raise RuntimeError(f"simulator did not start: {line!r} "
                               f"{self.stderr_path.read_text()[-2000:]}")
        self.port = int(line.split()[1])

    def stop(self, timeout_s: float = 30.0) -> dict:
        self.proc.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise
        return json.loads(self.sent_path.read_text())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def mia_cmd(*args: str) -> list[str]:
    return [PY, "-m", "mia.cli", *args]


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("POLYGON_API_KEY", "MIA_DTC_USERNAME", "MIA_DTC_PASSWORD", "MIA_DATA_DIR")}
    env.update(extra)
    return env


def segments(root: Path, stream: str = "live") -> set[Path]:
    return set(root.glob(f"*/*-{stream}.mseg"))


def wait_for(pred, timeout_s: float, what: str, poll_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(poll_s)


def read_segment(seg: Path, scratch: Path) -> list:
    """Every event of one segment file, read through EventLog (lenient) from a private copy."""
    day = scratch / seg.parent.name
    if scratch.exists():
        shutil.rmtree(scratch)
    day.mkdir(parents=True)
    shutil.copy2(seg, day / seg.name)
    return [ev for _, ev in EventLog(scratch).read(seg.parent.name)]


def trades_by_symbol(events: list) -> dict[str, list[tuple[float, float, int]]]:
    symbols = {ev.instrument: ev.symbol for ev in events if type(ev) is Instrument}
    out: dict[str, list] = {}
    for ev in events:
        if type(ev) is Trade:
            out.setdefault(symbols[ev.instrument], []).append((ev.price, ev.size, ev.side))
    return out


def sent_trades(connection: dict) -> dict[str, list[tuple[float, float, int]]]:
    return {sym: [(p, s, AGGRESSOR_SIDE.get(side, 0)) for p, s, side in rows]
            for sym, rows in connection["trades"].items()}

