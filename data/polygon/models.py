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


def _f(x: float | None) -> float:
    return math.nan if x is None else x


def chain_columns(responses: Sequence[PolygonResponse]) -> ChainColumns:
    """The pages of one snapshot as ChainColumns, one row per distinct contract ticker.

    Rows keep first-seen order (pages in the given order); a ticker seen again is dropped (the
    paging bugs of reference A1 repeat rows). Rows without ticker, strike, expiration date or a
    call/put type cannot be placed and are skipped. Missing greeks, IV, OI, volume and quotes are
    NaN. A page that is not a 200 chain page raises PolygonDecodeError.
    """
    if not responses:
        raise PolygonDecodeError("chain_columns: no pages")
    seen: set[str] = set()
    tickers: list[str] = []
    strike: list[float] = []
    expiry: list[int] = []
    right: list[int] = []
    oi: list[float] = []
    volume: list[float] = []
    iv: list[float] = []
    delta: list[float] = []
    gamma: list[float] = []
    theta: list[float] = []
    vega: list[float] = []
    bid: list[float] = []
    ask: list[float] = []
    mult: list[float] = []
    am: list[bool] = []
    spot_value = math.nan
    spot_price = math.nan
    nan = math.nan
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
            if d is None or d.ticker is None or d.strike_price is None or d.expiration_date is None:
                continue
            if d.contract_type == "call":
                r = RIGHT_CALL
            elif d.contract_type == "put":
                r = RIGHT_PUT
            else:
                continue
            t = d.ticker
            if t in seen:
                continue
            is_am = occ_root(t) in AM_SETTLED_ROOTS
            try:
                exp_ns = settlement_ns(d.expiration_date, is_am)
            except ValueError:
                continue
            seen.add(t)
            tickers.append(t)
            strike.append(d.strike_price)
            expiry.append(exp_ns)
            right.append(r)
            am.append(is_am)
            mult.append(100.0 if d.shares_per_contract is None else d.shares_per_contract)
            oi.append(_f(row.open_interest))
            iv.append(_f(row.implied_volatility))
            day = row.day
            volume.append(nan if day is None else _f(day.volume))
            g = row.greeks
            if g is None:
                delta.append(nan)
                gamma.append(nan)
                theta.append(nan)
                vega.append(nan)
            else:
                delta.append(_f(g.delta))
                gamma.append(_f(g.gamma))
                theta.append(_f(g.theta))
                vega.append(_f(g.vega))
            q = row.last_quote
            if q is None:
                bid.append(nan)
                ask.append(nan)
            else:
                bid.append(_f(q.bid))
                ask.append(_f(q.ask))
            u = row.underlying_asset
            if u is not None:
                if u.value is not None:
                    spot_value = u.value
                if u.price is not None:
                    spot_price = u.price
    last = responses[-1]
    f64 = np.float64
    return ChainColumns(
        underlying=plain_underlying(last.underlying),
        ts_ns=last.ts_recv,
        spot=spot_value if not math.isnan(spot_value) else spot_price,
        strike=np.array(strike, dtype=f64),
        expiry_ns=np.array(expiry, dtype=np.int64),
        right=np.array(right, dtype=np.int8),
        open_interest=np.array(oi, dtype=f64),
        volume=np.array(volume, dtype=f64),
        iv=np.array(iv, dtype=f64),
        delta=np.array(delta, dtype=f64),
        gamma=np.array(gamma, dtype=f64),
        theta=np.array(theta, dtype=f64),
        vega=np.array(vega, dtype=f64),
        bid=np.array(bid, dtype=f64),
        ask=np.array(ask, dtype=f64),
        multiplier=np.array(mult, dtype=f64),
        am_settled=np.array(am, dtype=bool),
        tickers=tuple(tickers),
        snapshot_id=last.snapshot_id,
    )
