"""Resilient asyncio DTC market-data client, in three layers.

- ``_DtcProtocol`` (asyncio.Protocol) only moves bytes between the socket and the session.
- ``_DtcSession`` is one connection: it owns the sans-IO codec, stamps ``ts_recv`` once per
  received packet, answers the handshake futures, sends heartbeats on its own timer and
  watches for silence (dead after twice the heartbeat interval), and hands market messages to
  the ``DtcEventMapper``.
- ``DtcClient`` is the public API: encoding request, logon, security definitions and
  subscriptions, reconnect with capped jittered backoff, resubscription with the same
  SymbolIDs, a ``Gap`` and a ``BOOK_CLEAR`` per instrument on every reconnect.

The DTC SymbolID of a symbol is its mia instrument id (``registry.id_for(symbol)``), so a
resubscription reuses it and events need no id translation. Credentials are held privately and
never appear in logs, events or error messages.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from typing import Callable, Final, Sequence

import msgspec

from mia.engine.clock import NS_PER_S, Clock
from mia.engine.errors import ConnectionLostError, ProtocolError
from mia.engine.events import (
    BOOK_CLEAR,
    FEED_CONNECTED,
    FEED_DISCONNECTED,
    FEED_HEARTBEAT_TIMEOUT,
    FEED_LOGGED_ON,
    FEED_SUBSCRIBED,
    BookLevel,
    Event,
    FeedStatus,
    Gap,
)
from mia.engine.instruments import InstrumentRegistry
from mia.engine.retry import backoff_s, settle_waiter, stopped_within

from . import protocol as p
from .convert import DtcEventMapper
from .errors import LogonRejectedError

logger = logging.getLogger(__name__)

DEAD_LINK_FACTOR: Final = 2.0  # silence longer than this many heartbeat intervals = dead link
LOGOFF_FLUSH_S: Final = 0.05

_CONTROL_TYPES: Final = frozenset({p.ENCODING_RESPONSE, p.LOGON_RESPONSE, p.LOGOFF})
_STATUS_TYPES: Final = frozenset({p.MARKET_DATA_REJECT, p.MARKET_DEPTH_REJECT, p.MARKET_DATA_FEED_STATUS})


class _Redirect(Exception):
    """LOGON_RECONNECT_NEW_ADDRESS: reconnect at once to another host:port."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        super().__init__(f"{host}:{port}")


class _DtcProtocol(asyncio.Protocol):
    """Moves bytes between the transport and the session; nothing else."""

    def __init__(self, session: "_DtcSession") -> None:
        self._session = session

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._session.connection_made(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self._session.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._session.connection_lost(exc)


class _DtcSession:
    """One TCP connection's DTC state (see module doc)."""

    def __init__(self, client: "DtcClient", where: str) -> None:
        self.client = client
        self.where = where
        self.loop = asyncio.get_running_loop()
        self.codec = p.DtcCodec(role="client")
        self.transport: asyncio.Transport | None = None
        self.encoding_fut: asyncio.Future = self.loop.create_future()
        self.logon_fut: asyncio.Future = self.loop.create_future()
        self.closed: asyncio.Future = self.loop.create_future()
        self.close_reason = "connection closed"
        self.last_rx = self.loop.time()
        self.logon_response = None
        self.logged_on = False
        self.do_not_reconnect = False
        self._keepalive: asyncio.Task | None = None

    # --- byte side ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.last_rx = self.loop.time()

    def data_received(self, data: bytes) -> None:
        client = self.client
        ts_recv = client.clock.now_ns()  # once per packet: every message in it shares it
        self.last_rx = self.loop.time()
        try:
            msgs = self.codec.feed(data)
        except ProtocolError as exc:
            self.abort(f"protocol error: {exc}")
            return
        out: list[Event] = []
        on_message = client._mapper.on_typed_message
        raw_type = p.RawMessage
        for msg in msgs:  # per market message: keep this loop lean
            t = msg.msg_type if isinstance(msg, raw_type) else msg.TYPE
            if t in _CONTROL_TYPES:
                self._on_control(msg, ts_recv, out)
            else:
                try:
                    on_message(t, msg, ts_recv, out)
                except (ValueError, TypeError, OverflowError) as exc:
                    # a message that framed but holds nonsense (e.g. JSON field types)
                    self.abort(f"protocol error: type {t}: {exc}")
                    break
                if t in _STATUS_TYPES:
                    client._on_status_message(msg, ts_recv, out)
        client.messages_received += len(msgs)
        emit = client._emit
        for ev in out:
            emit(ev)
        client.events_emitted += len(out)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.close_reason == "connection closed":
            self.close_reason = f"connection lost: {exc}"
        self._fail_pending(ConnectionLostError(f"dtc {self.where}: {self.close_reason}"))
        if self._keepalive is not None:
            self._keepalive.cancel()
        if not self.closed.done():
            self.closed.set_result(self.close_reason)

    # --- control messages --------------------------------------------------------------------

    def _on_control(self, msg, ts_recv: int, out: list[Event]) -> None:
        t = msg.TYPE
        if t == p.ENCODING_RESPONSE:
            if not self.encoding_fut.done():
                self.encoding_fut.set_result(msg.encoding)
        elif t == p.LOGON_RESPONSE:
            self.logon_response = msg
            if not self.logon_fut.done():
                self.logon_fut.set_result(msg)
        elif t == p.LOGOFF:
            self.do_not_reconnect = bool(msg.do_not_reconnect)
            self.close_reason = f"server logoff: {self.client._redact(msg.reason)}"
            self.transport.close()  # type: ignore[union-attr]
        # server text may echo what we sent: the raw copy goes to the log, so redact it first
        if t == p.LOGON_RESPONSE:
            msg = msgspec.structs.replace(msg, result_text=self.client._redact(msg.result_text))
        elif t == p.LOGOFF:
            msg = msgspec.structs.replace(msg, reason=self.client._redact(msg.reason))
        out.append(self.client._mapper.raw(msg, ts_recv))

    def send(self, msg: p.DtcMessage) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.codec.encode(msg))

    def abort(self, reason: str) -> None:
        self.close_reason = reason
        logger.warning("dtc link down host=%s reason=%s", self.where, reason)
        if self.transport is not None:
            self.transport.abort()

    def _fail_pending(self, exc: Exception) -> None:
        for fut in (self.encoding_fut, self.logon_fut):
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: nobody may be waiting on it any more

    # --- heartbeats --------------------------------------------------------------------------

    def start_keepalive(self, interval_s: float) -> None:
        self._keepalive = self.loop.create_task(self._keepalive_loop(interval_s))

    async def _keepalive_loop(self, interval_s: float) -> None:
        dead_after = DEAD_LINK_FACTOR * interval_s
        tick = min(interval_s, dead_after) / 4.0
        next_beat = self.loop.time()
        while self.transport is not None and not self.transport.is_closing():
            now = self.loop.time()
            if now >= next_beat:
                self.send(p.Heartbeat(current_date_time=self.client.clock.now_ns() // NS_PER_S))
                next_beat = now + interval_s
            silence = now - self.last_rx
            if silence > dead_after:
                ts = self.client.clock.now_ns()
                self.client._emit(FeedStatus(ts, ts, self.client.source, FEED_HEARTBEAT_TIMEOUT,
                                             detail=f"no data for {silence:.2f}s"))
                self.abort(f"heartbeat timeout after {silence:.2f}s")
                return
            await asyncio.sleep(tick)


class DtcClient:
    """Subscribes ``symbols`` (trades, BBO, depth) on one DTC server and emits mia events.

    ``await run()`` until ``await stop()``; it reconnects by itself. It raises
    ``LogonRejectedError(reconnect=False)`` on LOGON_ERROR_NO_RECONNECT and
    ``ConnectionLostError`` after ``max_attempts`` failed attempts in a row or on a server
    LOGOFF with DoNotReconnect.
    """

    def __init__(self, host: str, port: int, symbols: Sequence[str], *,
                 emit: Callable[[Event], None], clock: Clock, registry: InstrumentRegistry,
                 encoding: str = "binary", depth_levels: int = 10,
                 heartbeat_interval_s: float = 5.0, username: str | None = None,
                 password: str | None = None, client_name: str = "mia",
                 connect_timeout_s: float = 5.0, reconnect_initial_s: float = 0.5,
                 reconnect_max_s: float = 30.0, max_attempts: int | None = None) -> None:
        if encoding not in p.ENCODING_BY_NAME:
            raise ValueError(f"DTC encoding must be one of {sorted(p.ENCODING_BY_NAME)}, not {encoding!r}")
        self.host, self.port = host, port
        self.symbols = list(symbols)
        self._emit = emit
        self.clock = clock
        self.registry = registry
        self.encoding = p.ENCODING_BY_NAME[encoding]
        self.depth_levels = depth_levels
        self.heartbeat_interval_s = heartbeat_interval_s
        self._username = os.environ.get("MIA_DTC_USERNAME", "") if username is None else username
        self._password = os.environ.get("MIA_DTC_PASSWORD", "") if password is None else password
        self.client_name = client_name
        self.connect_timeout_s = connect_timeout_s  # also bounds each handshake step
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        self.max_attempts = max_attempts
        # SymbolID == instrument id, allocated once: resubscription reuses them
        self._ids: dict[int, str] = {registry.id_for(s): s for s in self.symbols}
        self._active: set[int] = set(self._ids)
        self._mapper = DtcEventMapper(self.source, self._ids)
        self._session: _DtcSession | None = None
        self._logged_on: asyncio.Future | None = None
        self._stop = asyncio.Event()
        self._rng = random.Random()
        self._feed_down_ns = 0
        self.messages_received = 0
        self.events_emitted = 0
        self.reconnects = 0
        self.last_error = ""  # why the last connect attempt or session failed

    def __repr__(self) -> str:
        return f"DtcClient({self.host}:{self.port}, symbols={self.symbols})"

    @property
    def source(self) -> str:
        return f"dtc:{self.host}:{self.port}"

    @property
    def logged_on(self) -> asyncio.Future:
        """Resolves at the first successful logon (awaitable)."""
        if self._logged_on is None:
            self._logged_on = asyncio.get_running_loop().create_future()
        return self._logged_on

    @property
    def instruments(self) -> dict:
        """The Instrument event last emitted per instrument id (for re-declaring in a new segment)."""
        return dict(self._mapper.instruments)

    @property
    def subscribed(self) -> dict[int, str]:
        """Instrument id -> symbol of the subscriptions still in force (rejects removed)."""
        return {i: self._ids[i] for i in sorted(self._active)}

    # --- public control ----------------------------------------------------------------------

    async def run(self) -> None:
        host, port = self.host, self.port
        failures = 0
        lost_ns = 0
        lost_reason = ""
        self._stop.clear()
        _ = self.logged_on
        try:
            while not self._stop.is_set():
                session = None
                try:
                    session = await self._connect(host, port, lost_ns, lost_reason)
                    failures = 0
                    reason = await session.closed
                    if session.do_not_reconnect and not self._stop.is_set():
                        raise ConnectionLostError(
                            f"dtc {host}:{port}: {reason}; the server asked not to reconnect")
                except _Redirect as redirect:
                    logger.info("dtc logon redirect host=%s:%s to=%s", host, port, redirect)
                    host, port = redirect.host, redirect.port
                    continue
                except LogonRejectedError as exc:
                    if not exc.reconnect:
                        raise
                    reason = str(exc)
                    failures += 1
                except (OSError, asyncio.TimeoutError, ConnectionLostError) as exc:
                    if isinstance(exc, ConnectionLostError) and session is not None \
                            and session.do_not_reconnect:
                        raise
                    reason = f"connect failed: {exc.__class__.__name__}: {exc}" \
                        if session is None else str(exc)
                    self.last_error = reason
                    failures += 1
                finally:
                    if session is not None and session.transport is not None:
                        session.transport.abort()
                if self._stop.is_set():
                    break
                now = self.clock.now_ns()
                if session is not None and session.logged_on:
                    lost_ns, lost_reason = now, reason
                    self._emit(FeedStatus(now, now, self.source, FEED_DISCONNECTED, detail=reason))
                    failures = max(failures, 1)
                elif not lost_ns:
                    lost_ns, lost_reason = now, reason
                if self.max_attempts is not None and failures >= self.max_attempts:
                    raise ConnectionLostError(
                        f"dtc {self.host}:{self.port}: gave up after {failures} attempts: {reason}")
                delay = backoff_s(failures, self.reconnect_initial_s, self.reconnect_max_s, self._rng)
                logger.info("dtc reconnect host=%s:%s in=%.2fs attempt=%d reason=%s",
                            host, port, delay, failures, reason)
                await stopped_within(self._stop, delay)
        except BaseException as exc:
            settle_waiter(self._logged_on, exc)
            raise

    async def stop(self) -> None:
        """Log off and close; ``run()`` returns."""
        self._stop.set()
        session = self._session
        if session is not None and session.transport is not None and not session.transport.is_closing():
            session.send(p.Logoff(reason="client stop"))
            session.close_reason = "stopped"
            await asyncio.sleep(0)
            session.transport.close()

    # --- one connection ----------------------------------------------------------------------

    async def _connect(self, host: str, port: int, lost_ns: int, lost_reason: str) -> _DtcSession:
        loop = asyncio.get_running_loop()
        session = _DtcSession(self, f"{host}:{port}")
        self._session = session
        await asyncio.wait_for(
            loop.create_connection(lambda: _DtcProtocol(session), host, port), self.connect_timeout_s)
        now = self.clock.now_ns()
        self._emit(FeedStatus(now, now, self.source, FEED_CONNECTED, detail=f"{host}:{port}"))
        if self.encoding != p.BINARY_ENCODING:
            session.send(p.EncodingRequest(encoding=self.encoding))
            granted = await asyncio.wait_for(session.encoding_fut, self.connect_timeout_s)
            if granted != self.encoding:
                logger.warning("dtc encoding host=%s asked=%d granted=%d", session.where,
                               self.encoding, granted)
        session.send(p.LogonRequest(
            username=self._username, password=self._password,
            heartbeat_interval_in_seconds=max(1, round(self.heartbeat_interval_s)),
            client_name=self.client_name))
        resp = await asyncio.wait_for(session.logon_fut, self.connect_timeout_s)
        text = self._redact(resp.result_text)
        if resp.result == p.LOGON_ERROR_NO_RECONNECT:
            raise LogonRejectedError(f"dtc {host}:{port}: logon rejected, do not reconnect: {text}",
                                     reconnect=False)
        if resp.result == p.LOGON_RECONNECT_NEW_ADDRESS:
            new_host, _, new_port = resp.reconnect_address.rpartition(":")
            if new_host and new_port.isdigit():
                raise _Redirect(new_host, int(new_port))
            raise LogonRejectedError(
                f"dtc {host}:{port}: redirect to an unusable address {resp.reconnect_address!r}")
        if resp.result != p.LOGON_SUCCESS:
            raise LogonRejectedError(f"dtc {host}:{port}: logon rejected: {text}")
        session.logged_on = True
        session.start_keepalive(self.heartbeat_interval_s)
        now = self.clock.now_ns()
        self._emit(FeedStatus(now, now, self.source, FEED_LOGGED_ON, detail=resp.server_name))
        if self._logged_on is not None and not self._logged_on.done():
            self._logged_on.set_result(True)
        if resp.security_definitions_supported:
            for iid in sorted(self._active):
                session.send(p.SecurityDefinitionForSymbolRequest(request_id=iid, symbol=self._ids[iid]))
        self._resubscribe(session, lost_ns, lost_reason or "reconnect")
        if lost_ns:
            self.reconnects += 1
        return session

    def _resubscribe(self, session: _DtcSession, lost_ns: int, reason: str) -> None:
        """(Re)subscribe everything; after an outage, clear books first and record the gap."""
        now = self.clock.now_ns()
        if lost_ns:
            self._mapper.reset_book_state()
            for iid in sorted(self._active):
                if iid in self._mapper.instruments:
                    self._emit(BookLevel(now, now, iid, 0, float("nan"), 0.0, BOOK_CLEAR))
        for iid in sorted(self._active):
            symbol = self._ids[iid]
            session.send(p.MarketDataRequest(request_action=p.SUBSCRIBE, symbol_id=iid, symbol=symbol))
            if self.depth_levels > 0:
                session.send(p.MarketDepthRequest(request_action=p.SUBSCRIBE, symbol_id=iid,
                                                  symbol=symbol, num_levels=self.depth_levels))
            self._emit(FeedStatus(now, now, self.source, FEED_SUBSCRIBED, iid, symbol))
        if lost_ns:
            self._emit(Gap(now, now, self.source, lost_ns, now, reason))

    def _on_status_message(self, msg, ts_recv: int, out: list[Event]) -> None:
        t = msg.TYPE
        if t in (p.MARKET_DATA_REJECT, p.MARKET_DEPTH_REJECT):
            if msg.symbol_id in self._active:
                self._active.discard(msg.symbol_id)
                logger.warning("dtc subscription rejected host=%s:%s symbol=%s reason=%s", self.host,
                               self.port, self._ids.get(msg.symbol_id), msg.reject_text)
        elif t == p.MARKET_DATA_FEED_STATUS:
            if msg.status == p.FEED_STATUS_UNAVAILABLE:
                self._feed_down_ns = self._feed_down_ns or ts_recv
            elif self._feed_down_ns:
                down, self._feed_down_ns = self._feed_down_ns, 0
                session = self._session
                resp = session.logon_response if session is not None else None
                if resp is not None and resp.resubscribe_when_market_data_feed_available:
                    # resubscribing replaces the books: emit what was queued so far first
                    for ev in out:
                        self._emit(ev)
                    self.events_emitted += len(out)
                    out.clear()
                    self._resubscribe(session, down, "feed unavailable")  # type: ignore[arg-type]
                else:
                    out.append(Gap(ts_recv, ts_recv, self.source, down, ts_recv, "feed unavailable"))

    def _redact(self, text: str) -> str:
        """Server text may echo what we sent; never let a credential through."""
        for secret in (self._password, self._username):
            if secret:
                text = text.replace(secret, "***")
        return text

