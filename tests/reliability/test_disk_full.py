"""Disk full: the recorder's file size limit (RLIMIT_FSIZE, SIGXFSZ ignored, so writes fail with
EFBIG as they would with ENOSPC) runs out mid-recording. It must stop with one clear error line
and exit status 1; everything written before stays readable up to the last whole frame."""

from __future__ import annotations

import resource
import signal
import subprocess

import pytest
from reliability_kit import SimProcess, clean_env, mia_cmd, record_figures

from mia.engine.events import Trade
from mia.engine.log import EventLog


def _limit_file_size(limit: int):
    def apply() -> None:  # runs in the child before exec
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_disk_full_stops_with_one_line_and_keeps_what_was_written(tmp_path):
    _disk_full(tmp_path, 1 << 20, "disk_full")


@pytest.mark.slow
@pytest.mark.parametrize("limit", [256 << 10, 3 << 20, 8 << 20])
def test_disk_full_other_limits(tmp_path, limit):
    _disk_full(tmp_path, limit, f"disk_full_{limit >> 10}k")


def _disk_full(tmp_path, limit: int, name: str) -> None:
    root = tmp_path / "data"
    sim = SimProcess(tmp_path, rate=50_000.0, seed=3)
    try:
        proc = subprocess.run(
            mia_cmd("record", "--dtc", f"127.0.0.1:{sim.port}", "--symbols", "ESZ6,NQZ6",
                    "--no-polygon", "--no-publish", "-q", "--duration", "60s", "--data-dir", str(root)),
            capture_output=True, text=True, env=clean_env(), timeout=120, preexec_fn=_limit_file_size(limit))
    finally:
        sim.kill()
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("mia: error: ") and "cannot write" in lines[0], lines[0]
    assert "Traceback" not in proc.stderr

    log = EventLog(root)
    (date,) = log.dates()
    report = log.verify(date)
    assert report.bad_frames == []  # damage, if any, is a torn tail only
    repaired = log.verify(date, repair=True)
    assert log.verify(date).ok
    events = [ev for _, ev in log.read(date, strict=True)]
    trades = sum(1 for ev in events if type(ev) is Trade)
    assert trades > limit // 1000  # it recorded until the limit, and all of that reads back
    live = [s for s in log.segments(date) if s.path.name.endswith("-live.mseg")]
    assert max(s.path.stat().st_size for s in live) <= limit
    record_figures(name, trials=1, faults=f"RLIMIT_FSIZE {limit} B (EFBIG)",
                   exit_status=proc.returncode, stderr_lines=len(lines), error=lines[0],
                   torn_tails=len(report.torn_tails), truncated_bytes=repaired.truncated_bytes,
                   events_read_back=len(events), trades_read_back=trades, crashes=0)
