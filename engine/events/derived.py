"""Derived events (written by the reducers) and monitoring alerts."""

from __future__ import annotations

from .base import *  # the constants and the Event base

# --- derived ----------------------------------------------------------------------------------


class GammaLevels(Event, tag=K_GAMMA_LEVELS):
    """The dealer gamma picture of one underlying at one chain snapshot. NaN means none."""

    underlying: str
    spot: float
    basis: float  # futures - index at the chain's time; NaN when no futures quote
    zero_gamma: float
    call_wall: float
    put_wall: float
    max_pain: float
    total_gex: float  # dollars per 1% move
    call_gex: float
    put_gex: float
    pcr_oi: float
    pcr_volume: float
    pin_strikes: list[float]
    dealer_bias: float  # in [-1, 1]; formula in README
    vanna_exposure: float
    charm_exposure: float
    iv_skew: float
    stale: bool
    staleness_ns: int
    snapshot_id: int = 0
    contracts: int = 0
    chain_ts: int = 0
    futures_symbol: str = ""
    zero_gamma_fut: float = NAN
    call_wall_fut: float = NAN
    put_wall_fut: float = NAN
    max_pain_fut: float = NAN
    unusual_strikes: list[float] = []
    atm_iv: float = NAN
    # flow-adjusted picture (Polygon streams): open interest plus the day's signed customer
    # volume per contract (dealers take the other side); NaN / empty when no flow was seen
    flow_zero_gamma: float = NAN
    flow_total_gex: float = NAN
    flow_call_wall: float = NAN
    flow_put_wall: float = NAN
    flow_contracts: float = NAN  # signed customer contracts folded in
    gex_strikes: list[float] = []  # GEX by strike, OI-only and flow-adjusted (parallel lists)
    gex_oi: list[float] = []
    gex_flow: list[float] = []


class OrderflowBar(Event, tag=K_ORDERFLOW_BAR):
    """Order flow of one instrument over one bar; session fields run since the trade-date start.

    `ts_event` is the bar's close time (its end boundary), `bar_start` its start.
    """

    instrument: int
    bar_start: int
    interval_ns: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    buy_volume: float
    sell_volume: float
    delta: float
    cum_delta: float
    trades: int
    bar_poc: float
    poc: float  # session point of control
    va_low: float  # session 70% value area
    va_high: float
    vwap: float  # session VWAP
    vwap_sd: float  # bands are vwap +/- k * vwap_sd, k in (0.5, 1, 1.5, 2)
    bid_imbalances: int
    ask_imbalances: int
    stacked_bid: int
    stacked_ask: int
    book_imbalance: float
    large_trades: int
    large_buy_volume: float
    large_sell_volume: float
    trading_date: int = 0  # CME trade date, YYYYMMDD


class TermStructure(Event, tag=K_TERM_STRUCTURE):
    """VIX and the VX futures curve at one moment (mia.analytics.volatility). NaN means unknown.

    The curve is parallel lists, one entry per live VX contract with a price, nearest expiry
    first: `symbols`, `expiries` (YYYYMMDD), `prices` (quote mid, else last trade) and `days`
    (calendar days to the contract's final settlement, fractional). `basis` = VX1 - VIX,
    `contango` = VX2 / VX1 - 1, `cm30` = the 30-day constant-maturity VX (linear in days between
    the two contracts straddling 30 days).
    """

    vix: float
    vix_source: str  # "dtc" | "polygon" | "" (none yet)
    symbols: list[str]
    expiries: list[int]
    prices: list[float]
    days: list[float]
    basis: float
    contango: float
    cm30: float


class IvSurface(Event, tag=K_IV_SURFACE):
    """Implied volatility of one underlying at one chain snapshot (mia.analytics.volatility).

    Per expiry (parallel lists, nearest first): `expiries` (settlement instant, ns UTC),
    `forwards` (put-call parity), `atm_iv` (the smile interpolated at the forward), `put25_iv`,
    `call25_iv`, `rr25` (call25 - put25) and `bf25` ((call25 + put25) / 2 - atm). The smiles are
    flattened: expiry j owns `smile_count[j]` consecutive (`smile_strikes`, `smile_iv`) points,
    strikes ascending, out-of-the-money side of the forward. NaN means unknown.
    """

    underlying: str
    spot: float
    snapshot_id: int
    chain_ts: int
    stale: bool
    staleness_ns: int
    expiries: list[int]
    forwards: list[float]
    atm_iv: list[float]
    put25_iv: list[float]
    call25_iv: list[float]
    rr25: list[float]
    bf25: list[float]
    smile_count: list[int]
    smile_strikes: list[float]
    smile_iv: list[float]


class OptionFlow(Event, tag=K_OPTION_FLOW):
    """Customer option flow of one underlying over one bar (mia.analytics.flow).

    Each trade is signed against the NBBO at its time (quote rule, then tick rule): +1 bought by
    the customer, -1 sold, 0 unknown. Signed values are summed over the bar; by-strike lists are
    parallel (`strikes`, `expiries` ns, `rights`), one entry per contract traded in the bar.
    `ts_event` is the bar's close time, `bar_start` its start.
    """

    underlying: str
    bar_start: int
    interval_ns: int
    trades: int
    contracts: float
    premium: float
    signed_contracts: float
    signed_premium: float
    signed_delta_notional: float  # signed delta x spot x multiplier x contracts (dollars)
    signed_gamma_notional: float  # signed gamma x spot^2 x 0.01 x multiplier x contracts
    call_premium: float
    put_premium: float
    unusual: int
    strikes: list[float] = []
    expiries: list[int] = []
    rights: list[int] = []
    by_signed_contracts: list[float] = []
    by_signed_premium: list[float] = []
    by_signed_delta: list[float] = []
    by_signed_gamma: list[float] = []


class UnusualTrade(Event, tag=K_UNUSUAL_TRADE):
    """One option trade over a threshold (premium, size) or an intermarket sweep."""

    underlying: str
    ticker: str
    right: int
    strike: float
    expiry_ns: int
    price: float
    size: float
    premium: float
    side: int  # customer side, as in OptionFlow
    reasons: list[str]  # "premium", "size", "sweep"
    conditions: list[int] = []
    sequence: int = 0


# --- monitoring -------------------------------------------------------------------------------


class Alert(Event, tag=K_ALERT):
    """A monitoring threshold was crossed (state 1) or recovered (state 0)."""

    source: str
    name: str
    state: int
    value: float
    threshold: float
    message: str = ""
