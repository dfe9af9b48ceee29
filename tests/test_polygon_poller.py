"""PolygonPoller: pages recorded as events, failures as SourceError with the stale fallback."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
import pytest

from mia.analytics.gamma import GammaReducer
from mia.data.polygon.client import PolygonClient
from mia.data.polygon.models import chain_columns
from mia.data.polygon.poller import PolygonPoller
from mia.data.polygon.server import SIM_API_KEY, PolygonSimulator, build_chain, contract_row
from mia.engine.clock import ManualClock
from mia.engine.columns import ColumnBatch
from mia.engine.events import (
    FALLBACK_NONE,
    FALLBACK_PARTIAL,
    FALLBACK_PREVIOUS,
    FEED_AVAILABLE,
    FEED_UNAVAILABLE,
    FeedStatus,
    PolygonResponse,
    SourceError,
)

T0 = int(dt.datetime(2025, 12, 18, 15, 0, tzinfo=dt.timezone.utc).timestamp()) * 1_000_000_000
NS = 1_000_000_000


class Rig:
    def __init__(self, **client_kw) -> None:
        self.clock = ManualClock(T0)
        self.sleeps: list[float] = []
        self.events: list = []
        self.sim = PolygonSimulator(seed=5, clock=self.clock).start()
        client_kw.setdefault("plan", "developer")
        self.client = PolygonClient(self.sim.url, api_key=SIM_API_KEY, clock=self.clock, sleep=self.sleep,
                                    backoff_initial_s=0.5, **client_kw)
        self.poller = PolygonPoller(self.client, ("SPX", "NDX"), emit=self.events.append, clock=self.clock,
                                    expiry_days=1, strike_window=0.01, limit=20)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(int(seconds * NS))
        await asyncio.sleep(0)

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]

    async def close(self) -> None:
        await self.client.aclose()
        self.sim.stop()


def run(coro_fn):
    async def go():
        rig = Rig()
        try:
            return await coro_fn(rig)
        finally:
            await rig.close()
    return asyncio.run(go())


def test_pages_are_recorded_with_snapshot_ids_and_one_final_page():
    async def scenario(rig: Rig):
        assert await rig.poller.poll_once("SPX")
        assert await rig.poller.poll_once("SPX")
        return rig
    rig = run(scenario)
    pages = rig.of(PolygonResponse)
    assert {p.snapshot_id for p in pages} == {1, 2}
    for sid in (1, 2):
        snap = [p for p in pages if p.snapshot_id == sid]
        assert [p.page for p in snap] == list(range(len(snap))) and len(snap) > 1
        assert [p.final for p in snap] == [False] * (len(snap) - 1) + [True]
        assert all(p.underlying == "SPX" and p.status == 200 and p.request_id for p in snap)
        assert snap[0].path == "/v3/snapshot/options/I:SPX" and "limit=20" in snap[0].query
        assert "cursor=" in snap[1].query
        chain = chain_columns(snap)
        assert chain.snapshot_id == sid and len(chain) > 20
    # the second snapshot used the strike band around the spot the first one saw
    assert "strike_price.gte" in [p for p in pages if p.snapshot_id == 2][0].query
    assert rig.of(SourceError) == []
    assert [(f.status, f.source) for f in rig.of(FeedStatus)] == [(FEED_AVAILABLE, "polygon")]


def test_5xx_failure_records_source_error_with_stale_fallback_and_feed_status():
    async def scenario(rig: Rig):
        rig.sim.faults.error_count = 1000
        assert not await rig.poller.poll_once("SPX")  # no chain yet
        rig.sim.faults.error_count = 0
        assert await rig.poller.poll_once("SPX")
        good_at = rig.poller.last_good_ns("SPX")
        rig.clock.advance(90 * NS)
        rig.sim.faults.error_count = 1000
        assert not await rig.poller.poll_once("SPX")
        rig.sim.faults.error_count = 0
        assert await rig.poller.poll_once("SPX")
        return rig, good_at
    rig, good_at = run(scenario)
    errors = rig.of(SourceError)
    assert len(errors) == 2
    first, second = errors
    assert first.source == "polygon" and first.underlying == "SPX" and first.status == 503
    assert first.fallback == "none: no chain yet" and first.stale_age_ns == 0
    assert first.fallback_kind == FALLBACK_NONE and second.fallback_kind == FALLBACK_PREVIOUS
    assert "after 5 attempts" in first.error
    at = dt.datetime.fromtimestamp(good_at / NS, dt.timezone.utc)
    assert second.fallback.startswith(f"using chain from {at:%H:%M:%S} UTC, ")
    assert second.stale_age_ns == second.ts_recv - good_at and second.stale_age_ns >= 90 * NS
    assert f"{second.stale_age_ns // NS} s old" in second.fallback
    statuses = [f.status for f in rig.of(FeedStatus)]
    assert statuses == [FEED_UNAVAILABLE, FEED_AVAILABLE, FEED_UNAVAILABLE, FEED_AVAILABLE]
    assert len(rig.sleeps) >= 8  # the retries backed off between attempts


def test_failed_partial_snapshot_has_no_final_page():
    async def scenario(rig: Rig):
        orig = rig.poller.emit

        def emit(ev):
            orig(ev)
            if isinstance(ev, PolygonResponse) and ev.page == 1:
                rig.sim.faults.error_count = 1000  # the server breaks in the middle of the snapshot
        rig.poller.emit = emit
        assert not await rig.poller.poll_once("SPX")
        return rig
    rig = run(scenario)
    pages = rig.of(PolygonResponse)
    assert len(pages) == 2 and not any(p.final for p in pages)
    assert len(rig.of(SourceError)) == 1


def test_malformed_body_is_a_source_error_not_a_crash():
    async def scenario(rig: Rig):
        rig.sim.faults.malformed_count = 1
        ok = await rig.poller.poll_once("NDX")
        return rig, ok
    rig, ok = run(scenario)
    assert not ok
    (err,) = rig.of(SourceError)
    assert "PolygonDecodeError" in err.error and err.underlying == "NDX"
    pages = rig.of(PolygonResponse)
    assert len(pages) == 1 and not pages[0].final  # the raw body is kept for the record


def test_next_url_loop_is_recorded_and_the_chain_kept():
    async def scenario(rig: Rig):
        rig.sim.faults.next_url_loop = True
        return rig, await rig.poller.poll_once("SPX")
    rig, ok = run(scenario)
    assert ok
    (err,) = rig.of(SourceError)
    assert "cursor_loop" in err.error and err.fallback.startswith("using the ")
    assert err.fallback_kind == FALLBACK_PARTIAL
    assert rig.of(PolygonResponse)[-1].final


def test_entitlement_failure_is_reported():
    async def scenario(rig: Rig):
        rig.sim.faults.not_entitled = True
        return rig, await rig.poller.poll_once("SPX")
    rig, ok = run(scenario)
    assert not ok and rig.of(SourceError)[0].status == 403
    assert "entitlement" in rig.of(FeedStatus)[0].detail and rig.sleeps == []


def test_run_polls_every_underlying_until_stopped():
    async def scenario(rig: Rig):
        rig.poller.fixed_interval_s = 0.05
        task = asyncio.create_task(rig.poller.run())
        for _ in range(400):
            if len({(p.underlying, p.snapshot_id) for p in rig.of(PolygonResponse) if p.final}) >= 3:
                break
            await asyncio.sleep(0.01)
        await rig.poller.stop()
        await asyncio.wait_for(task, timeout=5.0)
        return rig
    rig = run(scenario)
    finals = [p for p in rig.of(PolygonResponse) if p.final]
    assert {p.underlying for p in finals} == {"SPX", "NDX"} and len(finals) >= 3


def test_default_interval_fits_the_plan_budget():
    async def scenario(rig: Rig):
        starter = PolygonPoller(PolygonClient(rig.sim.url, api_key="k" * 32, plan="free"), ("SPX", "NDX"),
                                emit=rig.events.append, clock=rig.clock)
        before = starter.interval_s
        await starter.client.aclose()
        await rig.poller.poll_once("SPX")
        await rig.poller.poll_once("NDX")
        pages = len(rig.of(PolygonResponse))
        return before, rig.poller.interval_s, pages, rig.client.calls_per_minute
    before, after, pages, cpm = run(scenario)
    assert before == pytest.approx(60.0 * 80 / 5.0)  # 2 chains x 40 pages at 5 calls a minute
    assert after == pytest.approx(max(10.0, 60.0 * pages / cpm))


def test_a_chain_whose_rows_cannot_be_placed_is_a_source_error_with_its_fallback():
    # Arrange: a server whose chain is 40 rows over two pages; the tickers can be switched to
    # names that are not OCC option symbols (nothing tells the settlement time then)
    clock = ManualClock(T0)
    chain = build_chain(5, "SPX", T0)
    good = [contract_row(chain, i, "SPX") for i in range(0, len(chain.strike), len(chain.strike) // 40)][:40]
    foo = [{**r, "details": {**r["details"], "ticker": f"FOO{i}"}} for i, r in enumerate(good)]
    serve = {"rows": foo}
    events: list = []

    def handler(request: httpx.Request) -> httpx.Response:
        rows = serve["rows"]
        if "cursor" not in request.url.params:
            return httpx.Response(200, json={"status": "OK", "request_id": "a", "results": rows[:25],
                                             "next_url": "https://api.polygon.io/v3/snapshot/options/I:SPX?cursor=2"})
        return httpx.Response(200, json={"status": "OK", "request_id": "b", "results": rows[25:]})

    async def scenario() -> list[bool]:
        async with PolygonClient("http://127.0.0.1:9", api_key=SIM_API_KEY, clock=clock,
                                 transport=httpx.MockTransport(handler)) as client:
            poller = PolygonPoller(client, ("SPX",), emit=events.append, clock=clock, expiry_days=None,
                                   strike_window=None)
            outcomes = []
            for rows in (foo, good, foo, foo[:2] + good[2:]):  # none yet, good, previous, partial
                serve["rows"] = rows
                outcomes.append(await poller.poll_once("SPX"))
                clock.advance(30 * NS)
            return outcomes

    # Act
    outcomes = asyncio.run(scenario())

    # Assert: each snapshot with dropped rows has its word, naming how many, why and the fallback
    assert outcomes == [False, True, False, True]
    errors = [e for e in events if isinstance(e, SourceError)]
    assert [(e.source, e.underlying, e.status) for e in errors] == [("polygon", "SPX", 200)] * 3
    all_dropped = "SPX chain: 40 of 40 rows dropped: ticker not an OCC option symbol (e.g. 'FOO0')"
    assert [e.error for e in errors] == [
        all_dropped, all_dropped, "SPX chain: 2 of 40 rows dropped: ticker not an OCC option symbol (e.g. 'FOO0')"]
    assert [e.fallback_kind for e in errors] == [FALLBACK_NONE, FALLBACK_PREVIOUS, FALLBACK_PARTIAL]
    assert errors[1].stale_age_ns == 30 * NS and errors[2].fallback == "using the 38 contracts placed"
    feed = [f for f in events if isinstance(f, FeedStatus)]
    assert [f.status for f in feed] == [FEED_UNAVAILABLE, FEED_AVAILABLE, FEED_UNAVAILABLE, FEED_AVAILABLE]
    assert "unusable chain" in feed[0].detail
    # ...and it is what the gamma reducer does with the recorded pages (live or in replay): no
    # levels from the first, levels from the second, the second's again (stale) after the third,
    # new levels from the partial fourth
    pages = [e for e in events if isinstance(e, PolygonResponse)]
    placed = [len(chain_columns([p for p in pages if p.snapshot_id == sid])) for sid in (1, 2, 3, 4)]
    assert placed == [0, 40, 0, 38]
    levels = GammaReducer(chain_columns).on_batch(ColumnBatch.from_events(events))
    assert [(lv.stale, lv.staleness_ns) for lv in levels] == [(False, 0), (True, 30 * NS), (False, 0)]
