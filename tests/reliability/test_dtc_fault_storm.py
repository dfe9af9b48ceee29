"""DTC fault storms against the whole recorder: dropped links, stalled heartbeats, garbage
frames, an oversized Size, rejected symbols. The recorder never crashes, and the Gap and
FeedStatus events it logs match the faults injected, one for one."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from reliability_kit import record_figures

from mia.config import Config
from mia.data.dtc.config import DtcConfig
from mia.data.dtc.server import DtcSimulator
from mia.data.polygon.config import PolygonConfig
from mia.engine.bus import BusConfig
from mia.engine.events import (
    FEED_DISCONNECTED,
    FEED_HEARTBEAT_TIMEOUT,
    FEED_LOGGED_ON,
    FEED_SUBSCRIBED,
    FEED_SUBSCRIPTION_REJECTED,
    FeedStatus,
    Gap,
    Instrument,
    RecordingEnded,
    Trade,
)
from mia.engine.log import EventLog
from mia.recorder.live import Recorder

LINK_FAULTS = ("drop", "garbage", "oversized", "stall")
STALL_S = 2.5  # the client's heartbeat is 1 s: silence over 2 s is a dead link


async def _wait(pred, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


def _streaming(sim: DtcSimulator) -> bool:
    """A logged-on connection with live subscriptions that has been sent market data."""
    return any(c.logged_on and c.md and sum(c.record.counts.values()) > 50 for c in sim._connections)


async def _storm(root, faults: list[str], seed: int) -> tuple:
    sim = DtcSimulator(seed=seed, rate=3000.0, heartbeat_s=0.25)
    sim.reject_symbols = {"VXZ6"}  # entitlement refused; BADZ6 is unknown to the exchange
    await sim.start()
    cfg = Config(dtc=[DtcConfig(host="127.0.0.1", port=sim.port, heartbeat_s=1.0,
                                symbols=["ESZ6", "NQZ6", "VXZ6", "BADZ6"])],
                 polygon=PolygonConfig(enabled=False), bus=BusConfig(enabled=False))
    rec = Recorder(cfg, str(root))
    run = asyncio.create_task(rec.run())
    injected: list[str] = []
    try:
        await _wait(lambda: _streaming(sim) or run.done(), 30, "the first subscription")
        for fault in faults:
            assert not run.done(), run.exception()
            n_records = len(sim.records)
            if fault == "drop":
                sim.drop_links()
            elif fault == "garbage":
                sim.send_garbage()
            elif fault == "oversized":
                sim.send_oversized()
            elif fault == "stall":
                sim.stall_heartbeats(STALL_S)
            injected.append(fault)
            # the client notices, reconnects, resubscribes and data flows again
            await _wait(lambda: len(sim.records) > n_records and _streaming(sim) or run.done(),
                        30, f"recovery from {fault}")
            await asyncio.sleep(0.2)
        assert not run.done(), run.exception()
        rec.stop("test done")
        result = await asyncio.wait_for(run, 30)
    finally:
        if not run.done():
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
        await sim.stop()
    return result, injected, sim


def _check_storm(tmp_path, faults: list[str], seed: int, name: str) -> None:
    root = tmp_path / "data"
    result, injected, sim = asyncio.run(_storm(root, faults, seed))
    assert result.reason == "test done"  # the recorder ran through the storm

    log = EventLog(root)
    (date,) = log.dates()
    assert log.verify(date).ok
    events = [ev for _, ev in log.read(date, streams=["live"])]
    statuses = [ev for ev in events if type(ev) is FeedStatus]
    ids = {ev.detail: ev.instrument for ev in statuses if ev.status == FEED_SUBSCRIBED}
    assert {ev.symbol for ev in events if type(ev) is Instrument} == {"ESZ6", "NQZ6"}
    gaps = [ev for ev in events if type(ev) is Gap]
    count = lambda code: sum(1 for ev in statuses if ev.status == code)  # noqa: E731

    assert len(gaps) == len(injected), [g.reason for g in gaps]
    assert count(FEED_DISCONNECTED) == len(injected)
    assert count(FEED_HEARTBEAT_TIMEOUT) == injected.count("stall")
    assert count(FEED_LOGGED_ON) == len(injected) + 1
    assert all(g.start_ns < g.end_ns for g in gaps)
    # protocol faults name themselves in the disconnect reason
    reasons = [ev.detail for ev in statuses if ev.status == FEED_DISCONNECTED]
    assert sum("protocol error" in r for r in reasons) == injected.count("garbage") + injected.count("oversized")
    assert sum("heartbeat timeout" in r for r in reasons) == injected.count("stall")
    # each refused symbol is refused once for market data and once for depth, then left alone
    for sym in ("VXZ6", "BADZ6"):
        rejected = [ev for ev in statuses if ev.status == FEED_SUBSCRIPTION_REJECTED
                    and ev.instrument == ids[sym]]
        assert len(rejected) == 2, (sym, rejected)
    # data kept flowing between faults: trades on both permitted symbols after the last gap
    last_gap = gaps[-1].end_ns
    traded = {ev.instrument for ev in events if type(ev) is Trade and ev.ts_recv > last_gap}
    assert {ids["ESZ6"], ids["NQZ6"]} <= traded
    ended = [ev for ev in events if type(ev) is RecordingEnded]
    assert [e.reason for e in ended] == ["test done"]
    record_figures(name, trials=1, faults=len(injected),
                   by_kind={k: injected.count(k) for k in LINK_FAULTS} | {"rejected_symbols": 2},
                   gaps=len(gaps), disconnects=count(FEED_DISCONNECTED),
                   heartbeat_timeouts=count(FEED_HEARTBEAT_TIMEOUT),
                   subscription_rejects=count(FEED_SUBSCRIPTION_REJECTED),
                   events=len(events), crashes=0, events_lost="n/a (gaps recorded)")


def test_dtc_fault_storm_short(tmp_path):
    _check_storm(tmp_path, ["drop", "garbage", "oversized", "stall", "drop", "oversized"], 11,
                 "dtc_fault_storm_short")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_dtc_fault_storm_long(tmp_path):
    rng = random.Random(42)
    faults = [rng.choice(LINK_FAULTS) for _ in range(40)]
    _check_storm(tmp_path, faults, 42, "dtc_fault_storm_long")
