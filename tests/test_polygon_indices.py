"""The indices snapshot: client, simulator, per-row NOT_ENTITLED, and index_values."""

from __future__ import annotations

import asyncio
import math

from mia.data.market_path import price_at, vix_at
from mia.data.polygon.client import PolygonClient
from mia.data.polygon.models import INDICES_PATH, index_values
from mia.data.polygon.poller import PolygonPoller
from mia.data.polygon.server import SIM_API_KEY, PolygonSimulator
from mia.engine.clock import ManualClock
from mia.engine.events import PolygonResponse, SourceError

T0 = 1_790_000_000 * 1_000_000_000


def poll(not_entitled: set[str]) -> list:
    clock = ManualClock(T0)
    events: list = []

    async def go():
        with PolygonSimulator(seed=2, clock=clock) as sim:
            sim.faults.index_not_entitled = not_entitled
            client = PolygonClient(sim.url, api_key=SIM_API_KEY, plan="free", clock=clock)
            poller = PolygonPoller(client, ("SPX",), emit=events.append, clock=clock,
                                   index_tickers=["I:SPX", "I:NDX", "I:VIX", "I:NOPE"])
            ok = await poller.poll_indices()
            await client.aclose()
            return ok

    assert asyncio.run(go())
    return events


def test_indices_snapshot_is_recorded_and_parsed():
    # Act
    events = poll(set())
    # Assert: one response, the query without a key, values on the shared paths
    [resp] = [e for e in events if isinstance(e, PolygonResponse)]
    assert resp.path == INDICES_PATH and resp.status == 200 and resp.final
    assert resp.query == "ticker.any_of=I:SPX,I:NDX,I:VIX,I:NOPE" and SIM_API_KEY not in resp.query
    rows = {r.ticker: r for r in index_values(resp)}
    assert rows["I:SPX"].value == round(price_at(2, "SPX", T0), 2)
    assert rows["I:NDX"].value == round(price_at(2, "NDX", T0), 2)
    assert rows["I:VIX"].value == round(vix_at(2, T0), 2)
    assert rows["I:SPX"].ts_ns == T0 and not rows["I:SPX"].error and math.isfinite(rows["I:SPX"].session_close)
    assert rows["I:NOPE"].error == "NOT_FOUND" and math.isnan(rows["I:NOPE"].value)


def test_not_entitled_row_is_a_row_error_not_an_http_failure():
    # Act
    events = poll({"I:VIX"})
    # Assert: HTTP 200 recorded, the VIX row an error with a NaN value, no SourceError
    [resp] = [e for e in events if isinstance(e, PolygonResponse)]
    rows = {r.ticker: r for r in index_values(resp)}
    assert resp.status == 200 and rows["I:VIX"].error == "NOT_ENTITLED" and math.isnan(rows["I:VIX"].value)
    assert rows["I:SPX"].error == "" and not [e for e in events if isinstance(e, SourceError)]
