"""Polygon (Massive) options-chain snapshot models, and a chain's pages as numpy columns.

The vendor JSON of ``GET /v3/snapshot/options/{underlying}`` decodes into the frozen msgspec
structs below (every field the reference documents; any of them may be missing, so all are
optional). ``chain_columns`` turns the recorded ``PolygonResponse`` pages of one snapshot into
``ChainColumns`` for the gamma reducer. It runs on the reducer path live and in replay alike, so
it is a pure function of the events: no clock, no logging, no I/O.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Final, Sequence
from zoneinfo import ZoneInfo

import msgspec
import numpy as np

from mia.engine.columns import RIGHT_CALL, RIGHT_PUT, ChainColumns
from mia.engine.errors import RemoteProtocolError
from mia.engine.events import PolygonResponse

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
        cached = int(at.timestamp()) * 1_000_000_000
        if len(_SETTLE_CACHE) < 100_000:
            _SETTLE_CACHE[key] = cached
    return cached


# --- chain -> columns -------------------------------------------------------------------------


# (OCC ticker minus its yymmdd+C/P+strike suffix, expiration date) -> (AM-settled, settlement
# ns), None for a date that does not parse. Whether a contract is AM-settled depends on its root
# alone, and the root on that ticker prefix alone, so a chain's few thousand rows cost one
# lookup each. Bounded: a day sees a few hundred expiries per root.
_PLACEMENT_CACHE: dict[tuple[str, str], tuple[bool, int] | None] = {}


def _placement(prefix: str, expiration_date: str) -> tuple[bool, int] | None:
    # occ_root(prefix + suffix), as far as AM_SETTLED_ROOTS can tell (only short prefixes,
    # never an AM root, could differ)
    is_am = (prefix[2:] if prefix.startswith("O:") else prefix) in AM_SETTLED_ROOTS
    try:
        return is_am, settlement_ns(expiration_date, is_am)
    except ValueError:
        return None


def _floats(values: list) -> np.ndarray:
    """float64 column of floats and Nones (None -> NaN, the same bits as math.nan)."""
    return np.array(values, dtype=np.float64)


def chain_columns(responses: Sequence[PolygonResponse]) -> ChainColumns:
    """The pages of one snapshot as ChainColumns, one row per distinct contract ticker.

    Rows keep first-seen order (pages in the given order); a ticker seen again is dropped (the
    paging bugs of reference A1 repeat rows). Rows without ticker, strike, expiration date or a
    call/put type cannot be placed and are skipped. Missing greeks, IV, OI, volume and quotes are
    NaN. A page that is not a 200 chain page raises PolygonDecodeError.
    """
    if not responses:
        raise PolygonDecodeError("chain_columns: no pages")
    # One lean pass picks the rows that can be placed (and their ticker, right, settlement);
    # every other column is then one list comprehension over the kept rows: a snapshot is
    # thousands of rows, and per-row appends to fifteen lists were most of its cost.
    seen: set[str] = set()
    kept: list[_LeanContract] = []
    details: list[ChainDetails] = []
    tickers: list[str] = []
    right: list[int] = []
    am: list[bool] = []
    expiry: list[int] = []
    cache = _PLACEMENT_CACHE
    suffix = -OCC_SUFFIX_LEN
    for resp in responses:
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
        for row in page.results or ():
            d = row.details
            if d is None:
                continue
            t = d.ticker
            e = d.expiration_date
            if t is None or d.strike_price is None or e is None:
                continue
            ct = d.contract_type
            if ct == "call":
                r = RIGHT_CALL
            elif ct == "put":
                r = RIGHT_PUT
            else:
                continue
            if t in seen:
                continue
            key = (t[:suffix], e)
            if key in cache:
                placed = cache[key]
            else:
                placed = _placement(*key)
                if len(cache) < 100_000:
                    cache[key] = placed
            if placed is None:
                continue
            seen.add(t)
            kept.append(row)
            details.append(d)
            tickers.append(t)
            right.append(r)
            am.append(placed[0])
            expiry.append(placed[1])
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
    last = responses[-1]
    return ChainColumns(
        underlying=plain_underlying(last.underlying),
        ts_ns=last.ts_recv,
        spot=(spot_value if spot_value is not None and not math.isnan(spot_value)
              else math.nan if spot_price is None else spot_price),
        strike=_floats([d.strike_price for d in details]),
        expiry_ns=np.array(expiry, dtype=np.int64),
        right=np.array(right, dtype=np.int8),
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
        am_settled=np.array(am, dtype=bool),
        tickers=tuple(tickers),
        snapshot_id=last.snapshot_id,
    )
