"""The Polygon key never reaches events, logs (httpx and httpcore included), errors or files."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import httpx
import pytest

from mia.data.polygon.client import PolygonClient
from mia.data.polygon.poller import PolygonPoller
from mia.data.polygon.server import PolygonSimulator
from mia.engine.clock import ManualClock
from mia.engine.errors import MiaError
from mia.engine.events import EventCodec

KEY = "pk-S3CRET-7f3a9c"
T0 = int(dt.datetime(2025, 12, 18, 15, 0, tzinfo=dt.timezone.utc).timestamp()) * 1_000_000_000


def test_key_never_leaks(tmp_path, caplog, monkeypatch):
    # Arrange: the key comes from the environment; every logger at DEBUG.
    monkeypatch.setenv("POLYGON_API_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "mia"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    clock = ManualClock(T0)
    events: list = []
    errors: list[BaseException] = []

    async def sleep(s: float) -> None:
        clock.advance(int(s * 1e9))
        await asyncio.sleep(0)

    async def scenario() -> None:
        with PolygonSimulator(seed=2, api_key=KEY, clock=clock, calls_per_minute=5) as sim:
            client = PolygonClient(sim.url, plan="developer", clock=clock, sleep=sleep, max_retries=2,
                                   backoff_initial_s=0.1)
            poller = PolygonPoller(client, ("SPX",), emit=events.append, clock=clock, expiry_days=1,
                                   strike_window=0.01, limit=25)
            # Act: success with paging and 429s, then 5xx, malformed, a loop and a 403.
            await poller.poll_once("SPX")
            sim.faults.error_count = 100
            await poller.poll_once("SPX")
            sim.faults.error_count = 0
            sim.faults.malformed_count = 1
            await poller.poll_once("SPX")
            sim.faults.next_url_loop = True
            await poller.poll_once("SPX")
            sim.faults.not_entitled = True
            await poller.poll_once("SPX")
            for fault in ({"not_entitled": True}, {"error_count": 100}):
                sim.faults.not_entitled = False
                for k, v in fault.items():
                    setattr(sim.faults, k, v)
                try:
                    await client.fetch_chain("SPX", expiry_days=0)
                except MiaError as exc:
                    errors.append(exc)
            await client.aclose()
        # a server that echoes the key in a next_url and in its error text
        def handler(request: httpx.Request) -> httpx.Response:
            if "cursor" not in request.url.params:
                return httpx.Response(200, json={"status": "OK", "request_id": "a", "results": [],
                                                 "next_url": f"https://api.polygon.io/v3/x?cursor=1&apiKey={KEY}"})
            return httpx.Response(418, json={"status": "ERROR", "request_id": "b", "error": f"bad key {KEY}"})
        echo = PolygonClient("http://127.0.0.1:9", transport=httpx.MockTransport(handler), clock=clock, sleep=sleep)
        echo_poller = PolygonPoller(echo, ("SPX",), emit=events.append, clock=clock, expiry_days=None,
                                    strike_window=None)
        await echo_poller.poll_once("SPX")
        try:
            await echo.fetch_chain("SPX", expiry_days=None, strike_window=None)
        except MiaError as exc:
            errors.append(exc)
        await echo.aclose()

    asyncio.run(scenario())

    # Assert: the scenario exercised what it meant to, and the key is nowhere.
    kinds = {type(e).__name__ for e in events}
    assert {"PolygonResponse", "SourceError", "FeedStatus"} <= kinds
    assert len(errors) == 3 and len(caplog.records) > 10
    assert any(r.name.startswith("httpx") for r in caplog.records)
    codec = EventCodec()
    out = tmp_path / "mia-data" / "polygon.events"
    out.parent.mkdir()
    out.write_bytes(codec.encode_many(events))
    assert KEY.encode() not in out.read_bytes()
    for ev in events:
        assert KEY.encode() not in codec.encode(ev)
    assert any(KEY not in str(e) and "<redacted>" in str(e) for e in errors)
    for e in errors:
        assert KEY not in str(e) and KEY not in repr(e)
    assert KEY not in caplog.text
    for record in caplog.records:
        assert KEY not in record.getMessage()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes()
