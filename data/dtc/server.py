"""A DTC exchange simulator: a real asyncio TCP DTC server on loopback.

It speaks the binary, JSON and compact JSON encodings (the encoding request is answered in
binary, as Sierra Chart does), logs clients on, heartbeats, answers security definitions and
market-data / depth subscriptions (a MARKET_DATA_SNAPSHOT, then a 10-level depth snapshot
batch), then streams trades, bid/ask updates, batched depth updates and session statistics.

Microstructure: each symbol's mid follows ``mia.data.market_path.price_at(seed, root, t)``
(root from the symbol prefix: ES, NQ, VX/VIX), so the Polygon simulator's SPX moves with ES under
the same seed. The book re-centres on that mid in batches; trades come in bursts with
heavy-tailed sizes, buyers lift the best ask and sellers hit the best bid, consuming the book.
Everything is drawn from ``random.Random`` seeded by ``seed``; with a ManualClock a run is fully
deterministic.

Faults for tests: ``drop_links()``, ``stall_heartbeats(seconds)`` (the server goes silent but
keeps the socket), ``send_garbage()``, ``send_oversized()``, ``set_feed_available(bool)``,
``reject_symbols`` (a set; unknown roots are rejected too), ``reject_logons(result, text)``.

Historical data port (``historical_port``; None: not served): every trade the markets generate
is kept per symbol (``history``, bounded by ``history_limit``), subscribed or not, and a DTC
historical client gets them back as tick records (804) for a time range, zlib-compressed when
it asks; ``reject_historical(text, code)`` switches to answering every request with a 802.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import math
import random
import zlib
from dataclasses import dataclass, field
from typing import Final

from mia.data.cfe import MONTH_CODES, vx_expiry
from mia.data.market_path import price_at, vx_at
from mia.engine.clock import NS_PER_DAY, NS_PER_MS, NS_PER_S, Clock, SystemClock
from mia.engine.errors import ProtocolError

from . import protocol as p

logger = logging.getLogger(__name__)

BOOK_LEVELS: Final = 10
TICK_S: Final = 0.001  # generator period

# root: (tick size, currency value per tick, description, typical level size)
CONTRACTS: Final = {
    "ES": (0.25, 12.5, "E-mini S&P 500 Futures", 40),
    "NQ": (0.25, 5.0, "E-mini Nasdaq-100 Futures", 8),
    "VIX": (0.05, 50.0, "Cboe VIX Futures", 60),
    "VIXIDX": (0.01, 1.0, "Cboe Volatility Index", 25),  # the index: a value, no real book
}
VIX_INDEX_SYMBOLS: Final = frozenset({"VIX", "$VIX", ".VIX", "VIX.XO", "^VIX"})


def vx_contract_expiry_ns(symbol: str, t_ns: int) -> int | None:
    """Final settlement (09:30 New York ~ 13:30/14:30 UTC; 14:00 UTC here) of "VXZ6"-style
    symbols: the month code and year digit, the decade the one nearest on or after t_ns."""
    s = symbol.upper()
    if len(s) < 4 or not s.startswith("VX") or s[2] not in MONTH_CODES or not s[3].isdigit():
        return None
    month = MONTH_CODES.index(s[2]) + 1
    year_now = 1970 + int(t_ns // (NS_PER_DAY * 36525 // 100))
    year = year_now - year_now % 10 + int(s[3])
    if year < year_now - 1:
        year += 10
    day = vx_expiry(year, month)
    return (day - dt.date(1970, 1, 1)).days * NS_PER_DAY + 14 * 3600 * NS_PER_S


def root_of(symbol: str) -> str | None:
    s = symbol.upper()
    if s in VIX_INDEX_SYMBOLS:
        return "VIXIDX"
    if s.startswith(("VX", "VIX")):
        return "VIX"
    if s.startswith("ES"):
        return "ES"
    if s.startswith("NQ"):
        return "NQ"
    return None


Level = list  # [price, quantity, orders]


class _Market:
    """One symbol's book and session, moved by ``step``; returns message templates."""

    def __init__(self, symbol: str, root: str, seed: int, t_ns: int) -> None:
        self.symbol, self.root, self.seed = symbol, root, seed
        self.tick, self.tick_value, self.description, self.depth_size = CONTRACTS[root]
        self.rng = random.Random(f"{seed}:{symbol}")
        # VX futures price the VIX curve at their expiry (contango); everything else its path
        self.expiry_ns = vx_contract_expiry_ns(symbol, t_ns) if root == "VIX" else None
        self.bids: list[Level] = []  # best first
        self.asks: list[Level] = []
        self.open = self.high = self.low = math.nan
        self.volume = 0.0
        self.num_trades = 0
        self.last = math.nan
        self._recentre(t_ns, [])
        self.open = self.high = self.low = self.last = self.mid()

    def target(self, t_ns: int) -> float:
        if self.expiry_ns is not None:
            return vx_at(self.seed, self.expiry_ns, t_ns)
        return price_at(self.seed, "VIX" if self.root == "VIXIDX" else self.root, t_ns)

    def q(self, price: float) -> float:
        return round(round(price / self.tick) * self.tick, 6)

    def mid(self) -> float:
        return (self.bids[0][0] + self.asks[0][0]) / 2 if self.bids and self.asks else math.nan

    def _qty(self) -> float:
        return float(max(1, int(self.rng.expovariate(1.0 / self.depth_size))))

    def _recentre(self, t_ns: int, changes: list) -> None:
        """Move the book onto the path's mid: drop levels outside, insert missing ones."""
        target = self.target(t_ns)
        best_bid = self.q(math.floor(target / self.tick) * self.tick)
        if self.bids and self.asks and self.bids[0][0] < target < self.asks[0][0] \
                and len(self.bids) == BOOK_LEVELS and len(self.asks) == BOOK_LEVELS:
            return
        want_bids = [self.q(best_bid - i * self.tick) for i in range(BOOK_LEVELS)]
        want_asks = [self.q(best_bid + (i + 1) * self.tick) for i in range(BOOK_LEVELS)]
        for side, book, want in ((p.AT_BID, self.bids, want_bids), (p.AT_ASK, self.asks, want_asks)):
            have = {lv[0]: lv for lv in book}
            for price in [pr for pr in have if pr not in want]:
                changes.append((side, price, 0.0, 0, p.DEPTH_DELETE))
            new = []
            for price in want:
                lv = have.get(price)
                if lv is None:
                    lv = [price, self._qty(), self.rng.randint(1, 12)]
                    changes.append((side, price, lv[1], lv[2], p.DEPTH_INSERT_UPDATE))
                new.append(lv)
            book[:] = new

    def step(self, t_ns: int) -> tuple[list, list, list, bool]:
        """One market event. Returns (trades, depth changes, session updates, top changed)."""
        rng = self.rng
        trades: list = []
        changes: list = []
        stats: list = []
        top_before = (self.bids[0][0], self.bids[0][1], self.asks[0][0], self.asks[0][1])
        if rng.random() < 0.35:
            buy = rng.random() < 0.5
            book = self.asks if buy else self.bids
            side = p.AT_ASK if buy else p.AT_BID
            burst = 1 + min(int(rng.expovariate(0.7)), 8)
            for _ in range(burst):
                if not book:
                    break
                lv = book[0]
                # heavy-tailed: most prints are 1-3 lots, a few sweep a level
                size = float(min(int(rng.paretovariate(1.3)), 250))
                size = min(size, lv[1])
                trades.append((lv[0], size, side))
                self.volume += size
                self.num_trades += 1
                self.last = lv[0]
                lv[1] -= size
                if lv[1] <= 0:
                    book.pop(0)
                    changes.append((side, lv[0], 0.0, 0, p.DEPTH_DELETE))
                else:
                    lv[2] = max(1, lv[2] - (1 if rng.random() < 0.3 else 0))
                    changes.append((side, lv[0], lv[1], lv[2], p.DEPTH_INSERT_UPDATE))
            if self.last > self.high:
                self.high = self.last
                stats.append(p.MARKET_DATA_UPDATE_SESSION_HIGH)
            if self.last < self.low:
                self.low = self.last
                stats.append(p.MARKET_DATA_UPDATE_SESSION_LOW)
            if rng.random() < 0.1:
                stats.append(p.MARKET_DATA_UPDATE_SESSION_VOLUME)
        else:
            for _ in range(rng.randint(1, 3)):
                buy = rng.random() < 0.5
                book = self.bids if buy else self.asks
                i = min(int(rng.expovariate(0.4)), len(book) - 1)
                lv = book[i]
                lv[1] = max(1.0, lv[1] + rng.choice((-1, 1)) * float(1 + int(rng.paretovariate(1.5))))
                lv[2] = max(1, lv[2] + rng.choice((-1, 0, 1)))
                changes.append((p.AT_BID if buy else p.AT_ASK, lv[0], lv[1], lv[2],
                                p.DEPTH_INSERT_UPDATE))
        self._recentre(t_ns, changes)
        top_after = (self.bids[0][0], self.bids[0][1], self.asks[0][0], self.asks[0][1])
        return trades, changes, stats, top_after != top_before

    def levels(self) -> tuple[tuple, tuple]:
        return (tuple((lv[0], lv[1], lv[2]) for lv in self.bids),
                tuple((lv[0], lv[1], lv[2]) for lv in self.asks))


@dataclass
class ConnectionRecord:
    """What the simulator sent on one connection (for loss and book checks)."""

    peer: str
    encoding: int = p.BINARY_ENCODING
    counts: dict[str, int] = field(default_factory=dict)  # symbol -> market messages sent
    trades: dict[str, list[tuple[float, float, int]]] = field(default_factory=dict)
    books: dict[str, list[tuple[tuple, tuple]]] = field(default_factory=dict)  # after each batch


class _Connection(asyncio.Protocol):
    """One client connection of the simulator."""

    def __init__(self, sim: "DtcSimulator") -> None:
        self.sim = sim
        self.codec = p.DtcCodec(role="server")
        self.transport: asyncio.Transport | None = None
        self.logged_on = False
        self.heartbeat_s = 5.0
        self.md: dict[str, int] = {}  # symbol -> client SymbolID
        self.depth: dict[str, int] = {}
        self.out = bytearray()
        self.record = ConnectionRecord(peer="")
        self._hb_task: asyncio.Task | None = None

    # --- transport ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.record.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.sim._connections.add(self)
        self.sim.records.append(self.record)

    def connection_lost(self, exc: Exception | None) -> None:
        self.sim._connections.discard(self)
        if self._hb_task is not None:
            self._hb_task.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            msgs = self.codec.feed(data)
        except ProtocolError as exc:
            logger.warning("dtc sim: client sent bad bytes peer=%s error=%s", self.record.peer, exc)
            self.transport.abort()  # type: ignore[union-attr]
            return
        for msg in msgs:
            self._on_message(msg)
        self.flush()

    def send(self, msg: p.DtcMessage | p.RawMessage) -> None:
        self.out += self.codec.encode(msg)

    def flush(self) -> None:
        if self.out and self.transport is not None and not self.transport.is_closing():
            if not self.sim._stalled():
                self.transport.write(bytes(self.out))
        self.out.clear()

    # --- requests ----------------------------------------------------------------------------

    def _on_message(self, msg) -> None:
        sim = self.sim
        t = p.message_type(msg)
        if t == p.ENCODING_REQUEST:
            enc = msg.encoding if msg.encoding in sim.encodings else p.BINARY_ENCODING
            self.send(p.EncodingResponse(encoding=enc))  # binary; the codec switches after it
            self.record.encoding = enc
        elif t == p.LOGON_REQUEST:
            self._logon(msg)
        elif not self.logged_on:
            self.send(p.Logoff(reason="logon first", do_not_reconnect=0))
            self.flush()
            self.transport.close()  # type: ignore[union-attr]
        elif t == p.HEARTBEAT:
            pass
        elif t == p.LOGOFF:
            self.transport.close()  # type: ignore[union-attr]
        elif t == p.MARKET_DATA_REQUEST:
            sim._market_data_request(self, msg)
        elif t == p.MARKET_DEPTH_REQUEST:
            sim._market_depth_request(self, msg)
        elif t == p.SECURITY_DEFINITION_FOR_SYMBOL_REQUEST:
            sim._security_definition(self, msg)

    def _logon(self, msg) -> None:
        sim = self.sim
        result, text = sim._logon_result
        if result == p.LOGON_SUCCESS and sim.credentials is not None \
                and (msg.username, msg.password) != sim.credentials:
            result, text = p.LOGON_ERROR, "bad username or password"
        self.send(p.LogonResponse(
            result=result, result_text=text, server_name="mia DTC simulator",
            reconnect_address=sim._reconnect_address, market_depth_updates_best_bid_and_ask=0,
            trading_is_supported=0, oco_orders_supported=0, order_cancel_replace_supported=0,
            security_definitions_supported=1, historical_price_data_supported=0,
            resubscribe_when_market_data_feed_available=1, market_depth_is_supported=1,
            market_data_supported=1))
        if result != p.LOGON_SUCCESS:
            self.flush()
            self.transport.close()  # type: ignore[union-attr]
            return
        self.logged_on = True
        self.heartbeat_s = sim.heartbeat_s or float(max(1, msg.heartbeat_interval_in_seconds))
        self._hb_task = asyncio.get_running_loop().create_task(self._heartbeats())
        if not sim.feed_available:
            self.send(p.MarketDataFeedStatus(status=p.FEED_STATUS_UNAVAILABLE))

    async def _heartbeats(self) -> None:
        while self.transport is not None and not self.transport.is_closing():
            await asyncio.sleep(self.heartbeat_s)
            self.send(p.Heartbeat(current_date_time=self.sim.clock.now_ns() // NS_PER_S))
            self.flush()


class _HistoricalConnection(asyncio.Protocol):
    """One client of the historical port: logon, one tick request, the answer, then close
    (OneHistoricalPriceDataRequestPerConnection, as a compressed answer makes the socket
    single-use anyway)."""

    def __init__(self, sim: "DtcSimulator") -> None:
        self.sim = sim
        self.codec = p.DtcCodec(role="server")
        self.transport: asyncio.Transport | None = None
        self.logged_on = False
        self.answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.sim._historical_connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.sim._historical_connections.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            msgs = self.codec.feed(data)
        except ProtocolError as exc:
            logger.warning("dtc sim historical: client sent bad bytes error=%s", exc)
            self.transport.abort()  # type: ignore[union-attr]
            return
        for msg in msgs:
            if self.answered or self.transport is None or self.transport.is_closing():
                return
            self._on_message(msg)

    def _write(self, msg) -> None:
        self.transport.write(self.codec.encode(msg))  # type: ignore[union-attr]

    def _on_message(self, msg) -> None:
        sim = self.sim
        t = p.message_type(msg)
        if t == p.ENCODING_REQUEST:
            enc = msg.encoding if msg.encoding in sim.encodings else p.BINARY_ENCODING
            self._write(p.EncodingResponse(encoding=enc))
        elif t == p.LOGON_REQUEST:
            result, text = sim._logon_result
            if result == p.LOGON_SUCCESS and sim.credentials is not None \
                    and (msg.username, msg.password) != sim.credentials:
                result, text = p.LOGON_ERROR, "bad username or password"
            self._write(p.LogonResponse(
                result=result, result_text=text, server_name="mia DTC simulator (historical)",
                reconnect_address=sim._reconnect_address, trading_is_supported=0,
                oco_orders_supported=0, order_cancel_replace_supported=0,
                security_definitions_supported=0, historical_price_data_supported=1,
                resubscribe_when_market_data_feed_available=0, market_depth_is_supported=0,
                one_historical_price_data_request_per_connection=1, market_data_supported=0))
            if result != p.LOGON_SUCCESS:
                self.transport.close()  # type: ignore[union-attr]
                return
            self.logged_on = True
        elif not self.logged_on:
            self._write(p.Logoff(reason="logon first", do_not_reconnect=0))
            self.transport.close()  # type: ignore[union-attr]
        elif t == p.HISTORICAL_PRICE_DATA_REQUEST:
            self.answered = True
            sim._historical_answer(self, msg)
            self.transport.close()  # type: ignore[union-attr]
        elif t == p.LOGOFF:
            self.transport.close()  # type: ignore[union-attr]


class DtcSimulator:
    """A DTC server on ``host:port`` (port 0: the OS picks; read ``.port`` after ``start``).

    ``rate`` is market messages per second over all symbols. ``heartbeat_s`` overrides the
    interval the client asks for (tests use sub-second heartbeats; DTC's field is whole seconds).
    ``record_books`` keeps every book sent after each batch, per connection (tests only).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, seed: int = 0, rate: float = 1000.0,
                 clock: Clock | None = None, heartbeat_s: float | None = None,
                 record_books: bool = False, credentials: tuple[str, str] | None = None,
                 encodings: tuple[int, ...] = (p.BINARY_ENCODING, p.JSON_ENCODING,
                                               p.JSON_COMPACT_ENCODING),
                 historical_port: int | None = 0, history_limit: int = 2_000_000) -> None:
        self.host = host
        self._port = port
        self.seed = seed
        self.rate = rate
        self.clock = clock or SystemClock()
        self.heartbeat_s = heartbeat_s
        self.record_books = record_books
        self.credentials = credentials
        self.encodings = encodings
        self.reject_symbols: set[str] = set()
        self.silent_symbols: set[str] = set()  # subscribed fine, but send nothing (a silent VIX feed)
        self.feed_available = True
        self.records: list[ConnectionRecord] = []
        self.sent_counts: dict[str, int] = {}
        self.sent_trades: dict[str, list[tuple[float, float, int]]] = {}
        self.steps = 0
        self._markets: dict[str, _Market] = {}
        self._connections: set[_Connection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._gen_task: asyncio.Task | None = None
        self._stall_until = 0.0
        self._logon_result = (p.LOGON_SUCCESS, "welcome")
        self._reconnect_address = ""
        # historical port: every generated trade, (t_ns, price, size, AtBidOrAsk) per symbol
        self._historical_port = historical_port
        self._historical_server: asyncio.AbstractServer | None = None
        self._historical_connections: set[_HistoricalConnection] = set()
        self.history_limit = history_limit
        self.history: dict[str, collections.deque] = {}
        self.historical_requests: list[dict] = []  # what was asked (tests)
        self._historical_reject: tuple[str, int, int] | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def historical_port(self) -> int | None:
        """The historical data port (None when not served); read after ``start``."""
        return self._historical_port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), self.host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        if self._historical_port is not None:
            self._historical_server = await loop.create_server(
                lambda: _HistoricalConnection(self), self.host, self._historical_port)
            self._historical_port = self._historical_server.sockets[0].getsockname()[1]
        self._gen_task = loop.create_task(self._generate())
        logger.info("dtc sim listening host=%s port=%d seed=%d rate=%.0f", self.host, self._port,
                    self.seed, self.rate)

    async def stop(self) -> None:
        if self._gen_task is not None:
            self._gen_task.cancel()
            try:
                await self._gen_task
            except asyncio.CancelledError:
                pass
        for conn in [*self._connections, *self._historical_connections]:
            if conn.transport is not None:
                conn.transport.abort()
        for server in (self._server, self._historical_server):
            if server is not None:
                server.close()
                await server.wait_closed()

    async def __aenter__(self) -> "DtcSimulator":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    # --- inspection --------------------------------------------------------------------------

    def book(self, symbol: str) -> tuple[tuple, tuple]:
        """(bids best first, asks best first), each level (price, size, orders)."""
        return self._market(symbol).levels()

    def write_sent(self, path: str) -> None:
        """Write what each connection was sent (in connection order) as JSON, atomically:
        ``{"connections": [{"peer", "counts": {sym: n}, "trades": {sym: [[price, size,
        at_bid_or_ask], ...]}}]}``."""
        import json
        import os

        body = {"connections": [{"peer": r.peer, "counts": r.counts, "trades": r.trades}
                                for r in self.records]}
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(body, f)
        os.replace(tmp, path)

    # --- faults ------------------------------------------------------------------------------

    def drop_links(self) -> None:
        for conn in list(self._connections):
            conn.transport.abort()  # type: ignore[union-attr]

    def stall_heartbeats(self, seconds: float) -> None:
        """Go silent (no heartbeats, no data) for ``seconds`` while keeping every socket open."""
        self._stall_until = asyncio.get_running_loop().time() + seconds

    def send_garbage(self) -> None:
        rng = random.Random(self.seed)
        junk = bytes(rng.randrange(256) for _ in range(64))
        for conn in list(self._connections):
            if conn.codec.encoding == p.BINARY_ENCODING:
                conn.transport.write(b"\x02\x00\xff\x7f" + junk)  # type: ignore[union-attr]
            else:
                conn.transport.write(b"{garbage" + junk.replace(b"\0", b"x") + b"\0")  # type: ignore[union-attr]

    def send_oversized(self) -> None:
        for conn in list(self._connections):
            conn.transport.write(b"\xff\xff\x60\xea" + bytes(64))  # type: ignore[union-attr]

    def set_feed_available(self, available: bool) -> None:
        """Feed outage: tell every client; subscriptions are dropped (clients resubscribe)."""
        self.feed_available = available
        status = p.FEED_STATUS_AVAILABLE if available else p.FEED_STATUS_UNAVAILABLE
        for conn in list(self._connections):
            if conn.logged_on:
                if not available:
                    conn.md.clear()
                    conn.depth.clear()
                conn.send(p.MarketDataFeedStatus(status=status))
                conn.flush()

    def reject_logons(self, result: int = p.LOGON_ERROR, text: str = "rejected",
                      reconnect_address: str = "") -> None:
        """Answer later logons with ``result`` (LOGON_SUCCESS to go back to normal)."""
        self._logon_result = (result, text)
        self._reconnect_address = reconnect_address

    def reject_historical(self, text: str | None = "historical data not available",
                          code: int = 4, retry_s: int = 0) -> None:
        """Answer later historical requests with HISTORICAL_PRICE_DATA_REJECT(text, code)
        (code 1 = retry in ``retry_s`` seconds); ``None`` serves data again."""
        self._historical_reject = None if text is None else (text, code, retry_s)

    def _stalled(self) -> bool:
        return self._stall_until > 0 and asyncio.get_running_loop().time() < self._stall_until

    # --- requests ----------------------------------------------------------------------------

    def _market(self, symbol: str) -> _Market:
        m = self._markets.get(symbol)
        if m is None:
            root = root_of(symbol)
            if root is None:
                raise KeyError(symbol)
            m = self._markets[symbol] = _Market(symbol, root, self.seed, self.clock.now_ns())
        return m

    def _refusal(self, symbol: str) -> str:
        if not symbol:
            return "empty symbol"
        if symbol in self.reject_symbols:
            return f"symbol {symbol} not permitted"
        if root_of(symbol) is None:
            return f"unknown symbol {symbol}"
        if not self.feed_available:
            return "market data feed unavailable"
        return ""

    def _market_data_request(self, conn: _Connection, msg) -> None:
        if msg.request_action == p.UNSUBSCRIBE:
            conn.md = {s: i for s, i in conn.md.items() if i != msg.symbol_id}
            return
        refusal = self._refusal(msg.symbol)
        if refusal:
            conn.send(p.MarketDataReject(symbol_id=msg.symbol_id, reject_text=refusal))
            return
        m = self._market(msg.symbol)
        conn.md[msg.symbol] = msg.symbol_id
        t = self.clock.now_ns()
        conn.send(p.MarketDataSnapshot(
            symbol_id=msg.symbol_id, session_settlement_price=p.DBL_MAX,
            session_open_price=m.open, session_high_price=m.high, session_low_price=m.low,
            session_volume=m.volume, session_num_trades=m.num_trades, open_interest=p.UINT_MAX,
            bid_price=m.bids[0][0], bid_quantity=m.bids[0][1], ask_price=m.asks[0][0],
            ask_quantity=m.asks[0][1], last_trade_price=m.last, last_trade_volume=p.DBL_MAX,
            bid_ask_date_time=t / NS_PER_S, trading_session_date=(t - t % NS_PER_DAY) // NS_PER_S,
            trading_status=2))

    def _market_depth_request(self, conn: _Connection, msg) -> None:
        if msg.request_action == p.UNSUBSCRIBE:
            conn.depth = {s: i for s, i in conn.depth.items() if i != msg.symbol_id}
            return
        refusal = self._refusal(msg.symbol)
        if refusal:
            conn.send(p.MarketDepthReject(symbol_id=msg.symbol_id, reject_text=refusal))
            return
        m = self._market(msg.symbol)
        conn.depth[msg.symbol] = msg.symbol_id
        rows = [(p.AT_BID, i + 1, lv) for i, lv in enumerate(m.bids)] + \
               [(p.AT_ASK, i + 1, lv) for i, lv in enumerate(m.asks)]
        ts = self.clock.now_ns() / NS_PER_S
        for n, (side, level, lv) in enumerate(rows):
            conn.send(p.MarketDepthSnapshotLevel(
                symbol_id=msg.symbol_id, side=side, price=lv[0], quantity=lv[1], level=level,
                is_first_message_in_batch=int(n == 0), is_last_message_in_batch=int(n == len(rows) - 1),
                date_time=ts, num_orders=lv[2]))
        if not rows:
            conn.send(p.MarketDepthSnapshotLevel(symbol_id=msg.symbol_id, is_first_message_in_batch=1,
                                                 is_last_message_in_batch=1))
        if self.record_books:
            conn.record.books.setdefault(msg.symbol, []).append(m.levels())

    def _historical_answer(self, conn: _HistoricalConnection, msg) -> None:
        """Answer one HISTORICAL_PRICE_DATA_REQUEST: a reject, or the header then the ticks
        with StartDateTime <= t <= EndDateTime (whole seconds; 0 = unbounded), the last one
        flagged IsFinalRecord; after a header with UseZLibCompression = 1 every byte is one
        zlib stream."""
        rid = msg.request_id
        self.historical_requests.append({
            "symbol": msg.symbol, "start": msg.start_date_time, "end": msg.end_date_time,
            "interval": msg.record_interval, "zlib": msg.use_z_lib_compression})
        refusal, code, retry = "", 4, 0
        if self._historical_reject is not None:
            refusal, code, retry = self._historical_reject
        elif not msg.symbol or root_of(msg.symbol) is None or msg.symbol in self.reject_symbols:
            refusal = f"unknown symbol {msg.symbol}"
        elif msg.record_interval != 0:
            refusal, code = "this server serves ticks only (RecordInterval 0)", 2
        if refusal:
            conn._write(p.HistoricalPriceDataReject(request_id=rid, reject_text=refusal,
                                                    reject_reason_code=code,
                                                    retry_time_in_seconds=retry))
            return
        lo = msg.start_date_time * NS_PER_S if msg.start_date_time > 0 else 0
        hi = msg.end_date_time * NS_PER_S if msg.end_date_time > 0 else None
        ticks = [row for row in self.history.get(msg.symbol, ())
                 if row[0] >= lo and (hi is None or row[0] <= hi)]
        use_zlib = bool(msg.use_z_lib_compression) and bool(ticks)
        conn._write(p.HistoricalPriceDataResponseHeader(
            request_id=rid, record_interval=0, use_z_lib_compression=int(use_zlib),
            no_records_to_return=int(not ticks), int_to_float_price_divisor=1.0))
        if not ticks:
            return
        body = bytearray()
        last = len(ticks) - 1
        for i, (t, price, size, side) in enumerate(ticks):
            body += conn.codec.encode(p.HistoricalPriceDataTickRecordResponse(
                request_id=rid, date_time=t / NS_PER_S, at_bid_or_ask=side, price=price,
                volume=size, is_final_record=int(i == last)))
        data = zlib.compress(bytes(body)) if use_zlib else bytes(body)
        conn.transport.write(data)  # type: ignore[union-attr]

    def _security_definition(self, conn: _Connection, msg) -> None:
        root = root_of(msg.symbol)
        if root is None or msg.symbol in self.reject_symbols:
            conn.send(p.SecurityDefinitionReject(request_id=msg.request_id,
                                                 reject_text=f"unknown symbol {msg.symbol}"))
            return
        tick, tick_value, description, _ = CONTRACTS[root]
        conn.send(p.SecurityDefinitionResponse(
            request_id=msg.request_id, symbol=msg.symbol, exchange="CFE" if root == "VIX" else "CME",
            security_type=p.SECURITY_TYPE_FUTURES, description=description, min_price_increment=tick,
            price_display_format=2, currency_value_per_increment=tick_value, is_final_message=1,
            currency="USD", has_market_depth_data=1))

    # --- market generation -------------------------------------------------------------------

    async def _generate(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        done = 0
        while True:
            await asyncio.sleep(TICK_S)
            now = loop.time()
            due = int(self.rate * (now - start)) - done
            if due > self.rate * 0.05:  # after a pause, do not burst more than 50 ms worth
                start = now - done / self.rate
                due = int(self.rate * 0.05)
            if due <= 0 or not self._markets or self._stalled() or not self.feed_available:
                if self._stalled() or not self.feed_available:
                    start = now - done / self.rate
                continue
            done += self._produce(due)
            self._flush_all()

    def _produce(self, budget: int) -> int:
        """Step markets until about ``budget`` messages were produced; return how many."""
        produced = 0
        markets = list(self._markets.values())
        rng = markets[0].rng
        # write in small chunks: a message waits for at most ~50 µs worth of its successors
        chunk = max(1, int(self.rate / 20_000))
        unflushed = 0
        while produced < budget:
            m = markets[rng.randrange(len(markets))] if len(markets) > 1 else markets[0]
            t = self.clock.now_ns()
            trades, changes, stats, top_changed = m.step(t)
            self.steps += 1
            if trades:
                hist = self.history.get(m.symbol)
                if hist is None:
                    hist = self.history[m.symbol] = collections.deque(maxlen=self.history_limit)
                for price, size, side in trades:
                    hist.append((t, price, size, side))
            n = self._publish(m, t, trades, changes, stats, top_changed)
            produced += n
            unflushed += n
            if unflushed >= chunk:
                self._flush_all()
                unflushed = 0
        return produced

    def _flush_all(self) -> None:
        for conn in list(self._connections):
            conn.flush()

    def _publish(self, m: _Market, t: int, trades, changes, stats, top_changed) -> int:
        n_msgs = len(trades) + (1 if changes else 0) * len(changes) + len(stats) + int(top_changed)
        ts_s = t / NS_PER_S
        for conn in list(self._connections):
            md_id = conn.md.get(m.symbol)
            depth_id = conn.depth.get(m.symbol)
            if (md_id is None and depth_id is None) or m.symbol in self.silent_symbols:
                continue
            sent = 0
            rec = conn.record
            if md_id is not None:
                for price, size, side in trades:
                    conn.send(p.MarketDataUpdateTrade(symbol_id=md_id, at_bid_or_ask=side, price=price,
                                                      volume=size, date_time=ts_s))
                    rec.trades.setdefault(m.symbol, []).append((price, size, side))
                    self.sent_trades.setdefault(m.symbol, []).append((price, size, side))
                sent += len(trades)
            if depth_id is not None and changes:
                last = len(changes) - 1
                for i, (side, price, qty, orders, action) in enumerate(changes):
                    fin = p.FINAL_UPDATE_TRUE if i == last else (
                        p.FINAL_UPDATE_BEGIN_BATCH if i == 0 else p.FINAL_UPDATE_FALSE)
                    if m.root == "VIX":  # f64 prices: a 0.05 tick does not survive float32
                        conn.send(p.MarketDepthUpdateLevel(
                            symbol_id=depth_id, side=side, price=price, quantity=qty,
                            update_type=action, date_time=ts_s, num_orders=orders,
                            final_update_in_batch=fin))
                    else:
                        conn.send(p.MarketDepthUpdateLevelFloatWithMilliseconds(
                            symbol_id=depth_id, date_time=t // NS_PER_MS, price=price, quantity=qty,
                            side=side, update_type=action, num_orders=orders,
                            final_update_in_batch=fin))
                sent += len(changes)
                if self.record_books:
                    rec.books.setdefault(m.symbol, []).append(m.levels())
            if md_id is not None:
                if top_changed:
                    conn.send(p.MarketDataUpdateBidAsk(
                        symbol_id=md_id, bid_price=m.bids[0][0], bid_quantity=m.bids[0][1],
                        ask_price=m.asks[0][0], ask_quantity=m.asks[0][1], date_time=t // NS_PER_S))
                    sent += 1
                day = (t - t % NS_PER_DAY) // NS_PER_S  # the UTC day's start, in DTC seconds
                for kind in stats:
                    if kind == p.MARKET_DATA_UPDATE_SESSION_VOLUME:
                        conn.send(p.MarketDataUpdateSessionVolume(symbol_id=md_id, volume=m.volume,
                                                                  trading_session_date=day))
                    else:
                        price = m.high if kind == p.MARKET_DATA_UPDATE_SESSION_HIGH else m.low
                        cls = p.MESSAGE_TYPES[kind]
                        conn.send(cls(symbol_id=md_id, price=price, trading_session_date=day))
                sent += len(stats)
            rec.counts[m.symbol] = rec.counts.get(m.symbol, 0) + sent
            self.sent_counts[m.symbol] = self.sent_counts.get(m.symbol, 0) + sent
        return max(n_msgs, 1)


async def serve_forever(host: str = "127.0.0.1", port: int = 11099, *, seed: int = 0,
                        rate: float = 1000.0, symbols: tuple[str, ...] = ("ESZ6", "NQZ6", "VXZ6"),
                        ready: asyncio.Future | None = None, sent_path: str | None = None) -> None:
    """Run a simulator until cancelled (what ``mia sim`` calls). ``ready`` gets the port.

    With ``sent_path``, what was sent on every connection is written there as JSON on the way
    out (``DtcSimulator.write_sent``): the reference a crash test compares a recovered log with.
    """
    sim = DtcSimulator(host, port, seed=seed, rate=rate)
    for symbol in symbols:
        sim._market(symbol)  # the market moves from the start, subscribed or not
    await sim.start()
    if ready is not None and not ready.done():
        ready.set_result(sim.port)
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()
        if sent_path is not None:
            sim.write_sent(sent_path)
