"""The event catalogue: every fact mia records or derives, as one tagged union.

Each event is a frozen, array-like msgspec Struct with a small integer tag, so an event encodes
as a short msgpack array ``[tag, ts_event, ts_recv, ...]``. The tag is the event's *kind*: the
same number is the ``kind`` column of columnar batches.

Schema rules (the log is forever): fields are only appended, appended fields carry defaults,
a field's type never changes. A breaking change bumps ``SCHEMA_VERSION`` and adds an upcast
step on read (``UPCASTS``).

Conventions:
- ``ts_event`` (source time) and ``ts_recv`` (local receive time) are int ns since the Unix
  epoch, UTC.
- Prices are float64 as the source sent them; unset values are NaN.
- ``instrument`` is a small int declared by an ``Instrument`` event earlier in the segment.
- Sides: +1 buy / bid, -1 sell / ask, 0 unknown.
"""

from __future__ import annotations

import math
from typing import Final, Union

import msgspec

SCHEMA_VERSION: Final = 1
NAN: Final = math.nan

# Kinds (tags). Ranges: 1-9 run bracketing and reference data, 10-19 market data,
# 20-29 source plumbing, 30-39 derived, 40-49 monitoring.
K_RECORDING_STARTED: Final = 1
K_RECORDING_ENDED: Final = 2
K_INSTRUMENT: Final = 3
K_TRADE: Final = 10
K_QUOTE: Final = 11
K_BOOK_LEVEL: Final = 12
K_SESSION_STAT: Final = 13
K_DTC_RAW: Final = 20
K_POLYGON_RESPONSE: Final = 21
K_FEED_STATUS: Final = 22
K_GAP: Final = 23
K_SOURCE_ERROR: Final = 24
K_HEARTBEAT: Final = 25
K_GAMMA_LEVELS: Final = 30
K_ORDERFLOW_BAR: Final = 31
K_TERM_STRUCTURE: Final = 32
K_IV_SURFACE: Final = 33
K_ALERT: Final = 40

# BookLevel.action
BOOK_SNAPSHOT: Final = 0  # one level of a full-book snapshot batch
BOOK_UPSERT: Final = 1  # insert or update the level at this price
BOOK_DELETE: Final = 2  # remove the level at this price
BOOK_CLEAR: Final = 3  # drop the whole side (side 0: both sides)

# BookLevel.flags (bits)
BATCH_BEGIN: Final = 1
BATCH_END: Final = 2

# FeedStatus.status
FEED_CONNECTED: Final = 1
FEED_DISCONNECTED: Final = 2
FEED_AVAILABLE: Final = 3
FEED_UNAVAILABLE: Final = 4
FEED_SUBSCRIPTION_REJECTED: Final = 5
FEED_LOGGED_ON: Final = 6
FEED_HEARTBEAT_TIMEOUT: Final = 7
FEED_SUBSCRIBED: Final = 8

FEED_STATUS_NAMES: Final = {
    FEED_CONNECTED: "connected",
    FEED_DISCONNECTED: "disconnected",
    FEED_AVAILABLE: "feed_available",
    FEED_UNAVAILABLE: "feed_unavailable",
    FEED_SUBSCRIPTION_REJECTED: "subscription_rejected",
    FEED_LOGGED_ON: "logged_on",
    FEED_HEARTBEAT_TIMEOUT: "heartbeat_timeout",
    FEED_SUBSCRIBED: "subscribed",
}

# SourceError.fallback_kind: what was used instead of what failed (typed; `fallback` is prose)
FALLBACK_NONE: Final = 0  # nothing: no earlier data to fall back on
FALLBACK_PREVIOUS: Final = 1  # older data of the same source (the last good chain), `stale_age_ns` old
FALLBACK_PARTIAL: Final = 2  # what was received before the failure (some pages, some rows)
FALLBACK_OTHER_SOURCE: Final = 3  # a backup source for the same data
FALLBACK_UNSET: Final = -1  # logs written before the field existed: mapped from the prose on read

FALLBACK_NAMES: Final = {
    FALLBACK_NONE: "none",
    FALLBACK_PREVIOUS: "previous",
    FALLBACK_PARTIAL: "partial",
    FALLBACK_OTHER_SOURCE: "other_source",
}


def fallback_kind_of_prose(fallback: str, stale_age_ns: int) -> int:
    """The typed fallback of a SourceError written before `fallback_kind` existed.

    Those logs hold the poller's sentences: "" or "none: no chain yet" (nothing used), "using
    chain from 14:02:11 UTC, 30 s old" (the previous chain) and "using the N contracts
    received" (a partial chain). Read once here, never matched anywhere else.
    """
    if not fallback or fallback.startswith("none"):
        return FALLBACK_NONE
    if stale_age_ns > 0 or fallback.startswith("using chain from"):
        return FALLBACK_PREVIOUS
    return FALLBACK_PARTIAL


# Alert.state
ALERT_RAISED: Final = 1
ALERT_CLEARED: Final = 0


class Event(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Base of every event: source time and local receive time, int ns UTC."""

    ts_event: int
    ts_recv: int


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


# --- source plumbing --------------------------------------------------------------------------


class DtcRaw(Event, tag=K_DTC_RAW):
    """A DTC message with no event of its own, kept whole: nothing is dropped."""

    source: str
    msg_type: int
    payload: bytes
    encoding: int = 0  # DTC EncodingEnum: 0 binary, 1 binary VLS, 2 JSON, 3 compact JSON


class PolygonResponse(Event, tag=K_POLYGON_RESPONSE):
    """One HTTP response from Polygon, body kept raw. `path` and `query` never hold the key.

    A chain snapshot is the pages sharing `snapshot_id`; `final` marks its last page.
    """

    underlying: str
    path: str
    query: str
    status: int
    request_id: str
    elapsed_ns: int
    body: bytes
    snapshot_id: int = 0
    page: int = 0
    final: bool = True


class FeedStatus(Event, tag=K_FEED_STATUS):
    """A source's connection or subscription state changed (FEED_* codes)."""

    source: str
    status: int
    instrument: int = -1  # -1: the whole connection
    detail: str = ""


class Gap(Event, tag=K_GAP):
    """A source could not deliver from `start_ns` to `end_ns`, and why."""

    source: str
    start_ns: int
    end_ns: int
    reason: str
    instrument: int = -1


class SourceError(Event, tag=K_SOURCE_ERROR):
    """A source failed; `fallback` says what was used instead (e.g. the last good chain)."""

    source: str
    error: str
    fallback: str = ""  # for people: what was used instead
    stale_age_ns: int = 0
    underlying: str = ""
    status: int = 0
    fallback_kind: int = FALLBACK_UNSET  # for programs: FALLBACK_*; set by every writer

    def __post_init__(self) -> None:
        if self.fallback_kind == FALLBACK_UNSET:  # an older log: its prose, mapped once on read
            msgspec.structs.force_setattr(
                self, "fallback_kind", fallback_kind_of_prose(self.fallback, self.stale_age_ns))


class Heartbeat(Event, tag=K_HEARTBEAT):
    """The recorder's own pulse, once a second: lets event-time reducers (monitoring) see time
    pass when every source is silent, identically live and in replay."""

    source: str = "recorder"
    queued: int = 0  # events waiting in the recorder's queue at that moment


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


# --- monitoring -------------------------------------------------------------------------------


class Alert(Event, tag=K_ALERT):
    """A monitoring threshold was crossed (state 1) or recovered (state 0)."""

    source: str
    name: str
    state: int
    value: float
    threshold: float
    message: str = ""


AnyEvent = Union[
    RecordingStarted,
    RecordingEnded,
    Instrument,
    Trade,
    Quote,
    BookLevel,
    SessionStat,
    DtcRaw,
    PolygonResponse,
    FeedStatus,
    Gap,
    SourceError,
    Heartbeat,
    GammaLevels,
    OrderflowBar,
    Alert,
    TermStructure,
    IvSurface,
]

EVENT_TYPES: Final[tuple[type[Event], ...]] = AnyEvent.__args__  # type: ignore[attr-defined]
KIND_OF: Final[dict[type[Event], int]] = {t: t.__struct_config__.tag for t in EVENT_TYPES}
TYPE_OF_KIND: Final[dict[int, type[Event]]] = {k: t for t, k in KIND_OF.items()}
KIND_NAMES: Final[dict[int, str]] = {k: t.__name__ for t, k in KIND_OF.items()}
KIND_BY_NAME: Final[dict[str, int]] = {t.__name__: k for t, k in KIND_OF.items()}
MARKET_KINDS: Final = frozenset({K_TRADE, K_QUOTE, K_BOOK_LEVEL, K_SESSION_STAT})
# what every recording before RecordingStarted.derived_kinds could emit
LEGACY_DERIVED_KINDS: Final = frozenset({K_GAMMA_LEVELS, K_ORDERFLOW_BAR, K_ALERT})
DERIVED_KINDS: Final = frozenset({K_GAMMA_LEVELS, K_ORDERFLOW_BAR, K_ALERT, K_TERM_STRUCTURE, K_IV_SURFACE})


def kind_of(event: Event) -> int:
    """The kind (tag) of an event."""
    return KIND_OF[type(event)]


def instrument_of(event: Event) -> int:
    """The event's instrument id, or -1 for events that have none."""
    return getattr(event, "instrument", -1)


class EventCodec:
    """The one reused msgpack encoder/decoder for events and lists of events.

    Not thread-safe (msgspec encoders keep a buffer); make one per thread.
    """

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._one = msgspec.msgpack.Decoder(AnyEvent)
        self._many = msgspec.msgpack.Decoder(list[AnyEvent])
        # the encoder's own C method: hot paths (the writer, the publisher) call it per event,
        # without the ~80 ns of a Python wrapper frame
        self.encode_fast = self._encoder.encode

    def encode(self, event: Event) -> bytes:
        return self._encoder.encode(event)

    def encode_many(self, events: list[Event]) -> bytes:
        """Encode a list of events as one msgpack array (one log frame's payload)."""
        return self._encoder.encode(events)

    def encode_many_into(self, events: list[Event], buf: bytearray) -> None:
        self._encoder.encode_into(events, buf)

    def decode(self, data: bytes | memoryview) -> Event:
        return self._one.decode(data)

    def decode_many(self, data: bytes | memoryview) -> list[Event]:
        return self._many.decode(data)


# Upcasts run on read when a segment's schema version is older than SCHEMA_VERSION:
# {old_version: function(raw msgpack payload bytes) -> bytes at old_version + 1}. Empty while
# the schema has only grown compatibly.
UPCASTS: Final[dict[int, object]] = {}


def to_builtins(event: Event) -> dict:
    """The event as a plain dict with its kind name, for JSON output and the bus."""
    out = {"kind": type(event).__name__}
    for name in event.__struct_fields__:
        value = getattr(event, name)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        out[name] = value
    return out
