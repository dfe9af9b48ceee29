"""Resilient asyncio clients for Polygon's (Massive's) WebSocket streams, one per cluster.

Layers, as the DTC client's:

- ``websockets`` moves frames and keeps the link alive (its ping/pong: no pong within
  ``ping_timeout_s`` closes the connection, recorded as a heartbeat timeout).
- ``_Session`` is one connection: it stamps ``ts_recv`` once per message, appends the message as
  it came (``PolygonStreamFrame``), then the parser's events (``StreamParser``), and writes the
  ``Gap`` of an outage at the first data after it.
- ``PolygonStreamClient`` is the public API: connect, auth, subscribe, re-choose the quoted
  contracts as spot moves (``QuoteSelector``; each change a ``FeedStatus(FEED_SUBSCRIBED)``
  naming the added and removed tickers), reconnect with capped jittered backoff and subscribe
  again; a refused key raises ``StreamAuthError`` (no retry).

The key comes from the config or ``POLYGON_API_KEY`` only. It travels in the auth message, which
is never recorded or logged (``websockets``' own frame logging goes to a logger held at INFO),
and is redacted from anything the server sends back before it is recorded; error texts never
hold it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Callable, Final, Sequence
from urllib.parse import urlsplit

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.frames import CloseCode

from mia.engine.clock import Clock
from mia.engine.columns import snapshot_chain
from mia.engine.errors import ConfigError, ConnectionLostError, FeedError, MiaError
from mia.engine.events import (
    FEED_DISCONNECTED,
    FEED_HEARTBEAT_TIMEOUT,
    FEED_SUBSCRIBED,
    ChainSnapshot,
    Event,
    FeedStatus,
    Gap,
    IndexValue,
    OptionQuote,
    OptionTrade,
    PolygonStreamFrame,
)
from mia.engine.retry import backoff_s, settle_waiter, stopped_within

from .client import MIN_KEY_CHARS, REDACTED  # the REST client's rules: one each
from .models import plain_underlying
from .stream import (
    CLUSTER_INDICES,
    CLUSTER_OPTIONS,
    CLUSTERS,
    STATUS_AUTH_FAILED,
    STATUS_AUTH_SUCCESS,
    STATUS_MAX_CONNECTIONS,
    Listing,
    QuoteSelector,
    StreamParser,
    subscription_params,
)

logger = logging.getLogger(__name__)
# websockets logs every frame it sends at DEBUG, the auth message with the key among them: its
# logger for our connections never goes below INFO, whatever the root level (mia -v).
_ws_logger = logging.getLogger(__name__ + ".websockets")
_ws_logger.setLevel(logging.INFO)

DEFAULT_ROOTS: Final = ("SPX", "SPXW", "NDX", "NDXP")
DEFAULT_INDEX_TICKERS: Final = ("I:SPX", "I:NDX", "I:VIX")
SELECT_INTERVAL_S: Final = 1.0  # how often the quoted contracts are reconsidered
_DATA_EVENTS: Final = (OptionTrade, OptionQuote, IndexValue)


class StreamAuthError(FeedError):
    """The stream refused the key (`auth_failed`): retrying will not help."""


def stream_source(cluster: str) -> str:
    return f"polygon-ws:{cluster}"


class _Session:
    """One connection's receive side (see module doc)."""

    def __init__(self, client: "PolygonStreamClient", ws: ClientConnection, number: int) -> None:
        self.client = client
        self.ws = ws
        self.number = number

    async def recv_frame(self, timeout: float | None = None) -> list:
        raw = await (self.ws.recv(decode=False) if timeout is None
                     else asyncio.wait_for(self.ws.recv(decode=False), timeout))
        return self.client._on_frame(raw, self.number)

    async def pump(self) -> None:
        recv = self.ws.recv
        on_frame = self.client._on_frame
        number = self.number
        while True:
            on_frame(await recv(decode=False), number)


class PolygonStreamClient:
    """One cluster ("options" | "indices") of `base_url` ("wss://socket.polygon.io").

    Options: trades of every contract whose OCC root is in `roots` (``T.*``, the rest filtered
    out by the parser) or of the `trade_tickers` given, and quotes of the contracts `selector`
    chooses (fed spot and listings through ``tap``). Indices: values of `index_tickers`.
    ``await run()`` until ``await stop()``.
    """

    def __init__(self, base_url: str, cluster: str, *, api_key: str | None, emit: Callable[[Event], None],
                 clock: Clock, roots: Sequence[str] = DEFAULT_ROOTS, trade_tickers: Sequence[str] | None = None,
                 index_tickers: Sequence[str] = DEFAULT_INDEX_TICKERS, selector: QuoteSelector | None = None,
                 ping_interval_s: float = 10.0, ping_timeout_s: float = 10.0, connect_timeout_s: float = 10.0,
                 reconnect_initial_s: float = 0.5, reconnect_max_s: float = 30.0,
                 max_attempts: int | None = None) -> None:
        if cluster not in CLUSTERS:
            raise ConfigError(f"polygon stream cluster must be one of {CLUSTERS}, not {cluster!r}")
        parts = urlsplit(base_url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ConfigError(f"polygon stream URL must be ws://HOST:PORT or wss://HOST, not {base_url!r}")
        if not api_key:
            raise ConfigError("polygon streams need an API key: [polygon] api_key or POLYGON_API_KEY")
        if len(api_key) < MIN_KEY_CHARS:
            raise ConfigError(f"the Polygon API key is shorter than {MIN_KEY_CHARS} characters: not a key")
        self.base_url = base_url.rstrip("/")
        self.cluster = cluster
        self.url = f"{self.base_url}/{cluster}"
        self._key = api_key
        self._key_b = api_key.encode()
        self._redacted_b = REDACTED.encode()
        self._emit = emit
        self.clock = clock
        self.trade_tickers = None if trade_tickers is None else list(trade_tickers)
        self.index_tickers = list(index_tickers)
        self.selector = selector if cluster == CLUSTER_OPTIONS else None
        self.parser = StreamParser(self.source, roots=roots if cluster == CLUSTER_OPTIONS else None)
        self.ping_interval_s = ping_interval_s
        self.ping_timeout_s = ping_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        self.max_attempts = max_attempts
        self._proxy = None if parts.hostname in ("127.0.0.1", "localhost", "::1") else True
        self._stop = asyncio.Event()
        self._rng = random.Random()
        self._ws: ClientConnection | None = None
        self._authenticated: asyncio.Future | None = None
        self._quoted: frozenset[str] = frozenset()
        self._gap_from = 0  # ns of the loss whose Gap waits for the next data
        self._gap_reason = ""
        self._connections = 0
        self._ws_was_open = False  # the current connection got past auth
        self._displaced = False  # the server said max_connections: another client took the slot
        self.last_delay_s = 0.0  # the last reconnect delay chosen
        self.frames = 0
        self.reconnects = 0
        self.gaps = 0
        self.last_error = ""

    def __repr__(self) -> str:
        return f"PolygonStreamClient({self.url})"

    @property
    def source(self) -> str:
        return stream_source(self.cluster)

    @property
    def authenticated(self) -> asyncio.Future:
        """Resolves at the first auth_success (awaitable); fails with the run's error."""
        if self._authenticated is None:
            self._authenticated = asyncio.get_running_loop().create_future()
        return self._authenticated

    @property
    def quoted(self) -> frozenset[str]:
        """The option tickers whose quotes are subscribed now."""
        return self._quoted

    # --- spot and listings from other sources -------------------------------------------------

    def tap(self, emit: Callable[[Event], None]) -> Callable[[Event], None]:
        """`emit` that also feeds the quote selector the spots (IndexValue, ChainSnapshot) and
        listings (ChainSnapshot) passing through it."""
        selector = self.selector
        if selector is None:
            return emit

        def tapped(event: Event) -> None:
            cls = event.__class__
            if cls is IndexValue:
                selector.on_spot(plain_underlying(event.ticker), event.value)  # type: ignore[attr-defined]
            elif cls is ChainSnapshot:
                self.on_chain(event)  # type: ignore[arg-type]
            emit(event)

        return tapped

    def on_chain(self, snap: ChainSnapshot) -> None:
        """A chain snapshot's spot and contracts (read with the one ChainSnapshot reader); a
        snapshot whose columns do not agree is left out (the reducers report it)."""
        selector = self.selector
        if selector is None:
            return
        try:
            chain = snapshot_chain(snap)
        except MiaError:
            return
        selector.on_spot(chain.underlying, chain.spot)
        selector.on_listing(chain.underlying, Listing(chain.tickers, tuple(chain.strike.tolist()),
                                                      tuple(chain.expiry_ns.tolist())))

    # --- run ---------------------------------------------------------------------------------

    async def run(self) -> None:
        failures = 0
        _ = self.authenticated
        self._stop.clear()
        try:
            while not self._stop.is_set():
                reason = ""
                timeout = False
                ok = False
                try:
                    await self._connect_and_stream()
                    reason = "connection closed"
                    ok = True
                except StreamAuthError:
                    raise
                except ConnectionClosed as exc:
                    ok = self._ws_was_open
                    # no pong in time: websockets closes with 1011 "keepalive ping timeout"
                    timeout = exc.sent is not None and exc.sent.code == CloseCode.INTERNAL_ERROR \
                        and "keepalive" in exc.sent.reason
                    reason = self._redact_text(f"connection lost: {exc}")
                except (OSError, asyncio.TimeoutError, InvalidHandshake, InvalidURI, ConnectionLostError) as exc:
                    ok = self._ws_was_open
                    reason = self._redact_text(f"connect failed: {exc.__class__.__name__}: {exc}")
                finally:
                    ws, self._ws = self._ws, None
                    if ws is not None:
                        ws.transport.abort()
                if self._stop.is_set():
                    break
                self.last_error = reason
                now = self.clock.now_ns()
                if ok:  # a session that was up: the loss is recorded, the gap opens
                    failures = 1
                    if timeout:
                        self._emit(FeedStatus(now, now, self.source, FEED_HEARTBEAT_TIMEOUT,
                                              detail=f"no pong within {self.ping_timeout_s:g}s"))
                    self._emit(FeedStatus(now, now, self.source, FEED_DISCONNECTED, detail=reason))
                    if not self._gap_from:
                        self._gap_from, self._gap_reason = now, reason
                else:
                    failures += 1
                if self.max_attempts is not None and failures >= self.max_attempts:
                    raise ConnectionLostError(f"polygon {self.cluster} stream {self.url}: gave up after "
                                              f"{failures} attempts: {reason}")
                delay = backoff_s(failures, self.reconnect_initial_s, self.reconnect_max_s, self._rng)
                if self._displaced:  # another connection on this key took our place: do not take it back at once
                    self._displaced = False
                    delay = self.reconnect_max_s
                    logger.warning("polygon stream displaced cluster=%s: another connection uses this key "
                                   "(one per cluster); retrying in %.0fs", self.cluster, delay)
                self.last_delay_s = delay
                logger.info("polygon stream reconnect cluster=%s in=%.2fs attempt=%d reason=%s",
                            self.cluster, delay, failures, reason)
                await stopped_within(self._stop, delay)
        except BaseException as exc:
            settle_waiter(self._authenticated, exc)
            raise

    async def stop(self) -> None:
        self._stop.set()
        ws = self._ws
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(), 1.0)
            except (asyncio.TimeoutError, ConnectionClosed, OSError):
                ws.transport.abort()

    async def _connect_and_stream(self) -> None:
        self._ws_was_open = False
        ws = await connect(self.url, open_timeout=self.connect_timeout_s, ping_interval=self.ping_interval_s,
                           ping_timeout=self.ping_timeout_s, close_timeout=1.0, max_size=None,
                           proxy=self._proxy, logger=_ws_logger, user_agent_header="mia")
        self._ws = ws
        self._connections += 1
        if self._connections > 1:
            self.reconnects += 1
        session = _Session(self, ws, self._connections)
        # connected status, then auth: the answer decides (frames before it are recorded too)
        await session.recv_frame(self.connect_timeout_s)
        await ws.send(msgspec.json.encode({"action": "auth", "params": self._key}).decode())
        deadline = asyncio.get_running_loop().time() + self.connect_timeout_s
        while True:
            statuses = await session.recv_frame(max(0.0, deadline - asyncio.get_running_loop().time()))
            words = {s.status for s in statuses}
            if STATUS_AUTH_FAILED in words:
                text = next(s.message for s in statuses if s.status == STATUS_AUTH_FAILED)
                raise StreamAuthError(f"polygon {self.cluster} stream {self.url}: the key was refused: "
                                      f"{self._redact_text(text) or 'auth_failed'}")
            if STATUS_AUTH_SUCCESS in words:
                break
        self._ws_was_open = True
        if self._authenticated is not None and not self._authenticated.done():
            self._authenticated.set_result(True)
        logger.info("polygon stream up cluster=%s url=%s connection=%d", self.cluster, self.url, self._connections)
        await self._subscribe_all(ws)
        selecting = asyncio.create_task(self._select_loop(ws)) if self.selector is not None else None
        try:
            await session.pump()
        finally:
            if selecting is not None:
                selecting.cancel()
                await asyncio.gather(selecting, return_exceptions=True)

    async def _subscribe_all(self, ws: ClientConnection) -> None:
        if self.cluster == CLUSTER_INDICES:
            params = subscription_params("V", self.index_tickers)
        else:
            trades = subscription_params("T", self.trade_tickers) if self.trade_tickers is not None else "T.*"
            quotes = subscription_params("Q", sorted(self._quoted))
            params = ",".join(p for p in (trades, quotes) if p)
        if params:
            await ws.send(msgspec.json.encode({"action": "subscribe", "params": params}).decode())
            now = self.clock.now_ns()
            self._emit(FeedStatus(now, now, self.source, FEED_SUBSCRIBED,
                                  detail=f"connection {self._connections}: subscribe {self._short(params)}"))

    async def _select_loop(self, ws: ClientConnection) -> None:
        selector = self.selector
        assert selector is not None
        while True:
            new = selector.choose(self.clock.now_ns())
            if new is not None and new != self._quoted:
                added, removed = sorted(new - self._quoted), sorted(self._quoted - new)
                self._quoted = new
                if removed:
                    await ws.send(msgspec.json.encode(
                        {"action": "unsubscribe", "params": subscription_params("Q", removed)}).decode())
                if added:
                    await ws.send(msgspec.json.encode(
                        {"action": "subscribe", "params": subscription_params("Q", added)}).decode())
                now = self.clock.now_ns()
                spots = ", ".join(f"{u} {s:.2f}" for u, s in sorted(selector.spot.items()))
                self._emit(FeedStatus(now, now, self.source, FEED_SUBSCRIBED,
                                      detail=f"quotes: {len(new)} contracts ({spots}); added {len(added)}: "
                                             f"{','.join(added)}; removed {len(removed)}: {','.join(removed)}"))
            await asyncio.sleep(SELECT_INTERVAL_S)

    # --- frames ------------------------------------------------------------------------------

    def _on_frame(self, raw: bytes | str, connection: int) -> list:
        ts = self.clock.now_ns()
        if raw.__class__ is str:
            raw = raw.encode()  # type: ignore[union-attr]
        if self._key_b in raw:  # type: ignore[operator]
            raw = raw.replace(self._key_b, self._redacted_b)  # type: ignore[union-attr]
        emit = self._emit
        emit(PolygonStreamFrame(ts, ts, self.source, self.cluster, connection, raw))  # type: ignore[arg-type]
        self.frames += 1
        out: list[Event] = []
        statuses = self.parser.parse(raw, ts, out)
        if statuses and any(s.status == STATUS_MAX_CONNECTIONS for s in statuses):
            self._displaced = True
        if self._gap_from and out:
            for ev in out:
                if ev.__class__ in _DATA_EVENTS:
                    emit(Gap(ts, ts, self.source, self._gap_from, ts, self._gap_reason))
                    self.gaps += 1
                    self._gap_from = 0
                    break
        for ev in out:
            emit(ev)
        return statuses

    def _redact_text(self, text: str) -> str:
        return text.replace(self._key, REDACTED) if self._key else text

    @staticmethod
    def _short(params: str, limit: int = 400) -> str:
        return params if len(params) <= limit else params[:limit] + f"... ({params.count(',') + 1} in all)"


def stream_clients(base_url: str, *, api_key: str | None, clock: Clock,
                   emitter: Callable[[str], Callable[[Event], None]], underlyings: Sequence[str] = ("SPX", "NDX"),
                   quote_limit: int = 500, quote_expiries: int = 2,
                   index_tickers: Sequence[str] = DEFAULT_INDEX_TICKERS,
                   roots: Sequence[str] = DEFAULT_ROOTS) -> list[PolygonStreamClient]:
    """The options and indices clients of one key, wired: index values pick the quoted contracts.

    `emitter(source)` gives each its emit. Feed chains in with ``clients[0].tap(emit)``.
    """
    selector = QuoteSelector(list(underlyings), limit=quote_limit, expiries=quote_expiries)
    options = PolygonStreamClient(base_url, CLUSTER_OPTIONS, api_key=api_key, clock=clock, roots=roots,
                                  emit=emitter(stream_source(CLUSTER_OPTIONS)), selector=selector)
    clients = [options]
    if index_tickers:
        clients.append(PolygonStreamClient(base_url, CLUSTER_INDICES, api_key=api_key, clock=clock,
                                           index_tickers=index_tickers,
                                           emit=options.tap(emitter(stream_source(CLUSTER_INDICES)))))
    return clients

