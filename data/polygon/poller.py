"""Polls option-chain snapshots on a schedule the plan can afford, recording every page.

Each 200 page becomes a ``PolygonResponse`` event (path and query without the key, raw body,
``snapshot_id`` increasing per poller, ``page``, ``final=True`` only on the last page of a
complete snapshot). Each failure becomes a ``SourceError`` naming the fallback consumers should
take: the last good chain, flagged stale with its age. So do rows of a complete snapshot that
the gamma reducer cannot place (``chain_row_count``, the reducer's own row selection): some
dropped, the rest is used; all dropped, the snapshot counts as failed. ``FeedStatus`` events mark
an underlying turning unavailable and back. Nothing is invented: no synthetic pages, ever.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
from dataclasses import dataclass
from typing import Awaitable, Callable, Final, Sequence

import httpx

from mia.engine.clock import NS_PER_S, Clock, utc_datetime
from mia.engine.errors import MiaError
from mia.engine.events import (
    FALLBACK_NONE,
    FALLBACK_PARTIAL,
    FALLBACK_PREVIOUS,
    FEED_AVAILABLE,
    FEED_UNAVAILABLE,
    Event,
    FeedStatus,
    PolygonResponse,
    SourceError,
)

from .client import FetchedPage, PolygonClient
from .config import parse_hhmm
from .errors import EntitlementError, PolygonHttpError
from .models import NEW_YORK, ChainRowCounter, PolygonDecodeError, index_values, plain_underlying

log = logging.getLogger(__name__)

SOURCE: Final = "polygon"
MIN_INTERVAL_S: Final = 10.0  # even an unlimited plan gains nothing polling faster (data is 15-min delayed or snapshot-cached)
DEFAULT_PAGES_PER_CHAIN: Final = 40  # SPX within 45 days and +-20% is about 40 pages of 250 until measured
# The indices snapshot is one call. On a plan with a per-minute budget below one call a second it
# takes this share of the budget (free, 5 a minute: one snapshot a minute, chains the other 4);
# otherwise it is polled every MIN_INDICES_INTERVAL_S.
INDICES_BUDGET_SHARE: Final = 0.2
MIN_INDICES_INTERVAL_S: Final = 5.0
INDICES_UNDERLYING: Final = ""  # PolygonResponse.underlying of an indices snapshot (its path says what it is)


@dataclass
class _UnderlyingState:
    last_good_ns: int = 0  # ts_recv of the final page of the last complete snapshot (0: none yet)
    available: bool | None = None  # None until the first outcome
    pages_last: int = 0


def next_snapshot_ns(after_ns: int, times: Sequence[tuple[int, int]]) -> int:
    """The first configured New York time strictly after `after_ns`, on a weekday (ns, UTC).

    zoneinfo places each HH:MM in its day's offset, so 15:45 is 20:45 UTC in winter and 19:45
    UTC in summer. Exchange holidays are not skipped (a chain fetched then is the last session's).
    """
    if not times:
        raise ValueError("no snapshot times")
    day = dt.datetime.fromtimestamp(after_ns / NS_PER_S, NEW_YORK).date() - dt.timedelta(days=1)
    for _ in range(10):
        if day.weekday() < 5:
            for hh, mm in sorted(times):
                at = dt.datetime(day.year, day.month, day.day, hh, mm, tzinfo=NEW_YORK)
                ns = int(at.timestamp()) * NS_PER_S
                if ns > after_ns:
                    return ns
        day += dt.timedelta(days=1)
    raise AssertionError("unreachable: a weekday within 10 days")


class PolygonPoller:
    """Polls each underlying's chain, and the indices snapshot beside them.

    Chains: continuously, every `interval_s` (default: what the plan allows), or, with
    `snapshot_times` ("15:45", New York time), only at those moments: all pages of every
    underlying's chain fetched one after another as one unit. A snapshot's pages share one
    `snapshot_id`: page 0 marks its start (its `ts_recv`), the page with `final=True` its end.
    Indices (`index_tickers`): one `GET /v3/snapshot/indices` every `indices_interval_s`
    (default: INDICES_BUDGET_SHARE of a small plan's budget, else MIN_INDICES_INTERVAL_S). Every
    call goes through the client's rate limiter, so the plan is never exceeded.
    """

    def __init__(
        self,
        client: PolygonClient,
        underlyings: Sequence[str] = ("SPX", "NDX"),
        *,
        interval_s: float | None = None,
        emit: Callable[[Event], None],
        clock: Clock,
        expiry_days: int | None = 45,
        strike_window: float | None = 0.2,
        contract_type: str | None = None,
        limit: int = 250,
        snapshot_times: Sequence[str] = (),
        index_tickers: Sequence[str] = (),
        indices_interval_s: float | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        chain_snapshots: bool = True,
    ) -> None:
        self.client = client
        self.underlyings = tuple(plain_underlying(u) for u in underlyings)
        self.fixed_interval_s = interval_s
        self.emit = emit
        self.clock = clock
        self.filters = {"expiry_days": expiry_days, "strike_window": strike_window,
                        "contract_type": contract_type, "limit": limit}
        self.snapshot_times = tuple(parse_hhmm(t) for t in snapshot_times)
        self.index_tickers = tuple(index_tickers)
        # log a ChainSnapshot after each readable snapshot's final page (the recorder says so in
        # its RecordingStarted: chain_snapshots, and the reducers then read those, not the pages)
        self.chain_snapshots = chain_snapshots
        self.fixed_indices_interval_s = indices_interval_s
        self.snapshot_id = 0
        self.source = SOURCE
        self._state = {u: _UnderlyingState() for u in self.underlyings}
        self._index_errors: dict[str, str] = {}  # ticker -> its last row error ("" when fine)
        self._indices_last_good_ns = 0
        self._indices_available: bool | None = None
        self._sleep = sleep
        self._stop = asyncio.Event()
        self._running: asyncio.Task | None = None

    # schedule

    @property
    def interval_s(self) -> float:
        """The fixed interval, else the fastest cycle whose calls fit the plan's per-minute budget."""
        if self.fixed_interval_s is not None:
            return self.fixed_interval_s
        cpm = self.client.calls_per_minute
        if cpm is None:
            return MIN_INTERVAL_S
        if self.index_tickers:
            cpm = cpm - 60.0 / self.indices_interval_s
        pages = sum(s.pages_last or DEFAULT_PAGES_PER_CHAIN for s in self._state.values())
        return max(MIN_INTERVAL_S, 60.0 * pages / max(cpm, 1e-9))

    @property
    def indices_interval_s(self) -> float:
        if self.fixed_indices_interval_s is not None:
            return self.fixed_indices_interval_s
        cpm = self.client.calls_per_minute
        if cpm is None or cpm >= 60.0:
            return MIN_INDICES_INTERVAL_S
        return max(MIN_INDICES_INTERVAL_S, 60.0 / (cpm * INDICES_BUDGET_SHARE))

    def last_good_ns(self, underlying: str) -> int:
        return self._state[plain_underlying(underlying)].last_good_ns

    # polling

    async def _wait(self, seconds: float) -> None:
        """Wait `seconds` or until stop(); the injected sleep (tests on a manual clock) when given."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        if self._sleep is not None:
            await self._sleep(seconds)
            return
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    async def _guarded(self, coro: Awaitable[bool]) -> bool | None:
        """Run one poll as the task stop() may cancel; None when stopped."""
        self._running = asyncio.ensure_future(coro)
        try:
            return await self._running
        except asyncio.CancelledError:
            if self._stop.is_set():
                log.info("polygon poll cancelled by stop")
                return None
            raise
        finally:
            self._running = None

    async def run(self) -> None:
        """Poll until stop(): chains continuously or at the snapshot times, indices beside them."""
        self._stop.clear()
        start = self.clock.now_ns()
        next_indices = start if self.index_tickers else math.inf
        next_chain = next_snapshot_ns(start, self.snapshot_times) if self.snapshot_times else start
        try:
            waited_to = start  # a wait ends at its target even on a clock that did not move with it
            while not self._stop.is_set():
                now = max(self.clock.now_ns(), waited_to)
                if now >= next_indices:
                    await self._guarded(self.poll_indices())
                    next_indices = now + int(self.indices_interval_s * NS_PER_S)
                    continue  # a chain due now starts right after, with what budget is left
                if now >= next_chain:
                    scheduled = next_chain
                    if self.snapshot_times:
                        log.info("polygon scheduled snapshot at=%s underlyings=%s",
                                 utc_datetime(scheduled).astimezone(NEW_YORK).isoformat(), ",".join(self.underlyings))
                    for underlying in self.underlyings:
                        if self._stop.is_set() or await self._guarded(self.poll_once(underlying)) is None:
                            return
                    if self.snapshot_times:
                        next_chain = next_snapshot_ns(max(scheduled, self.clock.now_ns(), waited_to),
                                                      self.snapshot_times)
                    else:
                        next_chain = scheduled + int(self.interval_s * NS_PER_S)
                    continue
                target = min(next_indices, next_chain)
                await self._wait((target - now) / NS_PER_S)
                waited_to = target
        finally:
            self._running = None

    async def stop(self) -> None:
        """Stop polling; a snapshot in flight is abandoned (its final page never recorded)."""
        self._stop.set()
        task = self._running
        if task is not None and not task.done():
            task.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=5.0)
            except (asyncio.CancelledError, asyncio.TimeoutError, Exception):
                pass

    async def poll_indices(self) -> bool:
        """One indices snapshot, recorded as a PolygonResponse; False (and a SourceError) on failure.

        Rows the plan lacks (NOT_ENTITLED, HTTP 200) are part of the recorded page, not a
        failure; each ticker turning to an error or back is logged once.
        """
        self.snapshot_id += 1
        snapshot_id = self.snapshot_id
        recorded: list[PolygonResponse] = []

        def record(page: FetchedPage) -> None:
            ev = PolygonResponse(
                ts_event=page.ts_recv, ts_recv=page.ts_recv, underlying=INDICES_UNDERLYING, path=page.path,
                query=page.query, status=page.status, request_id=page.request_id, elapsed_ns=page.elapsed_ns,
                body=page.body, snapshot_id=snapshot_id, page=0, final=True)
            recorded.append(ev)
            self.emit(ev)

        try:
            await self.client.fetch_indices(self.index_tickers, on_page=record)
            rows = index_values(recorded[-1])
        except (MiaError, httpx.HTTPError) as exc:
            self._indices_failed(exc)
            return False
        for row in rows:
            before = self._index_errors.get(row.ticker, "")
            if row.error != before:
                if row.error:
                    log.warning("polygon index row error ticker=%s error=%s", row.ticker, row.error)
                else:
                    log.info("polygon index row back ticker=%s", row.ticker)
                self._index_errors[row.ticker] = row.error
        self._indices_last_good_ns = recorded[-1].ts_recv
        if self._indices_available is not True:
            self._indices_available = True
            now = self.clock.now_ns()
            ok = sum(1 for r in rows if not r.error)
            self.emit(FeedStatus(ts_event=now, ts_recv=now, source=SOURCE, status=FEED_AVAILABLE,
                                 detail=f"indices: {ok} of {len(rows)} values"))
        return True

    def _indices_failed(self, exc: BaseException) -> None:
        now = self.clock.now_ns()
        status = exc.status if isinstance(exc, PolygonHttpError) else 0
        message = self.client.redact(str(exc)) or type(exc).__name__
        last = self._indices_last_good_ns
        if last:
            fallback = f"using index values from {utc_datetime(last):%H:%M:%S} UTC, {(now - last) // NS_PER_S} s old"
            kind, age = FALLBACK_PREVIOUS, now - last
        else:
            fallback, kind, age = "none: no index values yet", FALLBACK_NONE, 0
        log.warning("polygon indices failed error=%s fallback=%s", message, fallback)
        self.emit(SourceError(ts_event=now, ts_recv=now, source=SOURCE, error=f"indices: {type(exc).__name__}: {message}",
                              fallback=fallback, stale_age_ns=age, underlying=INDICES_UNDERLYING, status=status,
                              fallback_kind=kind))
        if self._indices_available is not False:
            self._indices_available = False
            self.emit(FeedStatus(ts_event=now, ts_recv=now, source=SOURCE, status=FEED_UNAVAILABLE,
                                 detail=f"indices: {message}"))

    async def poll_once(self, underlying: str) -> bool:
        """Fetch one snapshot of `underlying`, recording its pages; False (and a SourceError) on failure."""
        plain = plain_underlying(underlying)
        state = self._state.setdefault(plain, _UnderlyingState())
        self.snapshot_id += 1
        snapshot_id = self.snapshot_id

        # The pages as the gamma reducer reads them, live and in replay, counted as they arrive
        # (a page at a time, between network waits): which rows can it place? The same counter
        # builds the ChainSnapshot logged right after the final page (same ts_recv, nothing in
        # between): the columns the reducers would have parsed from these very pages.
        counter = ChainRowCounter(keep=self.chain_snapshots)
        unreadable: list[PolygonDecodeError] = []

        def record(page: FetchedPage) -> None:
            ev = PolygonResponse(
                ts_event=page.ts_recv, ts_recv=page.ts_recv, underlying=plain, path=page.path,
                query=page.query, status=page.status, request_id=page.request_id,
                elapsed_ns=page.elapsed_ns, body=page.body, snapshot_id=snapshot_id, page=page.page,
                final=page.final)
            self.emit(ev)
            if not unreadable:
                try:
                    counter.add(ev)
                except PolygonDecodeError as exc:  # the client raises its own for a bad page
                    unreadable.append(exc)
            if ev.final and self.chain_snapshots and not unreadable:
                self.emit(counter.snapshot())

        try:
            fetch = await self.client.fetch_chain(plain, on_page=record, **self.filters)
        except (MiaError, httpx.HTTPError) as exc:
            self._failed(plain, state, exc)
            return False
        state.pages_last = fetch.requests
        if unreadable:  # the client could read it, the reducer cannot: no levels will come
            self._failed(plain, state, unreadable[0])
            return False
        count = counter.count()
        if count.rows and not count.placed:
            self._failed(plain, state, None, error=self.client.redact(count.describe()), status=200,
                         what="unusable chain")
            return False
        state.last_good_ns = fetch.pages[-1].ts_recv
        now = self.clock.now_ns()
        if count.n_dropped:
            error = self.client.redact(count.describe())
            log.warning("polygon chain rows dropped underlying=%s error=%s", plain, error)
            self.emit(SourceError(ts_event=now, ts_recv=now, source=SOURCE, underlying=plain, status=200,
                                  error=error, fallback=f"using the {count.placed} contracts placed",
                                  fallback_kind=FALLBACK_PARTIAL))
        if fetch.stop_reason != "complete":
            # The chain is usable (rows de-duplicated) but paging did not end cleanly: say so.
            self.emit(SourceError(ts_event=now, ts_recv=now, source=SOURCE, underlying=plain, status=200,
                                  error=f"{plain}: paging stopped ({fetch.stop_reason}) after {len(fetch.pages)} pages",
                                  fallback=f"using the {len(fetch.contracts)} contracts received",
                                  fallback_kind=FALLBACK_PARTIAL))
        self._set_available(plain, state, True, f"{plain}: chain of {count.placed} contracts")
        return True

    def _failed(self, plain: str, state: _UnderlyingState, exc: BaseException | None, *, error: str = "",
                status: int = 0, what: str = "") -> None:
        """A snapshot that gave no chain: a SourceError with the fallback, and the feed unavailable.

        Either `exc` (its class and message) or `error`/`status`/`what` (the text is ours, redacted).
        """
        now = self.clock.now_ns()
        if exc is not None:
            status = exc.status if isinstance(exc, PolygonHttpError) else 0
            message = self.client.redact(str(exc)) or type(exc).__name__
            error = f"{type(exc).__name__}: {message}"
            what = "entitlement" if isinstance(exc, EntitlementError) else "error"
        else:
            message = error
        if state.last_good_ns:
            age_ns = now - state.last_good_ns
            at = utc_datetime(state.last_good_ns)
            fallback = f"using chain from {at:%H:%M:%S} UTC, {age_ns // NS_PER_S} s old"
            kind = FALLBACK_PREVIOUS
        else:
            age_ns = 0
            fallback = "none: no chain yet"
            kind = FALLBACK_NONE
        log.warning("polygon chain failed underlying=%s error=%s fallback=%s", plain, message, fallback)
        self.emit(SourceError(ts_event=now, ts_recv=now, source=SOURCE, error=error,
                              fallback=fallback, stale_age_ns=age_ns, underlying=plain, status=status,
                              fallback_kind=kind))
        self._set_available(plain, state, False, f"{plain}: {what}: {message}")

    def _set_available(self, plain: str, state: _UnderlyingState, available: bool, detail: str) -> None:
        if state.available is available:
            return
        state.available = available
        now = self.clock.now_ns()
        self.emit(FeedStatus(ts_event=now, ts_recv=now, source=SOURCE,
                             status=FEED_AVAILABLE if available else FEED_UNAVAILABLE, detail=detail))
