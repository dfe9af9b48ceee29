"""DTC historical tick data (messages 800-807): a sans-IO request state machine and an asyncio
client for the historical port.

One request per connection, as Sierra Chart's historical port serves it (dtc.md §3.5, §6, §8.10):

    connect -> LOGON_REQUEST -> LOGON_RESPONSE (success)
            -> HISTORICAL_PRICE_DATA_REQUEST (800, RecordInterval 0 = ticks)
            <- HISTORICAL_PRICE_DATA_REJECT (802)                       : one clear error
            <- HISTORICAL_PRICE_DATA_RESPONSE_HEADER (801)
               NoRecordsToReturn = 1                                    : done, no ticks
               UseZLibCompression = 1: every later byte is one zlib stream (the codec inflates)
            <- HISTORICAL_PRICE_DATA_TICK_RECORD_RESPONSE (804) ... IsFinalRecord = 1 : done

``HistoricalTickRequest`` owns that sequence and never touches a socket: ``initiate()`` gives
the logon bytes, ``receive_data(data)`` takes whatever arrived (any split) and returns the ticks
it completed, ``data_to_send()`` drains what must go out (the request after the logon), and
``done`` says the answer is whole. ``fetch_ticks`` moves its bytes over asyncio streams with
timeouts and bounded retries (capped, jittered backoff).

The request's times are whole seconds (t_DateTime); the machine asks for the seconds that cover
``[start_ns, end_ns)`` and keeps only the ticks inside it, so a caller gets exactly its window.
Credentials never appear in an error or a log line: server text is redacted before it is used.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from typing import Final

import msgspec

from mia.engine.clock import NS_PER_S
from mia.engine.errors import ConnectionLostError, FeedError, RemoteProtocolError
from mia.engine.retry import backoff_s

from . import protocol as p
from .convert import ns_from_seconds_f64
from .errors import LogonRejectedError

logger = logging.getLogger(__name__)

DEFAULT_HISTORICAL_PORT: Final = 11098  # Sierra's usual historical port (dtc.md §6)
INTERVAL_TICK: Final = 0

# HistoricalPriceDataRejectReasonCodeEnum
HPDR_UNSET: Final = 0
HPDR_RETRY_IN_SPECIFIED_SECONDS: Final = 1
HPDR_DO_NOT_RETRY: Final = 2
HPDR_OUTSIDE_BOUNDS_OF_AVAILABLE_DATA: Final = 3
HPDR_GENERAL_REJECT_ERROR: Final = 4
REJECT_REASONS: Final = {
    HPDR_UNSET: "unset", HPDR_RETRY_IN_SPECIFIED_SECONDS: "retry later",
    HPDR_DO_NOT_RETRY: "do not retry", HPDR_OUTSIDE_BOUNDS_OF_AVAILABLE_DATA: "outside available data",
    HPDR_GENERAL_REJECT_ERROR: "general reject",
}

CONNECT_TIMEOUT_S: Final = 5.0
IDLE_TIMEOUT_S: Final = 15.0  # nothing received for this long: the attempt failed
TOTAL_TIMEOUT_S: Final = 120.0  # one attempt, whole download
SERVER_RETRY_CAP_S: Final = 60.0  # a reject's RetryTimeInSeconds is honoured up to this
HEARTBEAT_S: Final = 30  # the logon's interval; the server may expect ours while it prepares data


class HistoricalDataError(FeedError):
    """A historical request failed (after its retries); names host:port and the symbol."""


class HistoricalRejectedError(HistoricalDataError):
    """HISTORICAL_PRICE_DATA_REJECT (802). ``retry_s`` > 0 when the server says to retry then."""

    def __init__(self, message: str, *, reason_code: int = 0, retry_s: int = 0) -> None:
        self.reason_code = reason_code
        self.retry_s = retry_s
        super().__init__(message)

    @property
    def retryable(self) -> bool:
        return self.reason_code == HPDR_RETRY_IN_SPECIFIED_SECONDS


class HistoricalTick(msgspec.Struct, frozen=True, gc=False):
    """One tick of a historical answer: int-ns time, price, volume, DTC AtBidOrAsk (1 bid, 2 ask)."""

    ts_event: int
    price: float
    volume: float
    at_bid_or_ask: int


class HistoricalTickRequest:
    """The client side of one historical tick request, sans-IO (see module doc).

    States: ``idle`` -> ``logon`` -> ``header`` -> ``records`` -> ``done``. A reject, a refused
    logon, a LOGOFF or a message out of place raises (HistoricalRejectedError,
    LogonRejectedError, ConnectionLostError, RemoteProtocolError); the machine is then unusable.
    """

    def __init__(self, symbol: str, start_ns: int, end_ns: int, *, exchange: str = "",
                 request_id: int = 1, use_zlib: bool = True, username: str = "",
                 password: str = "", heartbeat_s: int = HEARTBEAT_S, client_name: str = "mia",
                 where: str = "?", encoding: int = p.BINARY_ENCODING) -> None:
        if not symbol:
            raise ValueError("historical request: empty symbol")
        if end_ns and end_ns <= start_ns:
            raise ValueError(f"historical request {symbol}: empty window [{start_ns}, {end_ns})")
        self.symbol, self.exchange = symbol, exchange
        self.start_ns, self.end_ns = start_ns, end_ns
        self.request_id = request_id
        self.use_zlib = use_zlib
        self.where = where
        self.encoding = encoding
        self._username, self._password = username, password
        self._heartbeat_s = heartbeat_s
        self._client_name = client_name
        self.codec = p.DtcCodec(role="client")
        self.state = "idle"
        self.header = None  # the 801, once received
        self.logon_response = None
        self.records = 0  # 804s received (inside the window or not)
        self.compressed = False
        self._out = bytearray()

    # --- the request on the wire ----------------------------------------------------------------

    @property
    def start_s(self) -> int:
        """StartDateTime: the whole second holding start_ns (0: earliest available)."""
        return self.start_ns // NS_PER_S if self.start_ns > 0 else 0

    @property
    def end_s(self) -> int:
        """EndDateTime: the first whole second at or after end_ns (0: latest available)."""
        return -(-self.end_ns // NS_PER_S) if self.end_ns > 0 else 0

    def request_message(self):
        return p.HistoricalPriceDataRequest(
            request_id=self.request_id, symbol=self.symbol, exchange=self.exchange,
            record_interval=INTERVAL_TICK, start_date_time=self.start_s, end_date_time=self.end_s,
            max_days_to_return=0, use_z_lib_compression=int(self.use_zlib),
            request_dividend_adjusted_stock_data=0, integer_1=0)

    def logon_message(self):
        return p.LogonRequest(username=self._username, password=self._password,
                              heartbeat_interval_in_seconds=self._heartbeat_s,
                              client_name=self._client_name)

    # --- sans-IO interface ----------------------------------------------------------------------

    def initiate(self) -> bytes:
        """The bytes that open the conversation (an encoding request when not binary, the logon)."""
        if self.state != "idle":
            raise RuntimeError(f"historical request {self.symbol}: already started")
        self.state = "logon"
        if self.encoding != p.BINARY_ENCODING:
            self._out += self.codec.encode(p.EncodingRequest(encoding=self.encoding))
        self._out += self.codec.encode(self.logon_message())
        return self.data_to_send()

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def done(self) -> bool:
        return self.state == "done"

    def heartbeat(self, now_s: int) -> bytes:
        """A heartbeat to send on the logon's timer (never once the stream is compressed)."""
        if self.state in ("idle", "done") or self.compressed:
            return b""
        return self.codec.encode(p.Heartbeat(current_date_time=now_s))

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[HistoricalTick]:
        """Feed received bytes; returns the ticks (inside the window) they completed."""
        out: list[HistoricalTick] = []
        if self.state == "done" or not data:
            return out
        for msg in self.codec.feed(data):
            self._on_message(msg, out)
            if self.state == "done":
                break  # anything after the final record is not part of the answer
        return out

    def _on_message(self, msg, out: list[HistoricalTick]) -> None:
        t = p.message_type(msg)
        state = self.state
        if t in (p.HEARTBEAT, p.ENCODING_RESPONSE):
            return
        if t == p.LOGOFF:
            raise ConnectionLostError(f"dtc historical {self.where}: {self.symbol}: server logoff: "
                                      f"{self._redact(msg.reason)}")
        if state == "logon" and t == p.LOGON_RESPONSE:
            self.logon_response = msg
            if msg.result != p.LOGON_SUCCESS:
                raise LogonRejectedError(
                    f"dtc historical {self.where}: logon rejected: {self._redact(msg.result_text)}",
                    reconnect=msg.result == p.LOGON_ERROR)
            if not msg.historical_price_data_supported:
                logger.warning("dtc historical host=%s: logon response does not flag historical "
                               "data as supported; asking anyway", self.where)
            self._out += self.codec.encode(self.request_message())
            self.state = "header"
            return
        if state in ("header", "records") and t == p.HISTORICAL_PRICE_DATA_REJECT:
            code = msg.reject_reason_code
            retry = msg.retry_time_in_seconds if code == HPDR_RETRY_IN_SPECIFIED_SECONDS else 0
            text = self._redact(msg.reject_text) or REJECT_REASONS.get(code, f"code {code}")
            raise HistoricalRejectedError(
                f"dtc historical {self.where}: {self.symbol}: request rejected: {text}"
                + (f" (retry in {retry}s)" if retry else ""), reason_code=code, retry_s=retry)
        if state == "header" and t == p.HISTORICAL_PRICE_DATA_RESPONSE_HEADER:
            self._check_id(msg)
            if msg.record_interval != INTERVAL_TICK:
                raise RemoteProtocolError(f"dtc historical {self.where}: {self.symbol}: asked for "
                                          f"ticks, the header says interval {msg.record_interval}")
            self.header = msg
            if msg.no_records_to_return:
                self.state = "done"
            else:
                self.compressed = bool(msg.use_z_lib_compression)  # the codec inflates from here
                self.state = "records"
            return
        if state == "records" and t == p.HISTORICAL_PRICE_DATA_TICK_RECORD_RESPONSE:
            self._check_id(msg)
            final = bool(msg.is_final_record)
            # a final record may be an empty terminator (all zero) rather than a tick
            if not (final and msg.date_time == 0 and msg.price == 0 and msg.volume == 0):
                self.records += 1
                ts = ns_from_seconds_f64(msg.date_time)
                if ts and ts >= self.start_ns and (not self.end_ns or ts < self.end_ns):
                    out.append(HistoricalTick(ts, msg.price, msg.volume, msg.at_bid_or_ask))
            if final:
                self.state = "done"
            return
        if state == "records" and t == p.HISTORICAL_PRICE_DATA_RESPONSE_TRAILER:
            self.state = "done"
            return
        raise RemoteProtocolError(f"dtc historical {self.where}: {self.symbol}: unexpected "
                                  f"message type {t} while waiting for the {state}")

    def _check_id(self, msg) -> None:
        if msg.request_id != self.request_id:
            raise RemoteProtocolError(f"dtc historical {self.where}: {self.symbol}: answer for "
                                      f"request {msg.request_id}, asked {self.request_id}")

    def _redact(self, text: str) -> str:
        for secret in (self._password, self._username):
            if secret:
                text = text.replace(secret, "***")
        return text


# --- asyncio client -----------------------------------------------------------------------------


async def _fetch_once(host: str, port: int, req: HistoricalTickRequest, *,
                      connect_timeout_s: float, idle_timeout_s: float) -> list[HistoricalTick]:
    """One connection: logon, request, answer. Heartbeats on the logon's timer until the
    answer is compressed; silence longer than ``idle_timeout_s`` fails the attempt."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), connect_timeout_s)
    ticks: list[HistoricalTick] = []
    loop = asyncio.get_running_loop()
    try:
        writer.write(req.initiate())
        await writer.drain()
        last_rx = next_beat = loop.time()
        next_beat += req._heartbeat_s
        while not req.done:
            now = loop.time()
            if now - last_rx >= idle_timeout_s:
                raise asyncio.TimeoutError(f"nothing received for {idle_timeout_s:.1f}s "
                                           f"(waiting for the {req.state})")
            if now >= next_beat:
                writer.write(req.heartbeat(int(time.time())))
                next_beat = now + req._heartbeat_s
            wait = max(0.001, min(last_rx + idle_timeout_s, next_beat) - now)
            try:
                data = await asyncio.wait_for(reader.read(65536), wait)
            except asyncio.TimeoutError:
                continue
            if not data:
                raise ConnectionLostError(f"dtc historical {req.where}: {req.symbol}: connection "
                                          f"closed while waiting for the {req.state}")
            last_rx = loop.time()
            ticks.extend(req.receive_data(data))
            out = req.data_to_send()
            if out:
                writer.write(out)
                await writer.drain()
    finally:
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        except (OSError, asyncio.TimeoutError):
            pass
    return ticks


async def fetch_ticks(host: str, port: int, symbol: str, start_ns: int, end_ns: int, *,
                      exchange: str = "", use_zlib: bool = True, username: str | None = None,
                      password: str | None = None, connect_timeout_s: float = CONNECT_TIMEOUT_S,
                      idle_timeout_s: float = IDLE_TIMEOUT_S,
                      total_timeout_s: float = TOTAL_TIMEOUT_S, attempts: int = 3,
                      backoff_initial_s: float = 0.25, backoff_max_s: float = 5.0,
                      rng: random.Random | None = None) -> list[HistoricalTick]:
    """The ticks of ``symbol`` in ``[start_ns, end_ns)`` from a DTC historical port.

    Each attempt is one connection (logon, request, answer), bounded by the timeouts. Failures
    that may pass (refused or dropped connection, timeout, LOGON_ERROR, a reject that says to
    retry) are retried up to ``attempts`` in all, after a capped, jittered backoff; a reject
    that says not to retry is raised at once. Raises HistoricalDataError naming host:port and
    the symbol; credentials (default: MIA_DTC_USERNAME / MIA_DTC_PASSWORD) never appear in it.
    """
    user = os.environ.get("MIA_DTC_USERNAME", "") if username is None else username
    secret = os.environ.get("MIA_DTC_PASSWORD", "") if password is None else password
    rng = rng or random.Random()
    where = f"{host}:{port}"
    last = ""
    for attempt in range(1, max(1, attempts) + 1):
        req = HistoricalTickRequest(symbol, start_ns, end_ns, exchange=exchange, request_id=attempt,
                                    use_zlib=use_zlib, username=user, password=secret, where=where)
        delay = 0.0
        try:
            ticks = await asyncio.wait_for(
                _fetch_once(host, port, req, connect_timeout_s=connect_timeout_s,
                            idle_timeout_s=idle_timeout_s), total_timeout_s)
            logger.info("dtc historical host=%s symbol=%s ticks=%d records=%d zlib=%s", where,
                        symbol, len(ticks), req.records, req.compressed)
            return ticks
        except HistoricalRejectedError as exc:
            if not exc.retryable:
                raise
            last, delay = str(exc), float(exc.retry_s)
        except LogonRejectedError as exc:
            if not exc.reconnect:
                raise HistoricalDataError(f"{exc} (symbol {symbol})") from None
            last = str(exc)
        except (OSError, asyncio.TimeoutError, ConnectionLostError, RemoteProtocolError) as exc:
            text = str(exc) or exc.__class__.__name__
            last = text if text.startswith("dtc historical") else \
                f"{exc.__class__.__name__}: {req._redact(text)}"
        if attempt >= attempts:
            break
        delay = max(backoff_s(attempt, backoff_initial_s, backoff_max_s, rng),
                    min(delay, SERVER_RETRY_CAP_S))
        logger.info("dtc historical retry host=%s symbol=%s attempt=%d in=%.2fs reason=%s", where,
                    symbol, attempt, delay, last)
        await asyncio.sleep(delay)
    raise HistoricalDataError(f"dtc historical {where}: {symbol}: gave up after {attempts} "
                              f"attempts: {last}")
