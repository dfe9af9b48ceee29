"""PolygonClient against the simulator: paging, the official client's view, limits, retries, faults."""

from __future__ import annotations

import asyncio
import datetime as dt
import math

import httpx
import numpy as np
import pytest
from polygon import RESTClient

from mia.data.market_path import price_at
from mia.data.polygon.client import PolygonClient, ResponseTooLargeError
from mia.data.polygon.errors import EntitlementError, PolygonHttpError
from mia.data.polygon.models import chain_columns
from mia.data.polygon.server import SIM_API_KEY, PolygonSimulator
from mia.engine.clock import ManualClock
from mia.engine.errors import ConfigError, ConnectionLostError
from mia.engine.events import PolygonResponse

# Thursday 2025-12-18 10:00 New York: SPXW 0DTE trading, the SPX monthly settles tomorrow morning.
T0 = int(dt.datetime(2025, 12, 18, 15, 0, tzinfo=dt.timezone.utc).timestamp()) * 1_000_000_000
NS = 1_000_000_000


class VirtualTime:
    """A manual clock whose sleep advances it: rate-limit tests run in milliseconds."""

    def __init__(self, start_ns: int = T0) -> None:
        self.clock = ManualClock(start_ns)
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(int(seconds * NS))
        await asyncio.sleep(0)


@pytest.fixture
def vt():
    return VirtualTime()


@pytest.fixture
def sim(vt):
    with PolygonSimulator(seed=3, clock=vt.clock) as s:
        yield s


def client_for(sim, vt, **kw) -> PolygonClient:
    kw.setdefault("plan", "developer")
    return PolygonClient(sim.url, api_key=SIM_API_KEY, clock=vt.clock, sleep=vt.sleep, **kw)


def fetch(client: PolygonClient, underlying: str = "SPX", **kw):
    async def go():
        try:
            return await client.fetch_chain(underlying, **kw)
        finally:
            await client.aclose()
    return asyncio.run(go())


def as_events(f) -> list[PolygonResponse]:
    return [PolygonResponse(ts_event=p.ts_recv, ts_recv=p.ts_recv, underlying=f.underlying, path=p.path, query=p.query,
                            status=p.status, request_id=p.request_id, elapsed_ns=p.elapsed_ns, body=p.body,
                            snapshot_id=1, page=p.page, final=p.final) for p in f.pages]


def test_official_client_lists_whole_chain_and_agrees_with_our_parsing(sim, vt):
    # Arrange: one frozen instant, so both listings see the same snapshot.
    params = {"expiration_date.lte": "2025-12-22", "strike_price.gte": "5600", "strike_price.lte": "6400",
              "limit": 100}
    # Act
    theirs = list(RESTClient(SIM_API_KEY, base=sim.url).list_snapshot_options_chain("I:SPX", params=params))
    ours = fetch(client_for(sim, vt), expiry_days=4, strike_window=None, limit=100, spot_hint=None)
    # Assert: the official client paged through everything, and each field it parses equals ours.
    sel = [c for c in ours.contracts if 5600 <= c.details.strike_price <= 6400]
    assert len(theirs) == len(sel) > 200
    assert sum(1 for r in sim.requests if r.status == 200) > 3
    mine = {c.details.ticker: c for c in sel}
    missing_greeks = 0
    for t in theirs:
        m = mine[t.details.ticker]
        assert (t.details.contract_type, t.details.expiration_date, t.details.strike_price,
                t.details.exercise_style, t.details.shares_per_contract) == (
            m.details.contract_type, m.details.expiration_date, m.details.strike_price,
            m.details.exercise_style, m.details.shares_per_contract)
        assert t.open_interest == m.open_interest and t.day.volume == m.day.volume
        assert t.implied_volatility == m.implied_volatility and t.break_even_price == m.break_even_price
        assert t.fair_market_value == m.fmv
        assert (t.last_quote.bid, t.last_quote.ask, t.last_quote.midpoint) == (m.last_quote.bid, m.last_quote.ask, m.last_quote.midpoint)
        assert (t.last_trade.price, t.last_trade.size, t.last_trade.sip_timestamp) == (m.last_trade.price, m.last_trade.size, m.last_trade.sip_timestamp)
        assert t.underlying_asset.value == m.underlying_asset.value and t.underlying_asset.price is None
        if t.greeks is None:
            missing_greeks += 1
            assert m.greeks is None
        else:
            assert (t.greeks.delta, t.greeks.gamma, t.greeks.theta, t.greeks.vega) == (
                m.greeks.delta, m.greeks.gamma, m.greeks.theta, m.greeks.vega)
    assert missing_greeks > 0  # deep in-the-money rows come without greeks, as on the real API


def test_simulated_chain_is_realistic(sim, vt):
    spot = price_at(3, "SPX", T0)
    f = fetch(client_for(sim, vt), expiry_days=45, strike_window=0.05, spot_hint=spot)
    c = chain_columns(as_events(f))
    roots = {t[2:-15] for t in c.tickers}
    assert {"SPX", "SPXW"} <= roots  # PM dailies and the AM monthly
    assert c.am_settled.any() and (~c.am_settled).any()
    assert c.spot == pytest.approx(spot, abs=0.01)  # moves with the DTC simulator's ES
    assert np.all(np.abs(c.strike - spot) <= 0.05 * spot + 0.01)
    near = np.isfinite(c.gamma) & (np.abs(c.strike - c.spot) < 50)
    assert near.sum() > 20 and np.all(c.gamma[near] > 0)
    # put skew: a 5% OTM put is richer than a 5% OTM call of the same expiry
    expiry = np.sort(np.unique(c.expiry_ns))[3]
    put = (c.expiry_ns == expiry) & (c.right < 0) & np.isfinite(c.iv)
    call = (c.expiry_ns == expiry) & (c.right > 0) & np.isfinite(c.iv)
    assert c.iv[put][np.argmin(c.strike[put])] > c.iv[call][np.argmax(c.strike[call])]
    # open interest collects at round strikes
    round_oi = np.nanmean(c.open_interest[c.strike % 100 == 0])
    other_oi = np.nanmean(c.open_interest[c.strike % 25 != 0])
    assert round_oi > 1.5 * other_oi
    # greeks are Black-Scholes: call delta - put delta = 1 at the same strike and expiry
    i = int(np.flatnonzero(near & (c.right > 0))[0])
    j = [k for k in range(len(c)) if c.right[k] < 0 and c.strike[k] == c.strike[i] and c.expiry_ns[k] == c.expiry_ns[i]][0]
    assert c.delta[i] - c.delta[j] == pytest.approx(1.0, abs=1e-5)
    assert c.gamma[i] == pytest.approx(c.gamma[j], rel=1e-4)


def test_rate_limit_is_never_exceeded_across_pages(sim, vt):
    # Arrange: the plan and the simulator both allow 5 calls a minute.
    sim.calls_per_minute = 5
    client = client_for(sim, vt, plan="free")
    # Act
    f = fetch(client, expiry_days=1, strike_window=0.02, limit=10)
    # Assert: many pages, no 429, and no 60 s window holding more than 5 requests.
    times = [r.t_ns for r in sim.requests]
    assert len(f.pages) > 10 and f.stop_reason == "complete"
    assert all(r.status == 200 for r in sim.requests)
    for k in range(len(times) - 5):
        assert times[k + 5] - times[k] >= 60 * NS
    assert vt.clock.now_ns() - T0 >= 60 * NS * ((len(times) - 1) // 5)


def test_429_backs_off_honouring_retry_after(sim, vt):
    # Arrange: the client thinks its plan is unlimited; the server allows 5 a minute.
    sim.calls_per_minute = 5
    client = client_for(sim, vt, plan="developer")
    # Act
    f = fetch(client, expiry_days=1, strike_window=0.02, limit=10)
    # Assert: 429s came back, each wait honoured Retry-After, and the chain completed.
    statuses = [r.status for r in sim.requests]
    assert statuses.count(429) >= 1 and f.stop_reason == "complete"
    assert f.requests == len(statuses)
    assert min(vt.sleeps) >= 1.0 and max(vt.sleeps) <= 60.0
    served = [r.t_ns for r in sim.requests if r.status == 200]
    for k in range(len(served) - 5):
        assert served[k + 5] - served[k] >= 60 * NS


def test_5xx_is_retried_with_backoff(sim, vt):
    sim.faults.error_count = 2
    f = fetch(client_for(sim, vt, backoff_initial_s=1.0), expiry_days=0, strike_window=0.01)
    assert [r.status for r in sim.requests][:3] == [503, 503, 200]
    assert len(vt.sleeps) == 2 and 0.5 <= vt.sleeps[0] <= 1.0 and 1.0 <= vt.sleeps[1] <= 2.0
    assert f.contracts


def test_5xx_past_the_retries_raises_http_error(sim, vt):
    sim.faults.error_count = 10
    with pytest.raises(PolygonHttpError, match="HTTP 503.*after 3 attempts") as info:
        fetch(client_for(sim, vt, max_retries=2), expiry_days=0)
    assert info.value.status == 503 and info.value.request_id
    assert len(sim.requests) == 3


def test_timeouts_are_retried_then_raise_connection_lost():
    with PolygonSimulator(seed=1) as sim:
        sim.faults.delay_s = 0.4
        client = PolygonClient(sim.url, api_key=SIM_API_KEY, plan="developer", timeout_s=0.1, max_retries=1,
                               backoff_initial_s=0.01)
        with pytest.raises(ConnectionLostError, match="timed out.*after 2 attempts"):
            fetch(client, expiry_days=0)


def test_401_and_403_raise_entitlement_without_retrying(sim, vt):
    with pytest.raises(EntitlementError, match="401 Unknown API Key") as info:
        fetch(PolygonClient(sim.url, api_key="wrong-key-0000", clock=vt.clock, sleep=vt.sleep), expiry_days=0)
    assert info.value.status == 401 and len(sim.requests) == 1
    sim.faults.not_entitled = True
    with pytest.raises(EntitlementError, match="403 You are not entitled"):
        fetch(client_for(sim, vt), expiry_days=0)
    assert len(sim.requests) == 2 and not vt.sleeps


def test_next_url_loop_stops(sim, vt):
    sim.faults.next_url_loop = True
    f = fetch(client_for(sim, vt), expiry_days=1, strike_window=0.02, limit=10)
    assert f.stop_reason == "cursor_loop"
    assert len(f.pages) == 2  # page 2 points at its own cursor again: it is never fetched twice
    assert f.pages[-1].final and not f.pages[0].final
    assert len({c.details.ticker for c in f.contracts}) == len(f.contracts) == 20


def test_page_cap_stops(sim, vt):
    f = fetch(client_for(sim, vt, max_pages=3), expiry_days=2, limit=5)
    assert f.stop_reason == "page_cap" and len(f.pages) == 3 and f.pages[-1].final


def test_missing_greeks_stay_missing(sim, vt):
    sim.faults.missing_greeks = True
    f = fetch(client_for(sim, vt), expiry_days=1, strike_window=0.01)
    c = chain_columns(as_events(f))
    assert len(c) > 0 and np.isnan(c.gamma).all() and np.isnan(c.iv).all()
    assert np.isfinite(c.open_interest).all() and np.isfinite(c.bid).all()


def test_malformed_body_raises_decode_error_after_delivering_the_page(sim, vt):
    sim.faults.malformed_count = 1
    seen = []
    with pytest.raises(Exception) as info:
        fetch(client_for(sim, vt), expiry_days=0, on_page=seen.append)
    assert type(info.value).__name__ == "PolygonDecodeError"
    assert len(seen) == 1 and not seen[0].final


def test_huge_body_is_refused_past_the_cap_and_parsed_under_it(sim, vt):
    sim.faults.huge_body_bytes = 2_000_000
    with pytest.raises(ResponseTooLargeError, match="max_body_bytes"):
        fetch(client_for(sim, vt, max_body_bytes=1_000_000), expiry_days=0, strike_window=0.01)
    f = fetch(client_for(sim, vt), expiry_days=0, strike_window=0.01)
    assert f.contracts and len(f.pages[0].body) > 2_000_000


def test_filters_go_into_the_first_query(sim, vt):
    f = fetch(client_for(sim, vt), expiry_days=3, strike_window=0.1, contract_type="put", spot_hint=6000.0)
    q = f.pages[0].query
    assert "expiration_date.gte=2025-12-18" in q and "expiration_date.lte=2025-12-21" in q
    assert "strike_price.gte=5400.00" in q and "strike_price.lte=6600.00" in q and "contract_type=put" in q
    assert all(c.details.contract_type == "put" and 5400 <= c.details.strike_price <= 6600 for c in f.contracts)
    assert all("2025-12-18" <= c.details.expiration_date <= "2025-12-21" for c in f.contracts)


def test_next_url_with_api_key_is_stripped_and_rebased():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if "cursor" not in request.url.params:
            return httpx.Response(200, json={"status": "OK", "request_id": "a", "results": [],
                                             "next_url": "https://elsewhere.example/v3/snapshot/options/I:SPX?cursor=abc&apiKey=TOPSECRET"})
        return httpx.Response(200, json={"status": "OK", "request_id": "b", "results": []})

    client = PolygonClient("http://127.0.0.1:9", api_key="TOPSECRET", transport=httpx.MockTransport(handler))
    f = fetch(client, expiry_days=None, strike_window=None)
    assert len(seen) == 2
    assert seen[1].url.host == "127.0.0.1"  # the header never travels to another host
    assert "TOPSECRET" not in str(seen[1].url) and f.pages[1].query == "cursor=abc"
    assert seen[1].headers["Authorization"] == "Bearer TOPSECRET"


def test_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("POLYGON_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="POLYGON_API_KEY"):
        PolygonClient("http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="unknown Polygon plan"):
        PolygonClient("http://127.0.0.1:9", api_key="k" * 32, plan="platinum")


def test_unlimited_plan_and_fractional_rates():
    from mia.data.polygon.client import RateLimiter
    clock = ManualClock(0)
    assert RateLimiter(0.5, clock).window_ns == 120 * NS
    assert RateLimiter(5.0, clock).calls == 5
    assert math.isclose(PolygonClient("http://x", api_key="k" * 32, plan="business").calls_per_minute, 600.0)
