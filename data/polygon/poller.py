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
import logging
from dataclasses import dataclass
from typing import Callable, Final, Sequence

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
from .errors import EntitlementError, PolygonHttpError
from .models import ChainRowCounter, PolygonDecodeError, plain_underlying

log = logging.getLogger(__name__)

SOURCE: Final = "polygon"
MIN_INTERVAL_S: Final = 10.0  # even an unlimited plan gains nothing polling faster (data is 15-min delayed or snapshot-cached)
DEFAULT_PAGES_PER_CHAIN: Final = 40  # SPX within 45 days and +-20% is about 40 pages of 250 until measured


@dataclass
class _UnderlyingState:
    last_good_ns: int = 0  # ts_recv of the final page of the last complete snapshot (0: none yet)
    available: bool | None = None  # None until the first outcome
    pages_last: int = 0


class PolygonPoller:
    """Polls each underlying's chain in turn, every `interval_s` (default: what the plan allows)."""

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
    ) -> None:
        self.client = client
        self.underlyings = tuple(plain_underlying(u) for u in underlyings)
        self.fixed_interval_s = interval_s
        self.emit = emit
        self.clock = clock
        self.filters = {"expiry_days": expiry_days, "strike_window": strike_window,
                        "contract_type": contract_type, "limit": limit}
        self.snapshot_id = 0
        self._state = {u: _UnderlyingState() for u in self.underlyings}
        self._stop = asyncio.Event()
        self._running: asyncio.Task[None] | None = None

    # schedule

    @property
    def interval_s(self) -> float:
        """The fixed interval, else the fastest cycle whose calls fit the plan's per-minute budget."""
        if self.fixed_interval_s is not None:
            return self.fixed_interval_s
        cpm = self.client.calls_per_minute
        if cpm is None:
            return MIN_INTERVAL_S
        pages = sum(s.pages_last or DEFAULT_PAGES_PER_CHAIN for s in self._state.values())
        return max(MIN_INTERVAL_S, 60.0 * pages / cpm)

    def last_good_ns(self, underlying: str) -> int:
        return self._state[plain_underlying(underlying)].last_good_ns

    # polling

    async def run(self) -> None:
        """Poll every underlying each cycle until stop()."""
        self._stop.clear()
        try:
            while not self._stop.is_set():
                cycle_start = self.clock.now_ns()
                for underlying in self.underlyings:
                    if self._stop.is_set():
                        return
                    self._running = asyncio.ensure_future(self.poll_once(underlying))
                    try:
                        await self._running
                    except asyncio.CancelledError:
                        if self._stop.is_set():
                            log.info("polygon poll of %s cancelled by stop", underlying)
                            return
                        raise
                    finally:
                        self._running = None
                spent_s = (self.clock.now_ns() - cycle_start) / NS_PER_S
                wait_s = max(0.0, self.interval_s - spent_s)
                try:
                    await asyncio.wait_for(self._stop.wait(), timeout=wait_s)
                except asyncio.TimeoutError:
                    pass
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

    async def poll_once(self, underlying: str) -> bool:
        """Fetch one snapshot of `underlying`, recording its pages; False (and a SourceError) on failure."""
        plain = plain_underlying(underlying)
        state = self._state.setdefault(plain, _UnderlyingState())
        self.snapshot_id += 1
        snapshot_id = self.snapshot_id

        # The pages as the gamma reducer reads them, live and in replay, counted as they arrive
        # (a page at a time, between network waits): which rows can it place?
        counter = ChainRowCounter()
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
