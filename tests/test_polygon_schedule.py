"""Chains fetched at the configured New York times, across a DST change, within the plan's budget."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
import msgspec
import pytest

from mia.data.polygon.client import PolygonClient
from mia.data.polygon.models import INDICES_PATH
from mia.data.polygon.poller import PolygonPoller, next_snapshot_ns
from mia.engine.clock import ManualClock
from mia.engine.events import PolygonResponse

NS = 1_000_000_000
UTC = dt.timezone.utc


def utc_ns(*args) -> int:
    return int(dt.datetime(*args, tzinfo=UTC).timestamp()) * NS


class FakeApi:
    """A chain of `pages` pages per underlying and an indices snapshot, answered at once."""

    def __init__(self, clock: ManualClock, pages: int = 3) -> None:
        self.clock, self.pages = clock, pages
        self.requests: list[tuple[int, str, str]] = []  # (t_ns, path, query)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path, query = request.url.path, request.url.query.decode()
        self.requests.append((self.clock.now_ns(), path, query))
        if path == INDICES_PATH:
            rows = [{"ticker": "I:SPX", "value": 6000.0, "last_updated": self.clock.now_ns()},
                    {"ticker": "I:VIX", "error": "NOT_ENTITLED", "message": "Not entitled"}]
            return httpx.Response(200, content=msgspec.json.encode({"status": "OK", "request_id": "i", "results": rows}))
        page = int(dict(httpx.QueryParams(query)).get("cursor", "0"))
        body = {"status": "OK", "request_id": f"r{page}", "results": [{
            "details": {"ticker": f"O:SPXW260320C0{6000 + page}000", "contract_type": "call",
                        "strike_price": 6000.0 + page, "expiration_date": "2026-03-20"}}]}
        if page + 1 < self.pages:
            body["next_url"] = f"http://sim{path}?cursor={page + 1}"
        return httpx.Response(200, content=msgspec.json.encode(body))


def test_next_snapshot_follows_new_york_time_across_dst():
    times = [(15, 45)]
    # winter (EST, UTC-5): 20:45 UTC; the weekend is skipped
    assert next_snapshot_ns(utc_ns(2026, 3, 6, 12), times) == utc_ns(2026, 3, 6, 20, 45)
    assert next_snapshot_ns(utc_ns(2026, 3, 6, 20, 45), times) == utc_ns(2026, 3, 9, 19, 45)  # EDT from Mar 8
    # autumn back to EST on 2026-11-01
    assert next_snapshot_ns(utc_ns(2026, 10, 30, 20), times) == utc_ns(2026, 11, 2, 20, 45)


@pytest.mark.parametrize("plan_cpm", [5.0])
def test_chains_fetched_exactly_at_the_snapshot_times_within_the_plan(plan_cpm):
    # Arrange: the free plan (5 calls a minute), chains at 10:00 and 15:45 New York from a Friday
    # morning in winter time to the Tuesday after the switch to summer time (2026-03-08).
    start, end = utc_ns(2026, 3, 6, 14, 0), utc_ns(2026, 3, 10, 22, 0)
    clock = ManualClock(start)
    api = FakeApi(clock)
    events: list = []

    async def sleep(seconds: float) -> None:
        clock.advance(max(1, int(seconds * NS)))
        await asyncio.sleep(0)

    async def scenario() -> None:
        client = PolygonClient("http://sim", api_key="k" * 32, plan="free", clock=clock, sleep=sleep,
                               transport=httpx.MockTransport(api))
        poller = PolygonPoller(client, ("SPX", "NDX"), emit=events.append, clock=clock, sleep=sleep,
                               snapshot_times=["15:45", "10:00"], index_tickers=["I:SPX", "I:VIX"],
                               indices_interval_s=600.0)
        task = asyncio.create_task(poller.run())
        for _ in range(200_000):
            if clock.now_ns() >= end:
                break
            await asyncio.sleep(0)
        await poller.stop()
        await asyncio.wait_for(task, 5.0)
        await client.aclose()

    # Act
    asyncio.run(scenario())

    # Assert: each chain snapshot (all 3 pages) began exactly at a configured time, SPX then NDX
    expected = [utc_ns(2026, 3, 6, 15, 0), utc_ns(2026, 3, 6, 20, 45),  # EST
                utc_ns(2026, 3, 9, 14, 0), utc_ns(2026, 3, 9, 19, 45),  # EDT
                utc_ns(2026, 3, 10, 14, 0), utc_ns(2026, 3, 10, 19, 45)]
    chains = [e for e in events if isinstance(e, PolygonResponse) and e.path != INDICES_PATH]
    by_snapshot: dict[int, list[PolygonResponse]] = {}
    for e in chains:
        by_snapshot.setdefault(e.snapshot_id, []).append(e)
    snaps = list(by_snapshot.values())
    assert all([p.page for p in s] == [0, 1, 2] and s[-1].final for s in snaps)
    spx_starts = [s[0].ts_recv for s in snaps if s[0].underlying == "SPX"]
    assert spx_starts == expected
    assert [s[0].underlying for s in snaps] == ["SPX", "NDX"] * len(expected)
    # the indices were polled beside them, NOT_ENTITLED rows and all
    assert sum(1 for e in events if isinstance(e, PolygonResponse) and e.path == INDICES_PATH) > 100
    # never more than 5 calls in any 60 s window
    times = sorted(t for t, _, _ in api.requests)
    for k in range(len(times) - 5):
        assert times[k + 5] - times[k] >= 60 * NS
