"""Polygon (Massive) WebSocket streams, sans-IO: message text -> typed events, and which contracts.

A stream message is a JSON array of events (massive.com docs, WebSocket: Options Trades ``T``,
Options Quotes ``Q``, Indices Value ``V``, status messages ``ev: "status"``)::

    [{"ev":"T","sym":"O:SPXW251219C05000000","x":65,"p":12.3,"s":5,"c":[209],"t":1766163600123,"q":9}]
    [{"ev":"Q","sym":"O:SPXW...","bx":302,"ax":323,"bp":12.2,"ap":12.4,"bs":40,"as":12,"t":...,"q":...}]
    [{"ev":"V","val":6012.35,"T":"I:SPX","t":1766163600000}]
    [{"ev":"status","status":"auth_success","message":"authenticated"}]

``StreamParser.parse`` turns one message into ``OptionTrade`` / ``OptionQuote`` / ``IndexValue``
events (``ts_event`` from ``t`` ms), status messages into ``FeedStatus`` / ``SourceError``, and a
message that does not decode (or an element of it) into a ``SourceError`` naming what was wrong;
the client records the raw message beside them (``PolygonStreamFrame``). The contract is parsed
once per ticker from its OCC symbol (``models.occ_contract``). Trades repeated by the server after
a resubscription (the same ``(sym, q)``) are dropped within a bounded window. The parser is a pure
function of the messages it was fed, in order: live and a replay of the recorded frames agree.

``QuoteSelector`` chooses the contracts whose quotes to stream: the N nearest the money on the
nearest expiries of each underlying (Polygon allows about 1,000 quoted contracts per connection),
re-chosen as spot moves.
"""

from __future__ import annotations

import collections
import math
from typing import Final, Iterable, Sequence, Union

import msgspec

from mia.engine.clock import NS_PER_MS
from mia.engine.events import (
    FALLBACK_NONE,
    FEED_CONNECTED,
    FEED_LOGGED_ON,
    FEED_SUBSCRIBED,
    FEED_SUBSCRIPTION_REJECTED,
    Event,
    FeedStatus,
    IndexValue,
    OptionQuote,
    OptionTrade,
    SourceError,
)

from .models import INDEX_ROOTS, OCC_SUFFIX_LEN, OccContract, occ_contract

CLUSTER_OPTIONS: Final = "options"
CLUSTER_INDICES: Final = "indices"
CLUSTERS: Final = (CLUSTER_OPTIONS, CLUSTER_INDICES)
QUOTE_LIMIT: Final = 1000  # quoted contracts per options connection (massive.com docs, Options Quotes)
DEDUPE_WINDOW: Final = 200_000  # (sym, q) of the last trades kept to drop a server's repeats
_TICKER_CACHE_MAX: Final = 200_000
_EXAMPLE_CHARS: Final = 120
_MISS: Final = object()

# status values (the `status` field of ev "status")
STATUS_CONNECTED: Final = "connected"
STATUS_AUTH_SUCCESS: Final = "auth_success"
STATUS_AUTH_FAILED: Final = "auth_failed"
STATUS_SUCCESS: Final = "success"  # subscribe / unsubscribe acknowledged
STATUS_MAX_CONNECTIONS: Final = "max_connections"  # a newer connection on the key closed this one


# --- wire models --------------------------------------------------------------------------------


class WsTrade(msgspec.Struct, tag_field="ev", tag="T", frozen=True, gc=False):
    sym: str
    p: float
    s: float
    t: int
    x: int = 0
    c: list[int] = []
    q: int = 0


class WsQuote(msgspec.Struct, tag_field="ev", tag="Q", frozen=True, gc=False, rename={"as_": "as"}):
    sym: str
    t: int
    bp: float = math.nan
    ap: float = math.nan
    bs: float = 0.0
    as_: float = 0.0
    bx: int = 0
    ax: int = 0
    q: int = 0


class WsValue(msgspec.Struct, tag_field="ev", tag="V", frozen=True, gc=False, rename={"ticker": "T"}):
    val: float
    ticker: str
    t: int


class WsStatus(msgspec.Struct, tag_field="ev", tag="status", frozen=True, gc=False):
    status: str
    message: str = ""


class _Ev(msgspec.Struct, frozen=True, gc=False):
    ev: str = ""


WsEvent = Union[WsTrade, WsQuote, WsValue, WsStatus]
_frame_decoder: Final = msgspec.json.Decoder(list[WsEvent])
_raw_decoder: Final = msgspec.json.Decoder(list[msgspec.Raw])
_event_decoder: Final = msgspec.json.Decoder(WsEvent)
_ev_decoder: Final = msgspec.json.Decoder(_Ev)
_KNOWN_EV: Final = frozenset({"T", "Q", "V", "status"})


class StreamStatus(msgspec.Struct, frozen=True, gc=False):
    """One status message as the client acts on it (auth result, acknowledgements)."""

    status: str
    message: str


# --- the parser ---------------------------------------------------------------------------------


class StreamParser:
    """Messages of one source (one cluster) -> events; see the module doc.

    `roots`: the OCC roots whose trades and quotes are kept ("SPX", "SPXW", ...); None keeps
    every option. `parse` appends to `out` and returns the status messages it held.
    """

    def __init__(self, source: str, *, roots: Iterable[str] | None = None,
                 dedupe_window: int = DEDUPE_WINDOW) -> None:
        self.source = source
        self.roots = None if roots is None else frozenset(roots)
        self._contracts: dict[str, OccContract | None] = {}
        self._seen: set[tuple[str, int]] = set()
        self._order: collections.deque[tuple[str, int]] = collections.deque()
        self._window = dedupe_window
        self.messages = 0  # events in the frames (every ev)
        self.duplicates = 0  # trades dropped as repeats
        self.filtered = 0  # trades and quotes of other roots
        self.errors = 0  # SourceErrors written for frames or elements that did not decode

    def contract(self, ticker: str) -> OccContract | None:
        """The ticker's contract if it is kept (an OCC option of a wanted root), else None."""
        cache = self._contracts
        c = cache.get(ticker, _MISS)
        if c is _MISS:
            parsed = occ_contract(ticker)
            c = None if parsed.__class__ is str or (self.roots is not None and parsed.root not in self.roots) \
                else parsed
            if len(cache) >= _TICKER_CACHE_MAX:
                cache.clear()
            cache[ticker] = c
        return c  # type: ignore[return-value]

    def parse(self, frame: bytes | str, ts_recv: int, out: list[Event]) -> list[StreamStatus]:
        try:
            items = _frame_decoder.decode(frame)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return self._parse_slow(frame, ts_recv, out)
        return self._emit(items, ts_recv, out)

    def _emit(self, items: Sequence[WsEvent], ts_recv: int, out: list[Event]) -> list[StreamStatus]:
        statuses: list[StreamStatus] = []
        acks: list[str] | None = None
        at = 0
        contract = self.contract
        cache_get = self._contracts.get  # the known tickers without a call each
        seen, order, window = self._seen, self._order, self._window
        self.messages += len(items)
        for m in items:
            cls = m.__class__
            if cls is WsTrade:
                c = cache_get(m.sym, _MISS)
                if c is _MISS:
                    c = contract(m.sym)
                if c is None:
                    self.filtered += 1
                    continue
                key = (m.sym, m.q)
                if key in seen:
                    self.duplicates += 1
                    continue
                seen.add(key)
                order.append(key)
                if len(order) > window:
                    seen.discard(order.popleft())
                out.append(OptionTrade(m.t * NS_PER_MS, ts_recv, m.sym, c.underlying, c.right, c.strike,
                                       c.expiry_ns, m.p, m.s, m.x, m.c, m.q))
            elif cls is WsQuote:
                c = cache_get(m.sym, _MISS)
                if c is _MISS:
                    c = contract(m.sym)
                if c is None:
                    self.filtered += 1
                    continue
                out.append(OptionQuote(m.t * NS_PER_MS, ts_recv, m.sym, c.underlying, c.right, c.strike,
                                       c.expiry_ns, m.bp, m.bs, m.ap, m.as_, m.bx, m.ax, m.q))
            elif cls is WsValue:
                out.append(IndexValue(m.t * NS_PER_MS, ts_recv, m.ticker, m.val))
            else:
                statuses.append(StreamStatus(m.status, m.message))
                if m.status == STATUS_SUCCESS and acks is not None:
                    acks.append(m.message)  # one FeedStatus for a frame of acknowledgements
                    continue
                if m.status == STATUS_SUCCESS:
                    acks = [m.message]
                    at = len(out)
                    out.append(None)  # type: ignore[arg-type]
                    continue
                out.append(self._status_event(m, ts_recv))
        if acks is not None:
            out[at] = FeedStatus(ts_recv, ts_recv, self.source, FEED_SUBSCRIBED,
                                 detail=f"{STATUS_SUCCESS}: {'; '.join(acks)}")
        return statuses

    def _status_event(self, m: WsStatus, ts: int) -> Event:
        s, text = m.status, m.message
        detail = f"{s}: {text}" if text else s
        if s == STATUS_CONNECTED:
            return FeedStatus(ts, ts, self.source, FEED_CONNECTED, detail=detail)
        if s == STATUS_AUTH_SUCCESS:
            return FeedStatus(ts, ts, self.source, FEED_LOGGED_ON, detail=detail)
        if s == STATUS_SUCCESS:
            return FeedStatus(ts, ts, self.source, FEED_SUBSCRIBED, detail=detail)
        if s == STATUS_AUTH_FAILED:
            return SourceError(ts, ts, self.source, f"authentication failed: {text or s}",
                               fallback="none", fallback_kind=FALLBACK_NONE)
        if "subscri" in text.lower():
            return FeedStatus(ts, ts, self.source, FEED_SUBSCRIPTION_REJECTED, detail=detail)
        # "error", "max_connections", "auth_timeout", anything new: the server's words, kept
        return SourceError(ts, ts, self.source, f"server status {detail}", fallback="none",
                           fallback_kind=FALLBACK_NONE)

    def _parse_slow(self, frame: bytes | str, ts_recv: int, out: list[Event]) -> list[StreamStatus]:
        """A message the fast path refused: element by element, each bad one a SourceError."""
        try:
            raws = _raw_decoder.decode(frame)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._error(ts_recv, out, f"stream message ({len(frame)} bytes) is not a JSON array: {exc}", frame)
            return []
        good: list[WsEvent] = []
        for i, raw in enumerate(raws):
            try:
                ev = _ev_decoder.decode(raw).ev
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self._error(ts_recv, out, f"stream message element {i} is not an event object: {exc}", raw)
                continue
            if ev not in _KNOWN_EV:  # aggregates, FMV, anything new: the raw frame keeps it
                self.messages += 1
                continue
            try:
                good.append(_event_decoder.decode(raw))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self.messages += 1
                self._error(ts_recv, out, f"stream message element {i} (ev {ev!r}) does not decode: {exc}", raw)
        return self._emit(good, ts_recv, out)

    def _error(self, ts: int, out: list[Event], what: str, raw: bytes | str) -> None:
        self.errors += 1
        text = bytes(raw).decode("utf-8", "replace") if not isinstance(raw, str) else raw
        example = text[:_EXAMPLE_CHARS] + ("..." if len(text) > _EXAMPLE_CHARS else "")
        out.append(SourceError(ts, ts, self.source, f"{what} (message {example!r})",
                               fallback="none: the raw message is recorded", fallback_kind=FALLBACK_NONE))


# --- subscriptions ------------------------------------------------------------------------------


def subscription_params(channel: str, tickers: Iterable[str]) -> str:
    """ "T", ["O:SPXW...", "O:NDXP..."] -> "T.O:SPXW...,T.O:NDXP..." (the subscribe params)."""
    return ",".join(f"{channel}.{t}" for t in tickers)


class Listing(msgspec.Struct, frozen=True, gc=False):
    """The listed contracts of one underlying quotes are chosen from (a chain's tickers)."""

    tickers: tuple[str, ...]
    strike: tuple[float, ...]
    expiry_ns: tuple[int, ...]


def listing_of(tickers: Iterable[str]) -> Listing:
    """A Listing from OCC tickers (those that do not parse are left out)."""
    ts, ks, es = [], [], []
    for t in tickers:
        c = occ_contract(t)
        if c.__class__ is str:
            continue
        ts.append(t)
        ks.append(c.strike)  # type: ignore[union-attr]
        es.append(c.expiry_ns)  # type: ignore[union-attr]
    return Listing(tuple(ts), tuple(ks), tuple(es))


class QuoteSelector:
    """Which contracts' quotes to stream: per underlying, the `per_underlying` contracts nearest
    spot on its `expiries` nearest unsettled expiries, from the last listing seen (a chain).

    `choose(now_ns)` returns the new set when it should change (spot moved `move_frac` of spot
    since the last choice, an expiry settled, a new listing), else None. Pure and clocked by the
    caller.
    """

    def __init__(self, underlyings: Sequence[str], *, limit: int = 500, expiries: int = 2,
                 move_frac: float = 0.001) -> None:
        if not 0 <= limit <= QUOTE_LIMIT:
            raise ValueError(f"quote limit {limit} is not within 0..{QUOTE_LIMIT} (contracts per connection)")
        self.underlyings = list(underlyings)
        self.limit = limit
        self.expiries = expiries
        self.move_frac = move_frac
        self.spot: dict[str, float] = {}
        self.listings: dict[str, Listing] = {}
        self.current: frozenset[str] = frozenset()
        self._chosen_at: dict[str, float] = {}  # spot at the last choice
        self._first_expiry: dict[str, int] = {}
        self._dirty = False

    def on_spot(self, underlying: str, spot: float) -> None:
        if underlying in self.underlyings and spot > 0 and math.isfinite(spot):
            self.spot[underlying] = spot

    def on_listing(self, underlying: str, listing: Listing) -> None:
        if underlying in self.underlyings and listing.tickers:
            old = self.listings.get(underlying)
            if old is None or old.tickers != listing.tickers:
                self.listings[underlying] = listing
                self._dirty = True

    def _due(self, u: str, now_ns: int) -> bool:
        spot = self.spot.get(u)
        if spot is None or u not in self.listings:
            return False
        at = self._chosen_at.get(u)
        if at is None or abs(spot - at) >= self.move_frac * at:
            return True
        return self._first_expiry.get(u, 0) <= now_ns

    def choose(self, now_ns: int) -> frozenset[str] | None:
        if not self.limit or not (self._dirty or any(self._due(u, now_ns) for u in self.underlyings)):
            return None
        self._dirty = False
        ready = [u for u in self.underlyings if u in self.spot and u in self.listings]
        if not ready:
            return None
        share = self.limit // len(ready)
        chosen: list[str] = []
        for u in ready:
            spot, lst = self.spot[u], self.listings[u]
            live = sorted({e for e in lst.expiry_ns if e > now_ns})[: self.expiries]
            keep = set(live)
            rows = [i for i, e in enumerate(lst.expiry_ns) if e in keep]
            rows.sort(key=lambda i: (abs(lst.strike[i] - spot), lst.expiry_ns[i], lst.tickers[i]))
            chosen.extend(lst.tickers[i] for i in rows[:share])
            self._chosen_at[u] = spot
            self._first_expiry[u] = live[0] if live else 2**62
        new = frozenset(chosen)
        if new == self.current:
            return None
        self.current = new
        return new


def stream_roots(underlyings: Iterable[str]) -> list[str]:
    """The OCC roots whose options belong to `underlyings`: "SPX" -> SPX and SPXW (INDEX_ROOTS);
    an underlying without listed index roots is its own root."""
    wanted = list(underlyings)
    roots = [r for r, u in INDEX_ROOTS.items() if u in wanted]
    return roots + [u for u in wanted if u not in INDEX_ROOTS.values()]


# --- the frames against the events they gave ------------------------------------------------------


class FrameCheck(msgspec.Struct, frozen=True):
    """What `check_stream_frames` found: every recorded frame re-parsed into its recorded events."""

    frames: int
    events: int
    mismatch: str | None = None

    @property
    def ok(self) -> bool:
        return self.mismatch is None


_PARSED_KINDS: Final = (OptionTrade, OptionQuote, IndexValue, FeedStatus, SourceError)


def check_stream_frames(events: Iterable[Event]) -> FrameCheck:
    """Re-parse every `PolygonStreamFrame` of a recording (its live events, in log order) with
    the parser the client ran, and prove the events recorded after each frame, with its
    `ts_recv` and source, equal to what the frame gives (the `Gap` the client writes there is
    the client's own). A new recording (`RecordingStarted`) starts fresh parsers, as a restarted
    recorder does. The roots kept live are those of the recorded trades and quotes: a root the
    live parser filtered out never appears in the events, so its re-parsed rows are left out too.
    """
    from mia.engine.events import Gap, PolygonStreamFrame, RecordingStarted

    rows = list(events)
    roots = {t.ticker[2:-OCC_SUFFIX_LEN] for t in rows if t.__class__ is OptionTrade or t.__class__ is OptionQuote}
    parsers: dict[str, StreamParser] = {}
    pending: dict[str, tuple[PolygonStreamFrame, list[Event], int]] = {}  # source -> (frame, expected, seen)
    frames = compared = 0

    def close(source: str) -> str | None:
        frame, want, seen = pending.pop(source)
        if seen != len(want):
            return (f"{source} frame at ts_recv {frame.ts_recv}: {len(want)} events from the frame, {seen} recorded "
                    f"after it (frame {frame.frame[:120]!r})")
        return None

    for ev in rows:
        cls = ev.__class__
        if cls is RecordingStarted:
            for source in list(pending):
                if (msg := close(source)) is not None:
                    return FrameCheck(frames, compared, msg)
            parsers.clear()
            continue
        source = getattr(ev, "source", None)
        if cls is PolygonStreamFrame:
            if ev.source in pending and (msg := close(ev.source)) is not None:
                return FrameCheck(frames, compared, msg)
            parser = parsers.get(ev.source)
            if parser is None:
                parser = parsers[ev.source] = StreamParser(ev.source, roots=roots if ev.cluster == CLUSTER_OPTIONS
                                                           else None)
            want: list[Event] = []
            parser.parse(ev.frame, ev.ts_recv, want)
            pending[ev.source] = (ev, want, 0)
            frames += 1
            continue
        if source is None:  # trades, quotes and values name no source: their cluster's frame
            cluster = CLUSTER_INDICES if cls is IndexValue else CLUSTER_OPTIONS
            source = next((s for s, p in pending.items() if p[0].cluster == cluster), None)
        if source in pending and cls is not Gap and isinstance(ev, _PARSED_KINDS) \
                and ev.ts_recv == pending[source][0].ts_recv:
            frame, want, seen = pending[source]
            if seen >= len(want) or want[seen] != ev:
                expected = repr(want[seen]) if seen < len(want) else "nothing"
                return FrameCheck(frames, compared, f"{source} frame at ts_recv {frame.ts_recv}, event {seen}: "
                                                    f"recorded {ev!r}, the frame gives {expected}")
            pending[source] = (frame, want, seen + 1)
            compared += 1
    for source in list(pending):
        if (msg := close(source)) is not None:
            return FrameCheck(frames, compared, msg)
    return FrameCheck(frames, compared)
