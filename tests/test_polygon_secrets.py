"""The Polygon key never reaches events, logs (httpx and httpcore included), errors or files."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import httpx
import numpy as np
import pytest

from mia.data.polygon.client import PolygonClient
from mia.data.polygon.models import chain_columns
from mia.data.polygon.poller import PolygonPoller
from mia.data.polygon.server import PolygonSimulator
from mia.engine.clock import ManualClock
from mia.engine.errors import ConfigError, MiaError
from mia.engine.events import EventCodec, PolygonResponse, SourceError

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


class _Tap(httpx.AsyncBaseTransport):
    """A real HTTP transport that keeps each response body exactly as the server sent it."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.bodies: list[tuple[int, bytes]] = []  # (status, body)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        resp = await self.inner.handle_async_request(request)
        body = await resp.aread()
        self.bodies.append((resp.status_code, body))
        headers = [(k, v) for k, v in resp.headers.items() if k.lower() != "transfer-encoding"]
        return httpx.Response(resp.status_code, headers=headers, content=body, request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_recorded_bodies_are_the_servers_bytes_even_when_they_hold_the_keys_characters(
        caplog, capfd, monkeypatch):
    # Arrange: a key whose characters, all of them in order, occur in every chain body (a field
    # name). The old client replaced them in the stored body: every row lost the field, the chain
    # decoded without IVs and no gamma levels came out, without a word.
    key = "implied_volatility"
    monkeypatch.setenv("POLYGON_API_KEY", key)
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "mia"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    clock = ManualClock(T0)
    events: list = []
    errors: list[BaseException] = []

    async def sleep(s: float) -> None:
        clock.advance(int(s * 1e9))
        await asyncio.sleep(0)

    async def scenario() -> _Tap:
        tap = _Tap()
        with PolygonSimulator(seed=3, api_key=key, clock=clock) as sim:
            client = PolygonClient(sim.url, plan="developer", clock=clock, sleep=sleep, max_retries=1,
                                   backoff_initial_s=0.1, transport=tap)
            poller = PolygonPoller(client, ("SPX",), emit=events.append, clock=clock, expiry_days=1,
                                   strike_window=0.01, limit=25)
            # Act: a paged snapshot, then a failing one (error text we write)
            assert await poller.poll_once("SPX")
            sim.faults.error_count = 100
            assert not await poller.poll_once("SPX")
            try:
                await client.fetch_chain("SPX", expiry_days=0)
            except MiaError as exc:
                errors.append(exc)
            await client.aclose()
        return tap

    tap = asyncio.run(scenario())

    # Assert: every recorded body is byte for byte what the server sent, and holds the key's text
    pages = [e for e in events if isinstance(e, PolygonResponse)]
    assert len(pages) > 1 and pages[-1].final
    sent_200 = [body for status, body in tap.bodies if status == 200]
    assert [p.body for p in pages] == sent_200
    assert all(key.encode() in p.body for p in pages)
    chain = chain_columns(pages)
    assert len(chain) > 20 and np.isfinite(chain.iv).sum() > len(chain) // 2  # the IVs survived
    # ...and the key is still nowhere else: request path and query, errors, logs, stderr
    for p in pages:
        assert key not in p.path and key not in p.query
    source_errors = [e for e in events if isinstance(e, SourceError)]
    assert source_errors and errors
    for e in source_errors:
        assert key not in e.error and key not in e.fallback
    for e in errors:
        assert key not in str(e) and key not in repr(e)
    assert key not in caplog.text
    out, err = capfd.readouterr()
    assert key not in out and key not in err


def test_a_key_in_next_url_is_redacted_there_and_nowhere_else():
    # Arrange: a server (or proxy) that appends apiKey= to next_url, and whose rows hold text
    # that merely resembles the key
    key = "pk-S3CRET-7f3a9c"
    first = (b'{"status":"OK","request_id":"a","results":[{"details":{"ticker":"O:SPXW251218C06000000",'
             b'"note":"pk-S3CRET-7f3a9"}}],"next_url":"https://api.polygon.io/v3/snapshot/options/I:SPX'
             b'?cursor=YWJj&apiKey=' + key.encode() + b'"}')
    last = b'{"status":"OK","request_id":"b","results":[]}'

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=last if "cursor" in request.url.params else first)

    async def scenario():
        async with PolygonClient("http://127.0.0.1:9", api_key=key,
                                 transport=httpx.MockTransport(handler)) as client:
            return await client.fetch_chain("SPX", expiry_days=None, strike_window=None)

    # Act
    fetch = asyncio.run(scenario())

    # Assert: only the key's bytes inside next_url changed; the second page is untouched
    assert fetch.pages[0].body == first.replace(key.encode(), b"<redacted>")
    assert fetch.pages[1].body == last and fetch.pages[1].query == "cursor=YWJj"
    assert all(key.encode() not in p.body for p in fetch.pages)


@pytest.mark.parametrize("short", ["k", "Zq7#x", "Zq7#x_9"])
def test_a_key_too_short_to_be_real_is_refused_without_showing_it(short, monkeypatch):
    # Arrange / Act / Assert: passed in, or from the environment: a ConfigError that names the
    # variable and never the key
    with pytest.raises(ConfigError) as info:
        PolygonClient("http://127.0.0.1:9", api_key=short)
    monkeypatch.setenv("POLYGON_API_KEY", short)
    with pytest.raises(ConfigError) as from_env:
        PolygonClient("http://127.0.0.1:9")
    for exc in (info.value, from_env.value):
        assert "POLYGON_API_KEY" in str(exc) and "shorter than 8 characters" in str(exc)
        if len(short) > 1:
            assert short not in str(exc)
