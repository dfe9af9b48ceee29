"""Run bracketing, reference data and market data events (the catalogue: mia.engine.events)."""

from __future__ import annotations

from .base import *  # the constants and the Event base

# --- run bracketing and reference data ------------------------------------------------------


class RecordingStarted(Event, tag=K_RECORDING_STARTED):
    """First event of every segment a recording writes."""

    recording_id: str
    mia_version: str
    schema_version: int
    config_fingerprint: str  # hash of the config with secrets removed
    sources: list[str]
    stream: str = "live"
    host: str = ""
    pid: int = 0
    # the derived kinds the recording's code could emit (on derived segments): `--check`
    # compares those only, so a reducer added later does not fail days recorded before it;
    # empty on segments written before the field existed (then LEGACY_DERIVED_KINDS)
    derived_kinds: list[int] = []
    # the recording's Polygon poller logs a ChainSnapshot after each chain snapshot's final page
    # (the reducers then compute from those, never from the pages); on a `chains` stream
    # segment (`mia migrate`), the day holds ChainSnapshots written after the fact
    chain_snapshots: bool = False


class RecordingEnded(Event, tag=K_RECORDING_ENDED):
    """Last event of a segment closed cleanly. Its absence means the run was killed."""

    recording_id: str
    reason: str  # "stopped", "duration", "signal SIGTERM", "rollover", "error: ..."
    events: int = 0


class Instrument(Event, tag=K_INSTRUMENT):
    """Declares the small int `instrument` used by market events of this segment."""

    instrument: int
    symbol: str
    source: str  # "dtc:127.0.0.1:11099", "polygon"
    exchange: str = ""
    tick_size: float = NAN
    point_value: float = NAN
    kind: str = "future"  # future | index | option | equity | other
    description: str = ""
    currency: str = "USD"


# --- market data ------------------------------------------------------------------------------


class Trade(Event, tag=K_TRADE):
    """One trade print. `side`: +1 buyer aggressed (at ask), -1 seller (at bid), 0 unknown."""

    instrument: int
    price: float
    size: float
    side: int = 0


class Quote(Event, tag=K_QUOTE):
    """Best bid and offer."""

    instrument: int
    bid: float
    bid_size: float
    ask: float
    ask_size: float


class BookLevel(Event, tag=K_BOOK_LEVEL):
    """One change to one price level of the depth book.

    `side` +1 bid / -1 ask (0 with BOOK_CLEAR: both sides); `level` 0-based position when the
    source gives it, else -1; `flags` BATCH_BEGIN/BATCH_END bracket a batch after which the
    book is consistent.
    """

    instrument: int
    side: int
    price: float
    size: float
    action: int
    level: int = -1
    orders: int = 0
    flags: int = 0


class SessionStat(Event, tag=K_SESSION_STAT):
    """Session statistics; fields a given update does not carry are NaN (or 0 for the date)."""

    instrument: int
    open: float = NAN
    high: float = NAN
    low: float = NAN
    settlement: float = NAN
    volume: float = NAN
    open_interest: float = NAN
    num_trades: float = NAN
    trading_date: int = 0  # YYYYMMDD, 0 when absent
    last: float = NAN


class ChainSnapshot(Event, tag=K_CHAIN_SNAPSHOT):
    """One options-chain snapshot of one underlying, parsed once from its raw pages.

    Written right after the snapshot's final `PolygonResponse` page (same `ts_recv`), by the same
    code live and in `mia migrate`; the pages stay the source of truth (`replay --check --deep`
    re-parses them and proves them equal to these columns). The columns are the contract columns
    of `mia.engine.columns.ChainColumns`, one row per contract, each a little-endian array held as
    bytes so decoding is `numpy.frombuffer` (no per-contract work): float64 for prices, greeks,
    OI, volume and multiplier; int64 `expiry_ns`; int8 `right`; uint8 `am_settled`. `tickers` is
    the OCC tickers joined by newlines (ASCII).
    """

    underlying: str
    snapshot_id: int
    spot: float
    pages: int
    tickers: bytes
    strike: bytes
    expiry_ns: bytes
    right: bytes
    open_interest: bytes
    volume: bytes
    iv: bytes
    delta: bytes
    gamma: bytes
    theta: bytes
    vega: bytes
    bid: bytes
    ask: bytes
    multiplier: bytes
    am_settled: bytes


class OptionTrade(Event, tag=K_OPTION_TRADE):
    """One option trade from Polygon's options stream (`ev: "T"`); `ts_event` from `t` (ms).

    The contract is parsed once from its OCC ticker: `right` +1 call / -1 put, `expiry_ns` the
    settlement instant UTC. `sequence` is Polygon's `q` (per contract, for duplicate checks).
    """

    ticker: str  # "O:SPXW251219C05000000"
    underlying: str  # "SPX", "NDX" (the index, roots folded)
    right: int
    strike: float
    expiry_ns: int
    price: float
    size: float
    exchange: int = 0
    conditions: list[int] = []
    sequence: int = 0


class OptionQuote(Event, tag=K_OPTION_QUOTE):
    """One option NBBO quote from Polygon's options stream (`ev: "Q"`)."""

    ticker: str
    underlying: str
    right: int
    strike: float
    expiry_ns: int
    bid: float
    bid_size: float
    ask: float
    ask_size: float
    bid_exchange: int = 0
    ask_exchange: int = 0
    sequence: int = 0


class IndexValue(Event, tag=K_INDEX_VALUE):
    """One index value from Polygon's indices stream (`ev: "V"`): `ticker` "I:SPX", `value`."""

    ticker: str
    value: float
