"""Source plumbing events: raw messages kept whole, connection state, gaps, errors."""

from __future__ import annotations

import msgspec

from .base import *  # the constants and the Event base

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


class PolygonStreamFrame(Event, tag=K_POLYGON_STREAM_FRAME):
    """One WebSocket message from a Polygon stream, kept as it came (the source of truth).

    `cluster` "options" | "indices"; `connection` counts the client's connections (1, 2, ...);
    `frame` the message text as UTF-8 bytes. Our own auth request is never recorded.
    """

    source: str
    cluster: str
    connection: int
    frame: bytes


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
