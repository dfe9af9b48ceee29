"""Polygon fault storms: 429 bursts, 5xx, timeouts, malformed JSON, endless paging, a huge body.

Through the whole recorder: each fault that exhausts the client's retries becomes one
SourceError whose fallback is the last good chain (and a stale GammaLevels), paging loops are
cut and said so, the recorder never stops, and `replay --check` reproduces every GammaLevels.
On a scaled clock (1 s of wall time = 20 s of plan time) with faults firing at random, the
simulator's request log never holds more than the plan's calls in any sliding 60 s window.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time

import pytest
from reliability_kit import record_figures

import mia.data.polygon.client as polygon_client
from mia.config import Config
from mia.data.polygon.client import PolygonClient
from mia.data.polygon.config import PolygonConfig
from mia.data.polygon.poller import PolygonPoller
from mia.data.polygon.server import PolygonSimulator
from mia.engine.bus import BusConfig
from mia.engine.events import (
    FEED_AVAILABLE,
    FEED_UNAVAILABLE,
    FeedStatus,
    GammaLevels,
    PolygonResponse,
    SourceError,
)
from mia.engine.log import EventLog
from mia.recorder.live import Recorder
from mia.replay import replay_day

KEY = "storm-key"
TIMEOUT_S = 0.4


def _set_fault(sim: PolygonSimulator, fault: str) -> None:
    f = sim.faults
    if fault == "429":
        f.error_status, f.error_count = 429, 3  # one more than the retries: the fetch fails
    elif fault == "5xx":
        f.error_status, f.error_count = 503, 3
    elif fault == "timeout":
        f.delay_s = TIMEOUT_S * 2
    elif fault == "malformed":
        f.malformed_count = 1
    elif fault == "loop":
        f.next_url_loop = True
    elif fault == "huge":
        f.huge_body_bytes = polygon_client.MAX_BODY_BYTES + 1024


def _clear_faults(sim: PolygonSimulator) -> None:
    f = sim.faults
    f.delay_s, f.next_url_loop, f.huge_body_bytes = 0.0, False, 0
    f.error_count = f.malformed_count = 0


async def _until(pred, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.01)


def test_polygon_fault_storm_through_the_recorder(tmp_path, monkeypatch):
    # the plan's retry schedule scaled down (3 attempts, 20 ms backoff) so a storm fits a test
    monkeypatch.setattr(polygon_client, "PolygonClient", functools.partial(
        PolygonClient, max_retries=2, backoff_initial_s=0.02, backoff_max_s=0.05))
    faults = ["429", "5xx", "timeout", "malformed", "loop", "huge"]
    root = tmp_path / "data"
    cfg = Config(dtc=[], bus=BusConfig(enabled=False), polygon=PolygonConfig(
        base_url="", api_key=KEY, plan="business", underlyings=["SPX"], poll_s=0.3,
        expiry_days=10, strike_window=0.04, timeout_s=TIMEOUT_S,
        index_tickers=[]))  # chains alone: each fault hits a chain, not an indices snapshot

    async def go():
        with PolygonSimulator(seed=8, api_key=KEY) as sim:
            import msgspec

            run_cfg = msgspec.structs.replace(cfg, polygon=msgspec.structs.replace(cfg.polygon, base_url=sim.url))
            rec = Recorder(run_cfg, str(root))
            seen: list = []
            make_emit = rec._emitter

            def watching_emitter(source):  # see what the sources emit, on its way to the log
                emit = make_emit(source)

                def both(ev):
                    seen.append(ev)
                    emit(ev)
                return both

            rec._emitter = watching_emitter
            run = asyncio.create_task(rec.run())
            chains = lambda: sum(1 for ev in seen if type(ev) is PolygonResponse and ev.final)  # noqa: E731
            errors = lambda: sum(1 for ev in seen if type(ev) is SourceError)  # noqa: E731
            await _until(lambda: chains() >= 1 or run.done(), 30, "a first chain")
            for fault in faults:
                before = errors()
                _set_fault(sim, fault)
                await _until(lambda: errors() > before or run.done(), 30, f"the {fault} error")
                _clear_faults(sim)
                n = chains()
                await _until(lambda: chains() > n or run.done(), 30, f"recovery from {fault}")
                assert not run.done(), run.exception()
            await asyncio.sleep(0.5)
            rec.stop("test done")
            return await asyncio.wait_for(run, 30)

    result = asyncio.run(go())
    assert result.reason == "test done"
    log = EventLog(root)
    (date,) = log.dates()
    assert log.verify(date).ok
    live = [ev for _, ev in log.read(date, streams=["live"])]
    derived = [ev for _, ev in log.read(date, streams=["derived"])]
    errors = [ev for ev in live if type(ev) is SourceError]
    assert len(errors) == len(faults), [e.error for e in errors]
    stale_fallbacks = [e for e in errors if e.fallback.startswith("using chain from")]
    assert len(stale_fallbacks) == len(faults) - 1  # all but the paging loop, which keeps its rows
    assert all(e.stale_age_ns > 0 for e in stale_fallbacks)
    assert [e.status for e in errors[:2]] == [429, 503]
    assert "timed out" in errors[2].error and "PolygonDecodeError" in errors[3].error
    assert "cursor_loop" in errors[4].error and "ResponseTooLargeError" in errors[5].error
    statuses = [ev.status for ev in live if type(ev) is FeedStatus and ev.source == "polygon"]
    assert statuses.count(FEED_UNAVAILABLE) == len(stale_fallbacks)
    assert statuses.count(FEED_AVAILABLE) == len(stale_fallbacks) + 1
    gamma = [ev for ev in derived if type(ev) is GammaLevels]
    assert sum(g.stale for g in gamma) == len(stale_fallbacks)
    assert sum(not g.stale for g in gamma) >= len(faults)
    replayed = replay_day(str(root), date, check=True, config=cfg)
    assert replayed.check == "ok", replayed.mismatch
    record_figures("polygon_fault_storm", trials=1, faults=len(faults), by_kind=faults,
                   source_errors=len(errors), stale_fallbacks=len(stale_fallbacks),
                   stale_gamma_levels=sum(g.stale for g in gamma), gamma_levels=len(gamma),
                   pages_recorded=sum(1 for ev in live if type(ev) is PolygonResponse),
                   replay_check=replayed.check, crashes=0)


class ScaledClock:
    """Plan time running `factor` times faster than the wall clock."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.t0 = time.time_ns()

    def now_ns(self) -> int:
        return self.t0 + int((time.time_ns() - self.t0) * self.factor)


class ArrivalLog(PolygonSimulator):
    """The simulator, noting each request's arrival on its clock (before any fault delay)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.arrivals: list[int] = []

    def handle(self, path, query, auth_header):
        self.arrivals.append(self.now_ns())
        return super().handle(path, query, auth_header)


def _max_in_window(times: list[int], window_ns: int) -> int:
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window_ns:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def _rate_storm(plan_minutes: float, seed: int) -> dict:
    factor = 20.0
    cpm = 5.0  # the free (Basic) plan
    clock = ScaledClock(factor)
    rng = random.Random(seed)

    async def scaled_sleep(seconds: float) -> None:
        await asyncio.sleep(seconds / factor)

    async def go():
        with ArrivalLog(seed=seed, api_key=KEY, clock=clock, calls_per_minute=cpm) as sim:
            client = PolygonClient(sim.url, api_key=KEY, plan="free", clock=clock, sleep=scaled_sleep,
                                   timeout_s=0.2, max_retries=2, backoff_initial_s=1.0, rng=rng)
            events: list = []
            poller = PolygonPoller(client, ["SPX"], interval_s=0.0, emit=events.append, clock=clock,
                                   expiry_days=1, strike_window=0.01)
            task = asyncio.create_task(poller.run())
            injected = 0
            end = time.monotonic() + plan_minutes * 60 / factor
            while time.monotonic() < end:
                _clear_faults(sim)
                _set_fault(sim, rng.choice(["429", "5xx", "timeout", "malformed", "loop", "none"]))
                injected += 1
                await asyncio.sleep(rng.uniform(0.2, 0.8))
            await poller.stop()
            await asyncio.gather(task, return_exceptions=True)
            await client.aclose()
            return sim.arrivals, events, injected

    arrivals, events, injected = asyncio.run(go())
    # arrivals trail the limiter's grants by the loopback latency: allow 1 s of plan time
    worst = _max_in_window(arrivals, 59 * 1_000_000_000)
    return {"requests": len(arrivals), "worst_window": worst, "cpm": cpm, "injected": injected,
            "source_errors": sum(1 for e in events if type(e) is SourceError)}


def test_plan_rate_never_exceeded_under_faults_scaled_clock():
    r = _rate_storm(plan_minutes=3.0, seed=3)
    assert r["requests"] >= 2 * r["cpm"]  # the limiter, not idleness, held the rate
    assert r["worst_window"] <= r["cpm"], r
    record_figures("polygon_rate_short", plan_minutes=3, faults=r["injected"], requests=r["requests"],
                   worst_60s_window=r["worst_window"], plan_calls_per_minute=r["cpm"],
                   source_errors=r["source_errors"])


@pytest.mark.slow
def test_plan_rate_never_exceeded_long():
    r = _rate_storm(plan_minutes=30.0, seed=30)
    assert r["worst_window"] <= r["cpm"], r
    record_figures("polygon_rate_long", plan_minutes=30, faults=r["injected"], requests=r["requests"],
                   worst_60s_window=r["worst_window"], plan_calls_per_minute=r["cpm"],
                   source_errors=r["source_errors"])
