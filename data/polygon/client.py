"""An asyncio client for Polygon's options-chain snapshot: paging, plan rate limits, retries.

Layers: ``RateLimiter`` (a sliding window over a minute, set by plan) and ``PolygonClient`` on
``httpx.AsyncClient``. The API key travels only in the ``Authorization: Bearer`` header: it is
stripped from any ``next_url`` (and never added to a URL), so httpx's own request logging, the
recorded path and query, and every error message are free of it.

A 200 body is recorded as the server sent it, byte for byte. The key is redacted only where it
can appear: a URL (the recorded path and query, and the ``next_url`` of a body, where a server or
proxy may append ``apiKey=``) and the error text we write. Keys shorter than ``MIN_KEY_CHARS``
are refused: they are no real key, and redacting one would rewrite ordinary text.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import logging
import math
import os
import random
import re
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Final, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx

from mia.engine.clock import NS_PER_MIN, NS_PER_S, Clock, SystemClock, utc_datetime
from mia.engine.errors import ConfigError, ConnectionLostError
from mia.engine.retry import backoff_s

from .config import API_KEY_ENV
from .errors import EntitlementError, PolygonHttpError
from .models import (
    DEFAULT_INDEX_TICKERS,
    INDICES_PATH,
    MAX_INDEX_TICKERS,
    NEW_YORK,
    ChainContract,
    PolygonDecodeError,
    api_underlying,
    parse_error,
    parse_index_page,
    parse_page,
    plain_underlying,
)

log = logging.getLogger(__name__)

ENV_KEY: Final = API_KEY_ENV  # the one name, from config.py
DEFAULT_BASE_URL: Final = "https://api.polygon.io"
# Polygon keys are long random tokens; anything shorter than this is a placeholder or a typo, and
# redacting it from URLs and error text would rewrite ordinary words.
MIN_KEY_CHARS: Final = 8
# Polygon's published limits (massive.com pricing and knowledge base, checked 2026): the free
# Basic plan allows 5 calls a minute; Starter, Developer, Advanced and Business list unlimited
# calls, with usage monitored and a recommendation to stay under 100 requests a second. mia holds
# the paid plans to 10 a second (600 a minute), a tenth of that ceiling: a 40-page chain still
# takes 4 s, the poller never polls a chain faster than every 10 s anyway, and the rest stays
# free for the user's other programs on the same key. `calls_per_minute` overrides either.
PAID_PLAN_CALLS_PER_MINUTE: Final = 600.0
PLAN_CALLS_PER_MINUTE: Final[dict[str, float]] = {
    "free": 5.0,
    "basic": 5.0,
    "starter": PAID_PLAN_CALLS_PER_MINUTE,
    "developer": PAID_PLAN_CALLS_PER_MINUTE,
    "advanced": PAID_PLAN_CALLS_PER_MINUTE,
    "business": PAID_PLAN_CALLS_PER_MINUTE,
}
RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
MAX_BODY_BYTES: Final = 32 * 1024 * 1024
REDACTED: Final = "<redacted>"
_REDACTED_B: Final = REDACTED.encode()
# The next_url (or previous_url) string of a page body, raw JSON bytes with escapes kept: the one
# place in a 200 body where a key can appear (a server or proxy appending apiKey=; Polygon itself
# leaves it out, reference A1 Pagination).
_NEXT_URL_RE: Final = re.compile(rb'("(?:next|previous)_url"\s*:\s*")((?:[^"\\]|\\.)*)"')

_SYSTEM_CLOCK: Final = SystemClock()  # stateless: one for every client by default

Sleep = Callable[[float], Awaitable[None]]


class ResponseTooLargeError(PolygonHttpError):
    """A response body passed the client's max_body_bytes."""


@dataclass(frozen=True)
class FetchedPage:
    """One 200 page as received, for recording: `path` and `query` never hold the key."""

    path: str
    query: str
    status: int
    request_id: str
    elapsed_ns: int
    body: bytes
    ts_recv: int
    page: int
    final: bool  # last page of a complete snapshot


@dataclass
class ChainFetch:
    """The pages of one chain snapshot and their contracts, de-duplicated by ticker."""

    underlying: str  # plain form: "SPX"
    pages: list[FetchedPage] = field(default_factory=list)
    contracts: list[ChainContract] = field(default_factory=list)
    spot: float = math.nan
    stop_reason: str = "complete"  # complete | cursor_loop | page_cap
    requests: int = 0  # HTTP requests made, retries included


class RateLimiter:
    """At most `calls` requests in any `window_ns` (a sliding log of grant times).

    Every HTTP attempt, retries included, takes a grant, so the plan is never exceeded.
    """

    def __init__(self, calls_per_minute: float | None, clock: Clock, sleep: Sleep = asyncio.sleep) -> None:
        self.calls_per_minute = calls_per_minute
        if calls_per_minute is None:
            self.calls, self.window_ns = 0, 0
        elif calls_per_minute <= 0:
            raise ConfigError(f"calls_per_minute must be positive, got {calls_per_minute}")
        elif calls_per_minute >= 1:
            self.calls, self.window_ns = int(calls_per_minute), NS_PER_MIN
        else:  # slower than one a minute: one call per 60/cpm seconds
            self.calls, self.window_ns = 1, int(NS_PER_MIN / calls_per_minute)
        self._clock = clock
        self._sleep = sleep
        self._grants: collections.deque[int] = collections.deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if self.calls_per_minute is None:
            return
        async with self._lock:
            while True:
                now = self._clock.now_ns()
                while self._grants and self._grants[0] <= now - self.window_ns:
                    self._grants.popleft()
                if len(self._grants) < self.calls:
                    self._grants.append(now)
                    return
                wait_s = (self._grants[0] + self.window_ns - now) / NS_PER_S
                log.debug("rate limit wait=%.2fs calls=%d window=%.0fs", wait_s, self.calls, self.window_ns / NS_PER_S)
                await self._sleep(max(wait_s, 0.001))


def _strip_key(query: str) -> str:
    """A query string without any apiKey parameter."""
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k.lower() != "apikey"]
    return urlencode(pairs)


class PolygonClient:
    """Fetches whole option-chain snapshots (every page) within the plan's rate limit."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        api_key: str | None = None,
        plan: str = "starter",
        calls_per_minute: float | None = None,
        timeout_s: float = 10.0,
        max_pages: int = 200,
        max_retries: int = 4,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 30.0,
        max_body_bytes: int = MAX_BODY_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = _SYSTEM_CLOCK,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get(ENV_KEY)
        if not key:
            raise ConfigError(f"no Polygon API key: set the {ENV_KEY} environment variable or pass api_key")
        if len(key) < MIN_KEY_CHARS:  # the message never shows the key, nor its length
            raise ConfigError(f"the Polygon API key is shorter than {MIN_KEY_CHARS} characters: not a real key "
                              f"(check {ENV_KEY} or [polygon] api_key)")
        if plan not in PLAN_CALLS_PER_MINUTE:
            raise ConfigError(f"unknown Polygon plan {plan!r}: expected one of {', '.join(PLAN_CALLS_PER_MINUTE)}")
        self._key = key
        self._key_bytes = key.encode()
        self.base_url = base_url.rstrip("/")
        self.plan = plan
        self.calls_per_minute = calls_per_minute if calls_per_minute is not None else PLAN_CALLS_PER_MINUTE[plan]
        self.max_pages = max_pages
        self.max_retries = max_retries
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.max_body_bytes = max_body_bytes
        self.clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.limiter = RateLimiter(self.calls_per_minute, clock, sleep)
        self._last_spot: dict[str, float] = {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {key}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            follow_redirects=False,  # a redirect could carry the header elsewhere
        )

    def __repr__(self) -> str:
        return f"PolygonClient(base_url={self.base_url!r}, plan={self.plan!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "PolygonClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def redact(self, text: str) -> str:
        """`text` with the key replaced: for URLs and the error text we write, never for a body."""
        return text.replace(self._key, REDACTED) if self._key in text else text

    def _redact_next_url(self, body: bytes) -> bytes:
        """`body` as sent, but for the key inside its next_url/previous_url (a server or proxy that
        appends ``apiKey=``). The real API leaves the key out of both: this returns `body` itself."""
        key = self._key_bytes
        if key not in body:
            return body

        def clean(m: re.Match[bytes]) -> bytes:
            return m.group(1) + m.group(2).replace(key, _REDACTED_B) + b'"'

        out = _NEXT_URL_RE.sub(clean, body)
        if out != body:
            log.warning("polygon response carried the API key in next_url: redacted there before recording")
        return out

    def chain_query(self, underlying: str, *, expiry_days: int | None, strike_window: float | None,
                    contract_type: str | None, limit: int, spot_hint: float | None = None) -> dict[str, str]:
        """The first page's query parameters. The strike band needs a spot: the hint, else the last seen."""
        params: dict[str, str] = {"limit": str(max(1, min(int(limit), 250)))}
        if expiry_days is not None:
            today = utc_datetime(self.clock.now_ns()).astimezone(NEW_YORK).date()
            params["expiration_date.gte"] = today.isoformat()
            params["expiration_date.lte"] = (today + dt.timedelta(days=expiry_days)).isoformat()
        spot = spot_hint if spot_hint is not None else self._last_spot.get(plain_underlying(underlying))
        if strike_window is not None and spot is not None and math.isfinite(spot):
            params["strike_price.gte"] = f"{spot * (1.0 - strike_window):.2f}"
            params["strike_price.lte"] = f"{spot * (1.0 + strike_window):.2f}"
        if contract_type is not None:
            if contract_type not in ("call", "put"):
                raise ConfigError(f"contract_type must be 'call' or 'put', got {contract_type!r}")
            params["contract_type"] = contract_type
        return params

    async def fetch_chain(
        self,
        underlying: str,
        *,
        expiry_days: int | None = 45,
        strike_window: float | None = 0.2,
        contract_type: str | None = None,
        limit: int = 250,
        spot_hint: float | None = None,
        on_page: Callable[[FetchedPage], None] | None = None,
    ) -> ChainFetch:
        """Every page of one chain snapshot, following next_url.

        `on_page` sees each 200 page as it arrives (so a recorder keeps the pages of a snapshot
        that later fails). Paging stops at the last page, at a cursor seen twice (the API's
        next_url loop bug) or at max_pages. Raises EntitlementError (401/403, not retried),
        PolygonHttpError (other statuses, after retries), ConnectionLostError (timeouts and
        network errors, after retries) and PolygonDecodeError (a body that is not a chain page).
        """
        plain = plain_underlying(underlying)
        path = f"/v3/snapshot/options/{api_underlying(underlying)}"
        query = urlencode(self.chain_query(plain, expiry_days=expiry_days, strike_window=strike_window,
                                           contract_type=contract_type, limit=limit, spot_hint=spot_hint))
        fetch = ChainFetch(underlying=plain)
        seen_cursors: set[str] = set()
        by_ticker: set[str] = set()
        spot_value = spot_price = math.nan
        for page_no in range(self.max_pages):
            resp_body, status, request_id, elapsed_ns, attempts = await self._get(path, query)
            fetch.requests += attempts
            ts_recv = self.clock.now_ns()
            # what is recorded: the URL without the key, the body as the server sent it
            shown_path, shown_query = self.redact(path), self.redact(query)
            recorded_body = self._redact_next_url(resp_body)
            try:
                page = parse_page(resp_body)
            except PolygonDecodeError as exc:
                self._deliver(fetch, on_page, FetchedPage(shown_path, shown_query, status, request_id, elapsed_ns,
                                                          recorded_body, ts_recv, page_no, False))
                raise PolygonDecodeError(f"{self._where(path)} page {page_no}: {exc}") from None
            next_path = next_query = None
            if page.next_url:
                parts = urlsplit(page.next_url)
                next_path, next_query = parts.path, _strip_key(parts.query)
                cursor = f"{next_path}?{next_query}"
                if cursor in seen_cursors:
                    log.warning("next_url loop underlying=%s page=%d: cursor seen twice, paging stopped", plain, page_no)
                    fetch.stop_reason = "cursor_loop"
                    next_path = None
                else:
                    seen_cursors.add(cursor)
                    if page_no + 1 >= self.max_pages:
                        log.warning("page cap underlying=%s max_pages=%d: paging stopped", plain, self.max_pages)
                        fetch.stop_reason = "page_cap"
                        next_path = None
            for row in page.results or ():
                t = row.ticker
                if t is not None:
                    if t in by_ticker:
                        continue
                    by_ticker.add(t)
                fetch.contracts.append(row)
                u = row.underlying_asset
                if u is not None:
                    if u.value is not None:
                        spot_value = u.value
                    if u.price is not None:
                        spot_price = u.price
            final = next_path is None
            self._deliver(fetch, on_page, FetchedPage(shown_path, shown_query, status, request_id or page.request_id,
                                                      elapsed_ns, recorded_body, ts_recv, page_no, final))
            if final:
                break
            path, query = next_path, next_query  # follow the cursor as it stands: it embeds the filters
        fetch.spot = spot_value if not math.isnan(spot_value) else spot_price
        if math.isfinite(fetch.spot):
            self._last_spot[plain] = fetch.spot
        log.debug("chain fetched underlying=%s pages=%d contracts=%d requests=%d", plain, len(fetch.pages),
                  len(fetch.contracts), fetch.requests)
        return fetch

    def indices_query(self, tickers: Sequence[str]) -> str:
        """ `ticker.any_of=I:SPX,I:NDX,I:VIX` (with `limit` when more than the default 10)."""
        names = [t if t.startswith("I:") else f"I:{t}" for t in tickers]
        if not names or len(names) > MAX_INDEX_TICKERS:
            raise ConfigError(f"indices snapshot: 1 to {MAX_INDEX_TICKERS} tickers, got {len(names)}")
        params = {"ticker.any_of": ",".join(names)}
        if len(names) > 10:
            params["limit"] = str(len(names))
        return urlencode(params, safe=":,")

    async def fetch_indices(self, tickers: Sequence[str] = DEFAULT_INDEX_TICKERS, *,
                            on_page: Callable[[FetchedPage], None] | None = None) -> FetchedPage:
        """One `GET /v3/snapshot/indices` (one page: at most 250 tickers, all asked for by name).

        Rows the plan lacks come back with HTTP 200 and a per-row `error` (NOT_ENTITLED): the page
        is returned (and recorded) as sent, and models.index_values reads those rows as errors.
        `on_page` sees the page before a body that is no indices snapshot raises
        PolygonDecodeError; HTTP failures raise as in fetch_chain.
        """
        path, query = INDICES_PATH, self.indices_query(tickers)
        body, status, request_id, elapsed_ns, _ = await self._get(path, query)
        page = FetchedPage(self.redact(path), self.redact(query), status, request_id, elapsed_ns,
                           self._redact_next_url(body), self.clock.now_ns(), 0, True)
        try:
            parsed = parse_index_page(body)
        except PolygonDecodeError as exc:
            if on_page is not None:
                on_page(page)
            raise PolygonDecodeError(f"{self._where(path)}: {exc}") from None
        if not page.request_id and parsed.request_id:
            page = dataclasses.replace(page, request_id=parsed.request_id)
        if on_page is not None:
            on_page(page)
        return page

    @staticmethod
    def _deliver(fetch: ChainFetch, on_page: Callable[[FetchedPage], None] | None, page: FetchedPage) -> None:
        fetch.pages.append(page)
        if on_page is not None:
            on_page(page)

    def _where(self, path: str) -> str:
        """base URL and path for messages, without the key."""
        return self.redact(f"{self.base_url}{path}")

    def _backoff_s(self, attempt: int) -> float:
        """The wait after failed try number `attempt` (0 for the first): mia.engine.retry."""
        return backoff_s(attempt + 1, self.backoff_initial_s, self.backoff_max_s, self._rng)

    async def _get(self, path: str, query: str) -> tuple[bytes, int, str, int, int]:
        """One GET with retries: (body, status, request_id, elapsed_ns, attempts)."""
        url = f"{path}?{query}" if query else path
        where = self._where(path)
        last_problem = ""
        last_status = 0
        last_request_id = ""
        attempt = 0
        while True:
            await self.limiter.acquire()
            t0 = time.perf_counter_ns()
            delay: float | None = None
            try:
                async with self._http.stream("GET", url) as resp:
                    body = await self._read_capped(resp, where)
                    status = resp.status_code
                    retry_after = resp.headers.get("Retry-After")
            except httpx.TimeoutException as exc:
                last_problem, last_status = f"timed out ({type(exc).__name__})", 0
            except httpx.TransportError as exc:
                last_problem, last_status = f"network error ({type(exc).__name__})", 0
            else:
                elapsed = time.perf_counter_ns() - t0
                if status == 200:
                    return body, status, "", elapsed, attempt + 1  # as sent: fetch_chain records it
                err = parse_error(body)
                detail = self.redact(err.text)
                if status in (401, 403):
                    raise EntitlementError(f"{where}: HTTP {status} {detail}".rstrip(), status=status,
                                           request_id=err.request_id)
                if status not in RETRY_STATUSES:
                    raise PolygonHttpError(f"{where}: HTTP {status} {detail}".rstrip(), status=status,
                                           request_id=err.request_id)
                last_problem, last_status, last_request_id = f"HTTP {status} {detail}".rstrip(), status, err.request_id
                delay = _retry_after_s(retry_after) if status == 429 else None
            if attempt >= self.max_retries:
                break
            if delay is None:
                delay = self._backoff_s(attempt)
            log.info("polygon retry path=%s attempt=%d problem=%s wait=%.2fs", self.redact(path), attempt + 1,
                     last_problem, delay)
            await self._sleep(delay)
            attempt += 1
        message = f"{where}: {last_problem} after {attempt + 1} attempts"
        if last_status == 0:
            raise ConnectionLostError(message)
        raise PolygonHttpError(message, status=last_status, request_id=last_request_id)

    async def _read_capped(self, resp: httpx.Response, where: str) -> bytes:
        declared = resp.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise ResponseTooLargeError(f"{where}: body of {declared} bytes exceeds max_body_bytes={self.max_body_bytes}",
                                        status=resp.status_code)
        chunks = bytearray()
        async for chunk in resp.aiter_bytes():
            chunks += chunk
            if len(chunks) > self.max_body_bytes:
                raise ResponseTooLargeError(f"{where}: body exceeds max_body_bytes={self.max_body_bytes}",
                                            status=resp.status_code)
        return bytes(chunks)


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After in seconds (the delta-seconds form), None when absent or unreadable."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 and math.isfinite(seconds) else None
