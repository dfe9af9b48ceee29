"""A Polygon (Massive) WebSocket stream simulator: a real ``websockets`` server on loopback.

Paths ``/options`` and ``/indices`` speak the clusters' protocol (massive.com docs, WebSocket):
on connect ``[{"ev":"status","status":"connected",...}]``; ``{"action":"auth","params":KEY}`` is
answered ``auth_success`` or ``auth_failed`` (then closed); ``{"action":"subscribe","params":
"T.*,Q.O:SPXW..."}`` is acknowledged one ``success`` status per channel and ticker (quotes are
refused beyond QUOTE_LIMIT contracts per connection); data then arrives as JSON arrays of events.

Options trades (``T``) and quotes (``Q``) come from the chain simulator's model
(``mia.data.polygon.server``: its listing, IV surface and Black-Scholes prices on the shared
SPX/NDX paths at the moment of each frame, its ``nbbo`` rule; the listing and the trade weights
are rebuilt every few seconds); trades fall near the money and in the front expiry, at the bid,
the ask or between, with
a per-contract increasing sequence ``q``, occasional blocks and intermarket sweeps. Index values
(``V``) are the chain simulator's I:SPX, I:NDX and I:VIX once a second.

Faults (``.faults`` and the methods): ``drop()`` aborts every connection, ``stall(s)`` stops
reading and sending for s seconds (pings go unanswered), ``faults.malformed_count`` spoils the
next frames, ``faults.auth_fail`` refuses every key, ``faults.replay_on_subscribe`` resends the
last n trades to a new subscription (a server's repeats, which clients drop by ``(sym, q)``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from mia.engine.clock import NS_PER_MS, NS_PER_S, Clock

from .models import settlement_ns
from .server import (
    INDEXES,
    MIN_T_NS,
    SIM_API_KEY,
    YEAR_NS,
    PolygonSimulator,
    black_scholes,
    nbbo,
    skewed_iv,
)
from .stream import CLUSTER_INDICES, CLUSTER_OPTIONS, QUOTE_LIMIT

log = logging.getLogger(__name__)
# websockets logs every frame at DEBUG, clients' auth messages (keys) among them, and every
# connection opened or closed at INFO: a simulator's console (mia sim, mia demo) shows warnings only
_ws_logger = logging.getLogger(__name__ + ".websockets")
_ws_logger.setLevel(logging.WARNING)

DEFAULT_STREAM_PORT: Final = 8766
SWEEP_CONDITION: Final = 219  # the simulator's intermarket-sweep trade condition
REGULAR_CONDITION: Final = 232
BLOCK_PROBABILITY: Final = 0.01  # a trade of 1,000+ contracts
SWEEP_PROBABILITY: Final = 0.03
CHAIN_REFRESH_S: Final = 5.0
INDEX_INTERVAL_S: Final = 1.0
AUTH_TIMEOUT_S: Final = 10.0
EXCHANGES: Final = (300, 301, 302, 303, 304, 307, 308, 309, 312, 313, 316, 319, 322, 323, 325)
INDEX_TICKERS: Final = ("I:SPX", "I:NDX", "I:VIX")


@dataclass
class StreamFaults:
    """Switches tests flip while the server runs."""

    auth_fail: bool = False  # every auth answered auth_failed
    malformed_count: int = 0  # the next n data frames are spoiled (alternately cut off / a bad element)
    replay_on_subscribe: int = 0  # a new trade subscription first gets the last n trades again


class _Model:
    """One underlying's listing and trade weights, rebuilt every CHAIN_REFRESH_S; prices come
    from the chain simulator's own model at the moment of each frame (`prices`)."""

    def __init__(self, chain, underlying: str, seed: int) -> None:
        self.chain = chain
        self.spec = INDEXES[underlying]
        self.seed = seed
        self.index = {t: i for i, t in enumerate(chain.tickers)}
        self.settle = np.array([settlement_ns(e, bool(am)) for e, am in zip(chain.expiry, chain.root_am)],
                               dtype=np.int64)
        # where trades fall: near the money (gamma) and in the front expiries (OI-weighted)
        w = np.nan_to_num(chain.gamma * (chain.oi + 100.0) * chain.strike, nan=0.0)
        total = float(w.sum())
        self.cum = np.cumsum(w / total) if total > 0 else np.linspace(0, 1, len(w))

    def prices(self, rows: list[int], spot: float, now_ns: int) -> list[float]:
        """The chain simulator's price of `rows` at now_ns and spot: its IV surface and
        Black-Scholes, one vectorised call for a frame's contracts."""
        if not rows:
            return []
        idx = np.asarray(rows, dtype=np.int64)
        c = self.chain
        t = np.maximum(self.settle[idx] - now_ns, MIN_T_NS) / YEAR_NS
        k = c.strike[idx]
        iv = skewed_iv(self.spec, spot, k, t, seed=self.seed, now_ns=now_ns)
        return black_scholes(spot, k, t, iv, c.right[idx])[0].tolist()


class _Conn:
    def __init__(self, ws: ServerConnection, cluster: str) -> None:
        self.ws = ws
        self.cluster = cluster
        self.trades_all = False
        self.trades: set[str] = set()
        self.quotes: list[str] = []
        self.values: set[str] = set()
        self.all_values = False


class PolygonStreamSimulator:
    """`await start()` binds; `.url` is ws://HOST:PORT (clients add /options, /indices)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, seed: int = 0, api_key: str = SIM_API_KEY,
                 rate: float = 200.0, clock: Clock | None = None, chains: PolygonSimulator | None = None,
                 tick_s: float = 0.02, quote_share: float = 0.5, stamp_at_send: bool = False) -> None:
        self.host, self.port = host, port
        self.seed = seed
        self.rate = rate  # option messages (trades + quotes) per second per connection
        self.tick_s = tick_s
        self.quote_share = quote_share
        self.stamp_at_send = stamp_at_send  # `t` = the frame's send time (benchmarks), not its making
        self.faults = StreamFaults()
        self._api_key = api_key
        self._clock = clock
        self._chains = chains or PolygonSimulator(host, 0, seed=seed, clock=clock)
        self._rng = random.Random(seed)
        self._server: Server | None = None
        self._conns: set[_Conn] = set()
        self._models: dict[str, _Model] = {}
        self._model_at: dict[str, float] = {}
        self._seq: dict[str, int] = collections.defaultdict(int)
        self._recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=4096)
        self._stalled_until = 0.0
        self._spoil_next = 0
        self._encoder = msgspec.json.Encoder()
        self.connections = 0  # accepted so far
        self.trades_sent = 0
        self.quotes_sent = 0
        self.values_sent = 0
        self.frames_sent = 0

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> "PolygonStreamSimulator":
        self._server = await serve(self._handler, self.host, self.port, compression=None, max_size=2**20,
                                   ping_interval=None, logger=_ws_logger)
        self.port = self._server.sockets[0].getsockname()[1]  # type: ignore[index]
        log.info("polygon stream simulator listening url=%s seed=%d", self.url, self.seed)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> "PolygonStreamSimulator":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def chains(self) -> PolygonSimulator:
        """The chain simulator whose prices and index paths the stream follows."""
        return self._chains

    @property
    def live_connections(self) -> int:
        return len(self._conns)

    def now_ns(self) -> int:
        return self._clock.now_ns() if self._clock is not None else time.time_ns()

    # --- faults ------------------------------------------------------------------------------

    def drop(self) -> int:
        """Abort every open connection (no close frame); returns how many."""
        n = 0
        for c in list(self._conns):
            c.ws.transport.abort()
            n += 1
        return n

    async def displace(self) -> int:
        """What Polygon does when a key opens one connection too many on a cluster: the older
        connections get a `max_connections` status and are closed. Returns how many."""
        n = 0
        for c in list(self._conns):
            await self._status(c.ws, "max_connections", "Maximum number of websocket connections exceeded. "
                                                       "You have reached the connection limit for your account.")
            await c.ws.close(1008, "max_connections")
            n += 1
        return n

    def stall(self, seconds: float) -> None:
        """Stop reading and sending on every connection for `seconds` (a hung link)."""
        self._stalled_until = time.monotonic() + seconds
        for c in list(self._conns):
            c.ws.transport.pause_reading()

    # --- connections -------------------------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        path = ws.request.path.split("?", 1)[0] if ws.request is not None else ""
        cluster = path.strip("/")
        if cluster not in (CLUSTER_OPTIONS, CLUSTER_INDICES):
            await ws.close(1008, f"unknown cluster {path!r}")
            return
        self.connections += 1
        await self._status(ws, "connected", "Connected Successfully")
        try:
            raw = await asyncio.wait_for(ws.recv(), AUTH_TIMEOUT_S)
            msg = msgspec.json.decode(raw)
        except (asyncio.TimeoutError, ConnectionClosed, msgspec.DecodeError):
            return
        if not (isinstance(msg, dict) and msg.get("action") == "auth"):
            await self._status(ws, "auth_failed", "authentication failed: auth first")
            await ws.close(1008, "not authenticated")
            return
        if self.faults.auth_fail or msg.get("params") != self._api_key:
            await self._status(ws, "auth_failed", "authentication failed")
            await ws.close(1008, "authentication failed")
            return
        await self._status(ws, "auth_success", "authenticated")
        conn = _Conn(ws, cluster)
        self._conns.add(conn)
        sender = asyncio.create_task(self._send_loop(conn))
        try:
            async for raw in ws:
                await self._on_request(conn, raw)
        except ConnectionClosed:
            pass
        finally:
            self._conns.discard(conn)
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    async def _status(self, ws: ServerConnection, status: str, message: str) -> None:
        await ws.send(self._encoder.encode([{"ev": "status", "status": status, "message": message}]).decode())

    async def _on_request(self, conn: _Conn, raw: str | bytes) -> None:
        try:
            msg = msgspec.json.decode(raw)
            action, params = msg["action"], str(msg.get("params", ""))
        except Exception:
            await self._status(conn.ws, "error", "invalid message")
            return
        if action not in ("subscribe", "unsubscribe"):
            await self._status(conn.ws, "error", f"unknown action {action!r}")
            return
        acks = []
        new_trades = False
        for item in filter(None, (p.strip() for p in params.split(","))):
            channel, _, ticker = item.partition(".")
            ok = (channel in ("T", "Q") if conn.cluster == CLUSTER_OPTIONS else channel in ("V", "A", "AM"))
            if not ok or not ticker:
                acks.append({"ev": "status", "status": "error", "message": f"invalid subscription: {item}"})
                continue
            sub = action == "subscribe"
            if channel == "T":
                if ticker == "*":
                    new_trades |= sub and not conn.trades_all
                    conn.trades_all = sub
                elif sub:
                    new_trades |= ticker not in conn.trades
                    conn.trades.add(ticker)
                else:
                    conn.trades.discard(ticker)
            elif channel == "Q":
                if sub and ticker not in conn.quotes:
                    if ticker == "*" or len(conn.quotes) >= QUOTE_LIMIT:
                        acks.append({"ev": "status", "status": "error",
                                     "message": f"max quote subscriptions ({QUOTE_LIMIT}) reached: {item}"})
                        continue
                    conn.quotes.append(ticker)
                elif not sub and ticker in conn.quotes:
                    conn.quotes.remove(ticker)
            elif channel == "V":
                if ticker == "*":
                    conn.all_values = sub
                elif sub:
                    conn.values.add(ticker)
                else:
                    conn.values.discard(ticker)
            word = "subscribed to" if sub else "unsubscribed to"
            acks.append({"ev": "status", "status": "success", "message": f"{word}: {item}"})
        if acks:
            await conn.ws.send(self._encoder.encode(acks).decode())
        n = self.faults.replay_on_subscribe
        if new_trades and n > 0 and self._recent:
            again = [m for m in list(self._recent)[-n:] if conn.trades_all or m["sym"] in conn.trades]
            if again:
                await conn.ws.send(self._encoder.encode(again).decode())

    # --- data --------------------------------------------------------------------------------

    async def _model(self, underlying: str) -> _Model:
        now = time.monotonic()
        model = self._models.get(underlying)
        if model is None or now - self._model_at.get(underlying, 0.0) >= CHAIN_REFRESH_S:
            t_s = self.now_ns() // NS_PER_S
            chains, seed = self._chains, self._chains.seed
            model = await asyncio.to_thread(lambda: _Model(chains.chain_at(underlying, t_s), underlying, seed))
            self._models[underlying] = model
            self._model_at[underlying] = now
        return model

    async def _send_loop(self, conn: _Conn) -> None:
        loop = asyncio.get_running_loop()
        carry = 0.0
        next_index = loop.time()
        next_tick = loop.time()
        while True:
            next_tick += self.tick_s
            delay = next_tick - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_tick = loop.time()  # behind: do not burst to catch up
            if self._stalled_until:
                if time.monotonic() < self._stalled_until:
                    continue
                self._stalled_until = 0.0
                for c in list(self._conns):
                    c.ws.transport.resume_reading()
            if conn.cluster == CLUSTER_INDICES:
                if loop.time() >= next_index:
                    next_index += INDEX_INTERVAL_S
                    await self._send(conn, self._values(conn))
                continue
            carry += self.rate * self.tick_s
            n = int(carry)
            carry -= n
            if n:
                await self._send(conn, await self._options(conn, n))

    async def _send(self, conn: _Conn, msgs: list[dict[str, Any]]) -> None:
        if not msgs:
            return
        if self.stamp_at_send:
            t_ms = self.now_ns() // NS_PER_MS
            for m in msgs:
                m["t"] = t_ms
        text = self._encoder.encode(msgs)
        if self.faults.malformed_count > 0:
            self.faults.malformed_count -= 1
            self._spoil_next += 1
            if self._spoil_next % 2:
                text = text[: max(1, len(text) // 2)]
            else:
                text = self._encoder.encode(msgs + [{"ev": "T", "sym": 5, "p": "x"}])
        self.frames_sent += 1
        await conn.ws.send(text.decode())

    def _values(self, conn: _Conn) -> list[dict[str, Any]]:
        now = self.now_ns()
        out = []
        for ticker in INDEX_TICKERS:
            if conn.all_values or ticker in conn.values:
                v = self._chains.index_value(ticker, now)
                if v is not None:
                    out.append({"ev": "V", "val": round(v, 2), "T": ticker, "t": now // NS_PER_MS})
        self.values_sent += len(out)
        return out

    async def _options(self, conn: _Conn, n: int) -> list[dict[str, Any]]:
        rng = self._rng
        now = self.now_ns()
        t_ms = now // NS_PER_MS
        n_quotes = sum(rng.random() < self.quote_share for _ in range(n)) if conn.quotes else 0
        n_trades = n - n_quotes if (conn.trades_all or conn.trades) else 0
        models = {u: await self._model(u) for u in INDEXES}
        spots = {u: self._chains.index_value(f"I:{u}", now) or m.chain.spot for u, m in models.items()}
        unders = list(INDEXES)
        # the frame's contracts first (trades near the money, quotes of the subscribed), then their
        # prices in one call per underlying, then the messages in the order drawn
        picks: list[tuple[str, str, int]] = []  # (kind, underlying, row)
        for _ in range(n_trades):
            u = unders[rng.random() < 0.3]  # SPX most of the flow
            m = models[u]
            i = min(int(np.searchsorted(m.cum, rng.random())), len(m.chain.tickers) - 1)
            if conn.trades_all or m.chain.tickers[i] in conn.trades:
                picks.append(("T", u, i))
        for _ in range(n_quotes):
            sym = conn.quotes[rng.randrange(len(conn.quotes))]
            u = "NDX" if sym.startswith("O:NDX") else "SPX"
            i = models[u].index.get(sym)
            if i is not None:
                picks.append(("Q", u, i))
        priced = {u: iter(models[u].prices([i for _, uu, i in picks if uu == u], spots[u], now)) for u in models}
        out: list[dict[str, Any]] = []
        for kind, u, i in picks:
            sym = models[u].chain.tickers[i]
            bid, ask = nbbo(next(priced[u]))
            self._seq[sym] += 1
            if kind == "T":
                r = rng.random()
                price = ask if r < 0.45 else bid if r < 0.9 else (bid + ask) / 2.0
                size = 1 + int(rng.expovariate(1 / 3.0))
                if rng.random() < BLOCK_PROBABILITY:
                    size = rng.randint(1000, 3000)
                cond = SWEEP_CONDITION if rng.random() < SWEEP_PROBABILITY else REGULAR_CONDITION
                msg = {"ev": "T", "sym": sym, "x": rng.choice(EXCHANGES), "p": round(max(price, 0.05), 2),
                       "s": size, "c": [cond], "t": t_ms, "q": self._seq[sym]}
                self._recent.append(msg)
                self.trades_sent += 1
            else:
                msg = {"ev": "Q", "sym": sym, "bx": rng.choice(EXCHANGES), "ax": rng.choice(EXCHANGES),
                       "bp": round(bid, 2), "ap": round(ask, 2), "bs": rng.randint(1, 60),
                       "as": rng.randint(1, 60), "t": t_ms, "q": self._seq[sym]}
                self.quotes_sent += 1
            out.append(msg)
        return out


async def serve_forever(host: str, port: int, *, seed: int = 0, rate: float = 200.0, tick_s: float = 0.02,
                        ready=None) -> None:
    """Run a simulator until cancelled (a process target for benchmarks); `ready` gets the port."""
    sim = await PolygonStreamSimulator(host, port, seed=seed, rate=rate, tick_s=tick_s).start()
    if ready is not None:
        ready.put(sim.port)
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()

