"""Start-up: the recorder logs before its kernels are ready, and its fold catches up exactly.

The kernels' load is gated by a threading.Event the test holds closed: every fact asserted
while it is closed (events in the live log, none derived) is one the recorder produced without
its kernels. After the gate opens, `replay --check` proves the derived stream equal, bit for bit,
to a recompute from the live log. `mia warmup` is checked to fill a fresh NUMBA_CACHE_DIR with
the very entries a replay then loads (NUMBA_DEBUG_CACHE: nothing compiled again).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time

import msgspec
import pytest
from helpers import mia_cmd, write_events

from mia import warmup
from mia.config import Config
from mia.engine.events import ChainSnapshot, GammaLevels, OrderflowBar, RecordingEnded, Trade
from mia.engine.log import EventLog
from mia.recorder.live import Recorder
from mia.recorder.sim import Simulators
from mia.replay import replay_day

BOUND_S = 120.0  # the most any wait below may take on a loaded machine
DERIVED = [GammaLevels, OrderflowBar]


def _config() -> Config:
    cfg = Config()
    return msgspec.structs.replace(cfg, bus=msgspec.structs.replace(cfg.bus, enabled=False))


async def _until(check, what: str, timeout_s: float = BOUND_S):
    deadline = time.monotonic() + timeout_s
    while True:
        value = await asyncio.get_running_loop().run_in_executor(None, check)
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g}s waiting for {what}"
        await asyncio.sleep(0.05)


def _logged(root, kinds, stream: str) -> list:
    log = EventLog(root)
    return [ev for d in log.dates() for _, ev in log.read(d, kinds=kinds, streams=[stream])]


@pytest.fixture
def gate(monkeypatch):
    """Closed: `load_kernels` (the recorder's kernel thread) waits. Open it with .set()."""
    gate = threading.Event()
    real = warmup.load_kernels
    entered = threading.Event()

    def gated(config=None, writer_ready=None):
        entered.set()
        assert gate.wait(BOUND_S), "the test never opened the compile gate"
        real(config, writer_ready=writer_ready)

    monkeypatch.setattr(warmup, "load_kernels", gated)
    monkeypatch.setattr(warmup, "cache_is_warm", lambda: True)  # no child process: the gate decides
    gate.entered = entered
    yield gate
    gate.set()


def test_first_events_are_logged_while_the_kernels_compile_and_the_fold_catches_up_exactly(
        tmp_path, gate):
    facts = {}

    async def go():
        async with Simulators(seed=3, rate=1000.0) as sims:
            rec = Recorder(sims.record_config(_config(), poll_s=1.0), str(tmp_path))
            run = asyncio.create_task(rec.run())
            try:
                await _until(lambda: _logged(tmp_path, [Trade], "live"), "trades in the live log")
                # the facts while the kernels are still 'compiling'
                facts["gate_closed_at_first_trade"] = not gate.is_set()
                # a whole chain snapshot logged too: GammaLevels are due from held rows
                chains = await _until(lambda: _logged(tmp_path, [ChainSnapshot], "live"),
                                      "a chain snapshot in the live log")
                facts["derived_before"] = _logged(tmp_path, DERIVED, "derived")
                facts["held"] = rec._pipeline.held_rows
                last_before = chains[-1].ts_recv
                gate.set()

                def caught_up():  # gamma levels computed from rows logged before the gate
                    got = _logged(tmp_path, [GammaLevels], "derived")
                    return [g for g in got if g.ts_recv <= last_before]

                await _until(caught_up, "derived events of the rows held while compiling")
                await _until(lambda: {g.underlying for g in _logged(tmp_path, [GammaLevels], "derived")
                                      if not g.stale} >= {"SPX", "NDX"}, "fresh gamma levels")
                assert not run.done(), run
            finally:
                rec.stop()
                result = await asyncio.wait_for(run, 60)
            return result

    result = asyncio.run(go())
    assert facts["gate_closed_at_first_trade"]
    assert facts["derived_before"] == []  # the fold had not run...
    assert facts["held"] > 0  # ...the pipeline held the rows it logged for it
    rep = replay_day(str(tmp_path), result.date, check=True)
    assert rep.check == "ok", rep.mismatch
    assert rep.derived == result.derived > 0
    derived = _logged(tmp_path, DERIVED, "derived")
    assert {type(e) for e in derived} == {GammaLevels, OrderflowBar}


def test_a_run_shorter_than_the_compile_waits_for_it_and_logs_every_derived_event(tmp_path, gate):
    """Stopped while the gate is closed: the recorder closes its live segment, then waits for
    the kernels (opened here only once RecordingEnded is in the live log) and folds it all."""

    def open_gate_after_the_live_log_ends():
        deadline = time.monotonic() + BOUND_S
        while time.monotonic() < deadline and not gate.is_set():
            if any(isinstance(e, RecordingEnded) for e in _logged(tmp_path, [RecordingEnded], "live")):
                gate.set()
                return
            time.sleep(0.05)

    async def go():
        async with Simulators(seed=4, rate=1000.0) as sims:
            rec = Recorder(sims.record_config(_config(), poll_s=1.0), str(tmp_path))
            run = asyncio.create_task(rec.run())
            try:
                await _until(lambda: len(_logged(tmp_path, [Trade], "live")) > 50,
                             "trades in the live log")
                assert not gate.is_set() and _logged(tmp_path, DERIVED, "derived") == []
            finally:
                opener = threading.Thread(target=open_gate_after_the_live_log_ends, daemon=True)
                opener.start()
                rec.stop()
                result = await asyncio.wait_for(run, BOUND_S)
                opener.join(BOUND_S)
            return result

    result = asyncio.run(go())
    assert result.derived > 0
    rep = replay_day(str(tmp_path), result.date, check=True)
    assert rep.check == "ok", rep.mismatch
    assert rep.derived == result.derived


def test_kernels_that_fail_end_the_run_with_that_error_and_the_log_stays_readable(tmp_path,
                                                                                 monkeypatch):
    class Broken(RuntimeError):
        pass

    def broken(config=None, writer_ready=None):
        raise Broken("no compiler today")

    monkeypatch.setattr(warmup, "load_kernels", broken)
    monkeypatch.setattr(warmup, "cache_is_warm", lambda: True)

    async def go():
        async with Simulators(seed=5, rate=500.0) as sims:
            rec = Recorder(sims.record_config(_config(), poll_s=1.0), str(tmp_path))
            with pytest.raises(Broken, match="no compiler today"):
                await asyncio.wait_for(rec.run(), BOUND_S)

    asyncio.run(go())
    ends = _logged(tmp_path, [RecordingEnded], "live")
    assert ends and "no compiler today" in ends[-1].reason


def test_warmup_reaches_every_kernel_and_stamps_the_cache(tmp_path, monkeypatch):
    """In this process's own cache (warm after `make`): no kernel is left for a first batch."""
    report = warmup.compile_kernels()
    assert report.kernels >= 20 and report.uncalled == [], report.uncalled
    found = warmup.kernels()
    for expected in ("analytics._orderflow_kernels.orderflow_run", "engine.fastdecode._walk",
                     "analytics._gamma_kernels.gamma_profile"):
        assert expected in found
    assert warmup.cache_is_warm()
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert not warmup.cache_is_warm()  # the stamp belongs to the cache it was written beside


@pytest.mark.slow
def test_warmup_fills_a_fresh_numba_cache_with_what_replay_loads(tmp_path):
    """A cold compile (tens of seconds): `mia warmup` into a fresh NUMBA_CACHE_DIR, then a
    replay in a fresh process loads every kernel from it and compiles nothing."""
    cache = tmp_path / "numba-cache"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    out = subprocess.run(mia_cmd("warmup", "--json"), env=env, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["uncalled"] == []
    assert list(cache.rglob("*.nbi")) and list(cache.rglob("*.nbc"))  # index and code files
    assert (cache / warmup.STAMP_NAME).exists()
    # a small day, then its replay in that cache
    from mia.fold import Fold

    rows = Fold.compile_rows()
    write_events(tmp_path / "data", rows)
    date = EventLog(tmp_path / "data").dates()[0]
    env["NUMBA_DEBUG_CACHE"] = "1"
    rep = subprocess.run(mia_cmd("replay", "--data-dir", str(tmp_path / "data"), "--date", date,
                                 "--check", "-q"), env=env, capture_output=True, text=True,
                         timeout=300)
    assert rep.returncode == 0, rep.stderr[-2000:]
    assert "data loaded" in rep.stdout + rep.stderr
    assert "data saved" not in rep.stdout + rep.stderr, [
        ln for ln in (rep.stdout + rep.stderr).splitlines() if "data saved" in ln]


def test_the_recorder_imports_without_numba():
    """numba (half a second of imports) is the kernel thread's to import, not the recorder's
    path to its first logged event: the reducer modules bind their kernels lazily."""
    code = ("import sys, mia.cli, mia.config, mia.recorder.live, mia.recorder.sim, mia.fold; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'llvmlite')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout[:500]


def test_held_rows_fold_to_the_same_derived_events_in_any_chunks(tmp_path):
    """Pipeline.hold/release: rows written while held, folded later in chunks of any size, give
    the derived events (and seqs) of a pipeline that folded each row as it was written."""
    from mia.engine.clock import ManualClock
    from mia.engine.pipeline import Pipeline
    from mia.fold import Fold

    rows = Fold.compile_rows()

    def run(root, hold_chunk: int | None):
        clock = ManualClock(rows[0].ts_recv)
        log = EventLog(root)
        pipe = Pipeline([Fold()])
        if hold_chunk is not None:
            pipe.hold()
        out = []
        with log.writer("live", fsync="never", clock=clock, on_write=pipe.on_input_written) as w:
            pipe.input_writer = w
            for ev in rows:
                clock.set(ev.ts_recv)
                out += pipe.ingest([ev])
        out += pipe.process_written()
        if hold_chunk is not None:
            assert out == [] and pipe.holding and pipe.held_rows == len(rows) + 2  # + brackets
            while pipe.holding:
                out += pipe.release(hold_chunk)
        return out

    direct = run(tmp_path / "a", None)
    assert direct  # order-flow bars and option flow
    for chunk in (1, 3, 1000):
        assert run(tmp_path / f"held-{chunk}", chunk) == direct
