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
from typing import Final

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
K_CHAIN_SNAPSHOT: Final = 14
K_OPTION_TRADE: Final = 15
K_OPTION_QUOTE: Final = 16
K_INDEX_VALUE: Final = 17
K_DTC_RAW: Final = 20
K_POLYGON_RESPONSE: Final = 21
K_FEED_STATUS: Final = 22
K_GAP: Final = 23
K_SOURCE_ERROR: Final = 24
K_HEARTBEAT: Final = 25
K_POLYGON_STREAM_FRAME: Final = 26
K_GAMMA_LEVELS: Final = 30
K_ORDERFLOW_BAR: Final = 31
K_TERM_STRUCTURE: Final = 32
K_IV_SURFACE: Final = 33
K_OPTION_FLOW: Final = 34
K_UNUSUAL_TRADE: Final = 35
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
