"""Polygon (Massive) options-chain snapshot models, and a chain's pages as numpy columns.

The vendor JSON of ``GET /v3/snapshot/options/{underlying}`` decodes into the frozen msgspec
structs below (every field the reference documents; any of them may be missing, so all are
optional). ``chain_columns`` turns the recorded ``PolygonResponse`` pages of one snapshot into
``ChainColumns`` for the gamma reducer, and ``chain_snapshot`` into the ``ChainSnapshot`` event
the poller logs after each snapshot's final page (so replay reads columns, not JSON). Both are
pure functions of the events: no clock, no logging, no I/O. ``chain_row_count`` runs the
same row selection and says which rows it dropped and why (the poller reports them).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Final, Sequence
from zoneinfo import ZoneInfo

import msgspec
import numpy as np

from mia.engine.clock import NS_PER_S
from mia.engine.columns import CHAIN_SNAPSHOT_COLUMNS, RIGHT_CALL, RIGHT_PUT, ChainColumns
from mia.engine.errors import RemoteProtocolError
from mia.engine.events import ChainSnapshot, PolygonResponse

NEW_YORK: Final = ZoneInfo("America/New_York")

# Roots whose contracts settle at the open (SOQ, 09:30 New York) on their expiration date:
# the standard third-Friday monthlies. Their weekly/daily siblings (SPXW, NDXP, RUTW) settle
# at the 16:00 close. Source: reference/polygon_gamma.md B5 ("root SPX, not SPXW").
AM_SETTLED_ROOTS: Final = frozenset({"SPX", "NDX", "RUT", "DJX"})
# Index underlyings take the "I:" prefix in the snapshot path (reference A1, Indices).
INDEX_UNDERLYINGS: Final = frozenset({"SPX", "NDX", "RUT", "DJX", "VIX", "XSP", "OEX", "XEO"})

AM_SETTLE_TIME: Final = dt.time(9, 30)
PM_SETTLE_TIME: Final = dt.time(16, 0)
OCC_SUFFIX_LEN: Final = 15  # yymmdd + C/P + 8-digit strike x 1000
OCC_STRIKE_LEN: Final = 8
# An OCC option symbol without its strike digits: "O:" (Polygon's prefix, optional), the root (1 to
# 6 letters or digits), yymmdd and C/P. The root decides the settlement time (AM_SETTLED_ROOTS).
_OCC_HEAD: Final = re.compile(r"(?:O:)?([A-Z0-9]{1,6})[0-9]{6}[CP]")

# Why chain_columns drops a row (ChainRowCount.dropped keys).
DROP_NO_DETAILS: Final = "no contract details"
DROP_NO_TICKER: Final = "no ticker"
DROP_NO_STRIKE: Final = "no strike"
DROP_NO_EXPIRY: Final = "no expiration date"
DROP_NOT_CALL_PUT: Final = "contract type not call or put"
DROP_NOT_OCC: Final = "ticker not an OCC option symbol"
DROP_BAD_EXPIRY: Final = "expiration date not a date"


class PolygonDecodeError(RemoteProtocolError):
    """A Polygon response body is not a valid options-chain page (or error body)."""


# --- vendor models ----------------------------------------------------------------------------


class ChainDay(msgspec.Struct, frozen=True, gc=False):
    """The contract's most recent daily bar."""

    open: float | None = None
    high: float | None = None
    low: float | None = None
    close: float | None = None
    previous_close: float | None = None
    change: float | None = None
    change_percent: float | None = None
    volume: float | None = None
    vwap: float | None = None
    last_updated: int | None = None


class ChainDetails(msgspec.Struct, frozen=True, gc=False):
    contract_type: str | None = None  # call | put | other
    exercise_style: str | None = None  # american | european | bermudan
    expiration_date: str | None = None  # YYYY-MM-DD
    shares_per_contract: float | None = None
    strike_price: float | None = None
    ticker: str | None = None  # "O:SPXW250117C05900000"


class ChainGreeks(msgspec.Struct, frozen=True, gc=False):
    """Per $1 of underlying (gamma, delta), per vol point (vega), per calendar day (theta)."""

    delta: float | None = None
    gamma: float | None = None
    theta: float | None = None
    vega: float | None = None


class ChainLastQuote(msgspec.Struct, frozen=True, gc=False):
    ask: float | None = None
    ask_size: float | None = None
    bid: float | None = None
    bid_size: float | None = None
    midpoint: float | None = None
    ask_exchange: int | None = None
    bid_exchange: int | None = None
    last_updated: int | None = None
    timeframe: str | None = None  # DELAYED | REAL-TIME


class ChainLastTrade(msgspec.Struct, frozen=True, gc=False):
    price: float | None = None
    size: float | None = None
    exchange: int | None = None
    sip_timestamp: int | None = None
    conditions: list[int] | None = None
    timeframe: str | None = None


class ChainUnderlying(msgspec.Struct, frozen=True, gc=False):
    """`value` for index underlyings (I:SPX), `price` for equities."""

    ticker: str | None = None
    change_to_break_even: float | None = None
    price: float | None = None
    value: float | None = None
    last_updated: int | None = None
    timeframe: str | None = None


class ChainContract(msgspec.Struct, frozen=True, gc=False):
    """One row of `results`: a contract's snapshot."""

    details: ChainDetails | None = None
    break_even_price: float | None = None
    day: ChainDay | None = None
    greeks: ChainGreeks | None = None
    implied_volatility: float | None = None
    last_quote: ChainLastQuote | None = None
    last_trade: ChainLastTrade | None = None
    open_interest: float | None = None
    underlying_asset: ChainUnderlying | None = None
    fmv: float | None = None  # Business plans only

    @property
    def ticker(self) -> str | None:
        return self.details.ticker if self.details is not None else None


class ChainPage(msgspec.Struct, frozen=True, gc=False):
    """One page of the chain snapshot. `next_url` is absent on the last page."""

    status: str = ""
    request_id: str = ""
    results: list[ChainContract] | None = None  # absent or null when empty
    next_url: str | None = None


class PolygonErrorBody(msgspec.Struct, frozen=True, gc=False):
    """401/429 bodies say `error`, 403 bodies say `message`; both are read."""

    status: str = ""
    request_id: str = ""
    error: str | None = None
    message: str | None = None

    @property
    def text(self) -> str:
        return self.error or self.message or self.status or ""


class PageEnvelope(msgspec.Struct, frozen=True, gc=False):
    """The paging fields only: the client reads these without decoding the rows."""

    status: str = ""
    request_id: str = ""
    next_url: str | None = None


class _LeanDay(msgspec.Struct, frozen=True, gc=False):
    volume: float | None = None


class _LeanQuote(msgspec.Struct, frozen=True, gc=False):
    bid: float | None = None
    ask: float | None = None


class _LeanUnderlying(msgspec.Struct, frozen=True, gc=False):
    price: float | None = None
    value: float | None = None


class _LeanContract(msgspec.Struct, frozen=True, gc=False):
    """The fields chain_columns reads; msgspec skips the rest of each row without building it."""

    details: ChainDetails | None = None
    day: _LeanDay | None = None
    greeks: ChainGreeks | None = None
    implied_volatility: float | None = None
    last_quote: _LeanQuote | None = None
    open_interest: float | None = None
    underlying_asset: _LeanUnderlying | None = None


class _LeanPage(msgspec.Struct, frozen=True, gc=False):
    results: list[_LeanContract] | None = None


_page_decoder: Final = msgspec.json.Decoder(ChainPage)
_lean_decoder: Final = msgspec.json.Decoder(_LeanPage)
_error_decoder: Final = msgspec.json.Decoder(PolygonErrorBody)
_envelope_decoder: Final = msgspec.json.Decoder(PageEnvelope)


def parse_page(body: bytes) -> ChainPage:
    """Decode one chain page; a body that is not one raises PolygonDecodeError."""
    try:
        return _page_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise PolygonDecodeError(f"options-chain page ({len(body)} bytes) does not decode: {exc}") from None


def parse_envelope(body: bytes) -> PageEnvelope:
    try:
        return _envelope_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise PolygonDecodeError(f"response body ({len(body)} bytes) does not decode: {exc}") from None


def parse_error(body: bytes) -> PolygonErrorBody:
    """Decode an error body; an empty or foreign body gives an empty PolygonErrorBody."""
    try:
        return _error_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return PolygonErrorBody()


# --- contract naming and settlement -----------------------------------------------------------


def occ_root(ticker: str) -> str:
    """The OCC root of an option ticker: "O:SPXW250117C05900000" -> "SPXW"."""
    body = ticker[2:] if ticker.startswith("O:") else ticker
    return body[:-OCC_SUFFIX_LEN] if len(body) > OCC_SUFFIX_LEN else ""


def plain_underlying(underlying: str) -> str:
    """ "I:SPX" -> "SPX"; equities unchanged."""
    return underlying[2:] if underlying.startswith("I:") else underlying


def api_underlying(underlying: str) -> str:
    """The path form: indices get the "I:" prefix ("SPX" -> "I:SPX"), equities stay as they are."""
    if underlying.startswith("I:"):
        return underlying
    return f"I:{underlying}" if underlying in INDEX_UNDERLYINGS else underlying


_SETTLE_CACHE: dict[tuple[str, bool], int] = {}


def settlement_ns(expiration_date: str, am_settled: bool) -> int:
    """The settlement instant (UTC ns) of a contract expiring on `expiration_date` (New York date).

    AM-settled: 09:30 New York; PM-settled: 16:00 New York. Raises ValueError on a bad date.
    """
    key = (expiration_date, am_settled)
    cached = _SETTLE_CACHE.get(key)
    if cached is None:
        day = dt.date.fromisoformat(expiration_date)
        at = dt.datetime.combine(day, AM_SETTLE_TIME if am_settled else PM_SETTLE_TIME, NEW_YORK)
        cached = int(at.timestamp()) * NS_PER_S
        if len(_SETTLE_CACHE) < 100_000:
            _SETTLE_CACHE[key] = cached
    return cached


# --- chain -> columns -------------------------------------------------------------------------


# (ticker without its strike digits, expiration date) -> (AM-settled, settlement ns), or the
# DROP_* reason the row cannot be placed. Whether a contract is AM-settled depends on its root
# alone, and the root on that ticker head alone, so a chain's few thousand rows cost one lookup
# each. Bounded: a day sees a few hundred expiries per root.
_PLACEMENT_CACHE: dict[tuple[str, str], tuple[bool, int] | str] = {}
_EXAMPLE_CHARS: Final = 40


def _placement(head: str, expiration_date: str) -> tuple[bool, int] | str:
    m = _OCC_HEAD.fullmatch(head)
    if m is None:
        return DROP_NOT_OCC
    is_am = m.group(1) in AM_SETTLED_ROOTS
    try:
        return is_am, settlement_ns(expiration_date, is_am)
    except ValueError:
        return DROP_BAD_EXPIRY


# Option roots of an index, folded to the index (the underlying a stream's trades belong to):
# weeklies/dailies and P.M. roots beside the monthly root. Other roots are their own underlying.
INDEX_ROOTS: Final[dict[str, str]] = {
    "SPX": "SPX", "SPXW": "SPX", "NDX": "NDX", "NDXP": "NDX", "RUT": "RUT", "RUTW": "RUT",
    "DJX": "DJX", "XSP": "XSP", "VIX": "VIX", "VIXW": "VIX",
}


class OccContract(msgspec.Struct, frozen=True, gc=False):
    """An option contract as its OCC ticker names it (occ_contract)."""

    root: str  # "SPXW"
    underlying: str  # "SPX" (INDEX_ROOTS folded)
    right: int  # RIGHT_CALL | RIGHT_PUT
    strike: float
    expiry_ns: int  # the settlement instant, UTC ns (AM roots 09:30, others 16:00 New York)
    am_settled: bool


def occ_contract(ticker: str) -> OccContract | str:
    """Parse "O:SPXW251219C05000000" (the "O:" optional), or the DROP_* reason it cannot be.

    The same head rule and settlement rule chain_columns places chain rows with (_placement);
    the expiration date is the ticker's yymmdd (20yy). Pure; callers cache per ticker.
    """
    head, digits = ticker[:-OCC_STRIKE_LEN], ticker[-OCC_STRIKE_LEN:]
    if len(ticker) <= OCC_SUFFIX_LEN or not (digits.isdigit() and digits.isascii()):
        return DROP_NOT_OCC
    yymmdd = head[-7:-1]
    placed = _placement(head, f"20{yymmdd[:2]}-{yymmdd[2:4]}-{yymmdd[4:]}")
    if placed.__class__ is str:
        return placed  # type: ignore[return-value]
    root = occ_root(ticker)
    am, expiry = placed  # type: ignore[misc]
    return OccContract(root=root, underlying=INDEX_ROOTS.get(root, root),
                       right=RIGHT_CALL if head[-1] == "C" else RIGHT_PUT,
                       strike=int(digits) / 1000.0, expiry_ns=expiry, am_settled=am)


class ChainRowCount(msgspec.Struct, frozen=True):
    """What chain_columns made of a snapshot's rows: placed, repeated, or dropped and why."""

    underlying: str
    snapshot_id: int
    rows: int  # rows of `results` over every page
    placed: int  # distinct contracts placed (the rows of ChainColumns)
    duplicates: int  # rows repeating a placed ticker (the paging bugs): not a loss
    dropped: dict[str, int] = {}  # DROP_* reason -> rows, in the order first seen
    examples: dict[str, str] = {}  # DROP_* reason -> the first such row's value, quoted

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    def describe(self) -> str:
        """ "SPX chain: 40 of 40 rows dropped: ticker not an OCC option symbol (e.g. 'FOO')"."""
        parts = []
        for reason, n in self.dropped.items():
            example = self.examples.get(reason)
            shown = reason if len(self.dropped) == 1 else f"{n} {reason}"
            parts.append(f"{shown} (e.g. {example})" if example else shown)
        return (f"{self.underlying} chain: {self.n_dropped} of {self.rows} rows dropped: "
                + "; ".join(parts))


class ChainRowCounter:
    """The one row selection of a snapshot's pages, fed a page at a time.

    chain_columns builds its columns from it; the poller counts with it as pages arrive, so what
    the poller reports as dropped is what every reducer drops, live and in replay. Rows are
    placed first seen first, each ticker once. `add` raises PolygonDecodeError for a page that is
    not a 200 chain page.
    """

    def __init__(self, *, keep: bool = False) -> None:
        self.keep = keep  # keep the placed rows (chain_columns) or only count them
        self.rows = 0
        self.placed = 0
        self.duplicates = 0
        self.dropped: dict[str, int] = {}
        self.examples: dict[str, str] = {}
        self.last: PolygonResponse | None = None
        self.pages = 0
        self._seen: set[str] = set()
        self.kept: list[_LeanContract] = []
        self.details: list[ChainDetails] = []
        self.tickers: list[str] = []
        self.right: list[int] = []
        self.am: list[bool] = []
        self.expiry: list[int] = []

    def _drop(self, reason: str, example: str | None) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        if example is not None and reason not in self.examples:
            self.examples[reason] = repr(example[:_EXAMPLE_CHARS])

    def add(self, resp: PolygonResponse) -> None:
        if resp.path == INDICES_PATH:
            raise PolygonDecodeError(f"{INDICES_PATH} response (snapshot {resp.snapshot_id}) is not a chain page")
        if resp.status != 200:
            raise PolygonDecodeError(
                f"{resp.underlying} snapshot {resp.snapshot_id} page {resp.page}: HTTP {resp.status} is not a chain page"
            )
        try:
            page = _lean_decoder.decode(resp.body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise PolygonDecodeError(
                f"{resp.underlying} snapshot {resp.snapshot_id} page {resp.page}: body ({len(resp.body)} bytes) "
                f"does not decode as an options-chain page: {exc}") from None
        self.last = resp
        self.pages += 1
        results = page.results or ()
        self.rows += len(results)
        # One lean pass picks the rows that can be placed (and their ticker, right, settlement);
        # chain_columns then builds every other column with one list comprehension over the kept
        # rows: a snapshot is thousands of rows, and per-row appends to fifteen lists were most
        # of its cost.
        seen, keep, drop = self._seen, self.keep, self._drop
        kept, details, tickers, right, am, expiry = (self.kept, self.details, self.tickers, self.right, self.am,
                                                     self.expiry)
        cache = _PLACEMENT_CACHE
        strike_digits = -OCC_STRIKE_LEN
        placed_here = 0
        for row in results:
            d = row.details
            if d is None:
                drop(DROP_NO_DETAILS, None)
                continue
            t = d.ticker
            e = d.expiration_date
            if t is None or d.strike_price is None or e is None:
                drop(DROP_NO_TICKER if t is None else DROP_NO_STRIKE if d.strike_price is None else DROP_NO_EXPIRY, t)
                continue
            ct = d.contract_type
            if ct == "call":
                r = RIGHT_CALL
            elif ct == "put":
                r = RIGHT_PUT
            else:
                drop(DROP_NOT_CALL_PUT, ct if ct is not None else "null")
                continue
            if t in seen:
                self.duplicates += 1
                continue
            key = (t[:strike_digits], e)
            if key in cache:
                placed = cache[key]
            else:
                placed = _placement(*key)
                if len(cache) < 100_000:
                    cache[key] = placed
            if placed.__class__ is str:
                drop(placed, e if placed == DROP_BAD_EXPIRY else t)
                continue
            strike = t[strike_digits:]
            if not (strike.isdigit() and strike.isascii()):
                drop(DROP_NOT_OCC, t)
                continue
            seen.add(t)
            placed_here += 1
            if keep:
                kept.append(row)
                details.append(d)
                tickers.append(t)
                right.append(r)
                am.append(placed[0])
                expiry.append(placed[1])
        self.placed += placed_here

    def columns(self) -> ChainColumns:
        """The placed rows as ChainColumns (a counter made with keep=True, fed at least one page)."""
        if self.last is None or not self.keep:
            raise PolygonDecodeError("chain columns: no pages kept")
        return _columns(self)

    def snapshot(self) -> ChainSnapshot:
        """The placed rows as the ChainSnapshot event (see chain_snapshot)."""
        if self.last is None or not self.keep:
            raise PolygonDecodeError("chain snapshot: no pages kept")
        return _snapshot(self)

    def count(self) -> ChainRowCount:
        last = self.last
        return ChainRowCount(underlying="" if last is None else plain_underlying(last.underlying),
                             snapshot_id=-1 if last is None else int(last.snapshot_id), rows=self.rows,
                             placed=self.placed, duplicates=self.duplicates, dropped=dict(self.dropped),
                             examples=dict(self.examples))


def chain_row_count(responses: Sequence[PolygonResponse]) -> ChainRowCount:
    """How chain_columns treats the rows of one snapshot's pages: placed, repeated, dropped (why).

    Same errors as chain_columns (PolygonDecodeError for a page that is not a 200 chain page).
    """
    if not responses:
        raise PolygonDecodeError("chain_row_count: no pages")
    counter = ChainRowCounter()
    for resp in responses:
        counter.add(resp)
    return counter.count()


def _floats(values: list) -> np.ndarray:
    """float64 column of floats and Nones (None -> NaN, the same bits as math.nan)."""
    return np.array(values, dtype=np.float64)


def chain_columns(responses: Sequence[PolygonResponse]) -> ChainColumns:
    """The pages of one snapshot as ChainColumns, one row per distinct contract ticker.

    Rows keep first-seen order (pages in the given order); a ticker seen again is dropped (the
    paging bugs of reference A1 repeat rows). Rows without ticker, strike, expiration date or a
    call/put type, with a ticker that is not an OCC option symbol (its root decides the
    settlement time) or an expiration date that does not parse cannot be placed and are skipped
    (chain_row_count says which and why). Missing greeks, IV, OI, volume and quotes are NaN. A
    page that is not a 200 chain page raises PolygonDecodeError.
    """
    return _picked(responses, "chain_columns").columns()


def _picked(responses: Sequence[PolygonResponse], what: str) -> ChainRowCounter:
    """The rows of one snapshot's pages, kept (the one row selection of both chain forms)."""
    if not responses:
        raise PolygonDecodeError(f"{what}: no pages")
    picked = ChainRowCounter(keep=True)
    for resp in responses:
        picked.add(resp)
    return picked


def _columns(picked: ChainRowCounter) -> ChainColumns:
    kept, details = picked.kept, picked.details
    spot_value = spot_price = None
    for u in reversed([row.underlying_asset for row in kept]):
        if u is None:
            continue
        if spot_value is None:
            spot_value = u.value
        if spot_price is None:
            spot_price = u.price
        if spot_value is not None and spot_price is not None:
            break
    greeks = [row.greeks for row in kept]
    quotes = [row.last_quote for row in kept]
    last = picked.last
    assert last is not None
    return ChainColumns(
        underlying=plain_underlying(last.underlying),
        ts_ns=last.ts_recv,
        spot=(spot_value if spot_value is not None and not math.isnan(spot_value)
              else math.nan if spot_price is None else spot_price),
        strike=_floats([d.strike_price for d in details]),
        expiry_ns=np.array(picked.expiry, dtype=np.int64),
        right=np.array(picked.right, dtype=np.int8),
        open_interest=_floats([row.open_interest for row in kept]),
        volume=_floats([None if (day := row.day) is None else day.volume for row in kept]),
        iv=_floats([row.implied_volatility for row in kept]),
        delta=_floats([None if g is None else g.delta for g in greeks]),
        gamma=_floats([None if g is None else g.gamma for g in greeks]),
        theta=_floats([None if g is None else g.theta for g in greeks]),
        vega=_floats([None if g is None else g.vega for g in greeks]),
        bid=_floats([None if q is None else q.bid for q in quotes]),
        ask=_floats([None if q is None else q.ask for q in quotes]),
        multiplier=_floats([100.0 if (m := d.shares_per_contract) is None else m for d in details]),
        am_settled=np.array(picked.am, dtype=bool),
        tickers=tuple(picked.tickers),
        snapshot_id=last.snapshot_id,
    )


# --- chain -> ChainSnapshot -------------------------------------------------------------------


def chain_snapshot(responses: Sequence[PolygonResponse]) -> ChainSnapshot:
    """The `ChainSnapshot` event of one snapshot's pages: `chain_columns` of them, each column as
    little-endian bytes (CHAIN_SNAPSHOT_COLUMNS), the tickers newline-joined.

    Its times are the final page's (`ts_recv` too: it is logged right after that page), so a
    reducer computing from it emits what it would have emitted from the pages. The one writer of
    the event, live (the poller) and in `mia migrate`; `mia.engine.columns.snapshot_chain` reads
    it back. Same errors as chain_columns.
    """
    return _picked(responses, "chain_snapshot").snapshot()


def _snapshot(picked: ChainRowCounter) -> ChainSnapshot:
    chain = _columns(picked)
    last = picked.last
    assert last is not None
    cols = {name: np.ascontiguousarray(getattr(chain, name), dtype=dt).tobytes()
            for name, dt in CHAIN_SNAPSHOT_COLUMNS.items()}
    return ChainSnapshot(
        ts_event=last.ts_event, ts_recv=last.ts_recv, underlying=chain.underlying,
        snapshot_id=int(chain.snapshot_id), spot=float(chain.spot), pages=picked.pages,
        tickers="\n".join(chain.tickers).encode("ascii"), **cols)


# --- indices snapshot -------------------------------------------------------------------------

# GET /v3/snapshot/indices?ticker.any_of=I:SPX,I:NDX,I:VIX (reference A2; massive.com docs
# "Indices Snapshot"): up to 250 tickers, `limit` up to 250 (default 10). An index the plan lacks,
# or an unknown one, comes back with HTTP 200 as a row carrying `error` (NOT_ENTITLED, NOT_FOUND)
# and `message` instead of a value.
INDICES_PATH: Final = "/v3/snapshot/indices"
DEFAULT_INDEX_TICKERS: Final = ("I:SPX", "I:NDX", "I:VIX")
MAX_INDEX_TICKERS: Final = 250


class IndexSession(msgspec.Struct, frozen=True, gc=False):
    open: float | None = None
    high: float | None = None
    low: float | None = None
    close: float | None = None
    previous_close: float | None = None
    change: float | None = None
    change_percent: float | None = None


class IndexSnapshotRow(msgspec.Struct, frozen=True, gc=False):
    """One row of the indices snapshot: a value, or an `error`/`message` for that ticker."""

    ticker: str | None = None
    value: float | None = None
    name: str | None = None
    type: str | None = None
    market_status: str | None = None
    timeframe: str | None = None  # DELAYED | REAL-TIME
    last_updated: int | None = None  # ns
    session: IndexSession | None = None
    error: str | None = None  # NOT_ENTITLED | NOT_FOUND
    message: str | None = None


class IndexSnapshotPage(msgspec.Struct, frozen=True, gc=False):
    status: str = ""
    request_id: str = ""
    results: list[IndexSnapshotRow] | None = None
    next_url: str | None = None


class IndexValueRow(msgspec.Struct, frozen=True, gc=False):
    """One index of a recorded indices snapshot, as reducers read it.

    `ts_ns` is the row's `last_updated` (0 when the row has none), `session_close` the session's
    close (NaN when absent), `error` "" or the row's error ("NOT_ENTITLED"); an error row has a
    NaN value.
    """

    ticker: str  # "I:SPX"
    value: float
    ts_ns: int
    session_close: float
    error: str = ""


_index_page_decoder: Final = msgspec.json.Decoder(IndexSnapshotPage)


def is_indices_response(resp: PolygonResponse) -> bool:
    """Whether a recorded response is an indices snapshot (not an options-chain page)."""
    return resp.path == INDICES_PATH


def parse_index_page(body: bytes) -> IndexSnapshotPage:
    try:
        return _index_page_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise PolygonDecodeError(f"indices snapshot ({len(body)} bytes) does not decode: {exc}") from None


def _num(x: float | None) -> float:
    return math.nan if x is None else float(x)


def index_values(resp: PolygonResponse) -> list[IndexValueRow]:
    """The rows of a recorded `/v3/snapshot/indices` response, in the order sent.

    Pure (no clock, no I/O): it runs on the reducer path live and in replay. A row with an
    `error` keeps it (value NaN); a row without ticker is skipped. A response that is not a 200
    indices snapshot raises PolygonDecodeError.
    """
    if resp.path != INDICES_PATH:
        raise PolygonDecodeError(f"index_values: {resp.path!r} is not {INDICES_PATH}")
    if resp.status != 200:
        raise PolygonDecodeError(f"index_values: HTTP {resp.status} is not an indices snapshot")
    page = parse_index_page(resp.body)
    out: list[IndexValueRow] = []
    for row in page.results or ():
        if not row.ticker:
            continue
        error = row.error or ""
        if not error and row.value is None and row.message:
            error = row.message
        session = row.session
        out.append(IndexValueRow(
            ticker=row.ticker,
            value=math.nan if error else _num(row.value),
            ts_ns=int(row.last_updated or 0),
            session_close=math.nan if session is None else _num(session.close),
            error=error,
        ))
    return out
