"""The Polygon stream parser and the quote selector, on scripted messages (no sockets)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import msgspec
import pytest

from mia.data.polygon.models import occ_contract
from mia.data.polygon.stream import (
    QUOTE_LIMIT,
    QuoteSelector,
    StreamParser,
    check_stream_frames,
    listing_of,
    stream_roots,
    subscription_params,
)
from mia.engine.events import (
    FEED_CONNECTED,
    FEED_DISCONNECTED,
    FEED_LOGGED_ON,
    FEED_SUBSCRIBED,
    FEED_SUBSCRIPTION_REJECTED,
    FeedStatus,
    Gap,
    IndexValue,
    OptionQuote,
    OptionTrade,
    PolygonStreamFrame,
    SourceError,
)

NY = ZoneInfo("America/New_York")
SRC = "polygon-ws:options"
T_MS = 1_766_163_600_123  # 2025-12-19 17:00:00.123 UTC


def settle_ns(day: dt.date, hh: int, mm: int) -> int:
    return int(dt.datetime.combine(day, dt.time(hh, mm), NY).timestamp()) * 1_000_000_000


def frame(*items) -> bytes:
    return msgspec.json.encode(list(items))


def parse(parser: StreamParser, data: bytes, ts: int = 42):
    out: list = []
    statuses = parser.parse(data, ts, out)
    return out, statuses


def test_a_trade_becomes_an_option_trade_with_every_field():
    p = StreamParser(SRC, roots=stream_roots(["SPX", "NDX"]))
    out, statuses = parse(p, frame({"ev": "T", "sym": "O:SPXW251219C05000000", "x": 65, "p": 12.3, "s": 5,
                                    "c": [219, 232], "t": T_MS, "q": 9}))
    assert statuses == []
    assert out == [OptionTrade(T_MS * 1_000_000, 42, "O:SPXW251219C05000000", "SPX", 1, 5000.0,
                               settle_ns(dt.date(2025, 12, 19), 16, 0), 12.3, 5.0, 65, [219, 232], 9)]


def test_a_quote_becomes_an_option_quote_with_every_field_and_the_monthly_root_settles_at_the_open():
    p = StreamParser(SRC, roots=stream_roots(["SPX", "NDX"]))
    out, _ = parse(p, frame({"ev": "Q", "sym": "O:NDX251219P21000500", "bx": 302, "ax": 323, "bp": 410.1,
                             "ap": 412.4, "bs": 40, "as": 12, "t": T_MS, "q": 77}))
    assert out == [OptionQuote(T_MS * 1_000_000, 42, "O:NDX251219P21000500", "NDX", -1, 21000.5,
                               settle_ns(dt.date(2025, 12, 19), 9, 30), 410.1, 40.0, 412.4, 12.0, 302, 323, 77)]


def test_an_index_value_keeps_its_ticker_and_time():
    out, _ = parse(StreamParser("polygon-ws:indices"), frame({"ev": "V", "val": 6012.35, "T": "I:SPX", "t": T_MS}))
    assert out == [IndexValue(T_MS * 1_000_000, 42, "I:SPX", 6012.35)]


def test_roots_are_folded_and_other_underlyings_filtered_out():
    p = StreamParser(SRC, roots=stream_roots(["SPX", "NDX"]))
    msgs = [{"ev": "T", "sym": s, "p": 1.0, "s": 1, "t": T_MS, "q": 1}
            for s in ("O:SPXW251219C05000000", "O:NDXP251219C21000000", "O:SPY251219C00600000",
                      "O:SPX251219C05000000", "O:NDX251219C21000000")]
    out, _ = parse(p, frame(*msgs))
    assert [(e.ticker[2:6], e.underlying) for e in out] == [("SPXW", "SPX"), ("NDXP", "NDX"), ("SPX2", "SPX"),
                                                           ("NDX2", "NDX")]
    assert p.filtered == 1
    assert occ_contract("O:SPXW251219C05000000").root == "SPXW"


def test_status_messages_map_to_feed_status_and_source_errors():
    p = StreamParser(SRC)
    out, statuses = parse(p, frame(
        {"ev": "status", "status": "connected", "message": "Connected Successfully"},
        {"ev": "status", "status": "auth_success", "message": "authenticated"},
        {"ev": "status", "status": "success", "message": "subscribed to: T.*"},
        {"ev": "status", "status": "success", "message": "subscribed to: Q.O:SPXW251219C05000000"},
        {"ev": "status", "status": "error", "message": "max quote subscriptions (1000) reached: Q.X"},
        {"ev": "status", "status": "max_connections", "message": "Maximum number of connections exceeded."},
    ))
    assert [s.status for s in statuses] == ["connected", "auth_success", "success", "success", "error",
                                            "max_connections"]
    kinds = [(type(e).__name__, getattr(e, "status", None)) for e in out]
    assert kinds == [("FeedStatus", FEED_CONNECTED), ("FeedStatus", FEED_LOGGED_ON),
                     ("FeedStatus", FEED_SUBSCRIBED),  # the frame's acknowledgements as one event
                     ("FeedStatus", FEED_SUBSCRIPTION_REJECTED), ("SourceError", 0)]
    assert out[2].detail == "success: subscribed to: T.*; subscribed to: Q.O:SPXW251219C05000000"
    assert "Maximum number of connections" in out[4].error


def test_auth_failed_is_a_source_error_naming_it():
    out, statuses = parse(StreamParser(SRC), frame({"ev": "status", "status": "auth_failed",
                                                    "message": "authentication failed"}))
    assert statuses[0].status == "auth_failed"
    assert isinstance(out[0], SourceError) and out[0].error == "authentication failed: authentication failed"


def test_a_cut_off_message_is_one_source_error_naming_it():
    p = StreamParser(SRC)
    out, statuses = parse(p, b'[{"ev":"T","sym":"O:SPXW2512')
    assert statuses == [] and len(out) == 1 and isinstance(out[0], SourceError)
    assert "is not a JSON array" in out[0].error and "O:SPXW2512" in out[0].error
    assert p.errors == 1


def test_a_bad_element_is_a_source_error_and_its_neighbours_still_parse():
    p = StreamParser(SRC)
    good = {"ev": "T", "sym": "O:SPXW251219C05000000", "p": 1.5, "s": 2, "t": T_MS, "q": 3}
    out, _ = parse(p, frame(good, {"ev": "T", "sym": 5, "p": "x"}, 17, {"ev": "A", "sym": "O:X"},
                            {**good, "q": 4}))
    assert [type(e).__name__ for e in out] == ["SourceError", "SourceError", "OptionTrade", "OptionTrade"]
    assert "element 1 (ev 'T') does not decode" in out[0].error and "$.sym" in out[0].error
    assert "element 2 is not an event object" in out[1].error
    assert [e.sequence for e in out[2:]] == [3, 4]


def test_a_repeated_trade_is_dropped_by_ticker_and_sequence_within_the_window():
    p = StreamParser(SRC, dedupe_window=3)
    t = {"ev": "T", "sym": "O:SPXW251219C05000000", "p": 1.5, "s": 2, "t": T_MS}
    out, _ = parse(p, frame({**t, "q": 1}, {**t, "q": 2}, {**t, "q": 1}, {**t, "sym": "O:SPXW251219P05000000",
                                                                          "q": 1}))
    assert [(e.right, e.sequence) for e in out] == [(1, 1), (1, 2), (-1, 1)]
    assert p.duplicates == 1
    # beyond the window a (sym, q) is no longer remembered: the window bounds memory
    parse(p, frame({**t, "q": 5}, {**t, "q": 6}, {**t, "q": 7}))
    out, _ = parse(p, frame({**t, "q": 1}))
    assert len(out) == 1


def test_the_parser_is_a_pure_function_of_the_messages_in_order():
    msgs = [frame({"ev": "T", "sym": "O:SPXW251219C05000000", "p": 1.5, "s": 2, "t": T_MS, "q": q})
            for q in (1, 2, 1, 3)] + [b"[oops", frame({"ev": "V", "val": 1.0, "T": "I:VIX", "t": T_MS})]

    def run():
        p = StreamParser(SRC)
        out: list = []
        for i, m in enumerate(msgs):
            p.parse(m, 1000 + i, out)
        return out

    assert run() == run()


def test_subscription_params():
    assert subscription_params("Q", ["O:A", "O:B"]) == "Q.O:A,Q.O:B"
    assert subscription_params("V", []) == ""


# --- quote selection ----------------------------------------------------------------------------


def chain_tickers(root: str, days: list[str], strikes: range) -> list[str]:
    return [f"O:{root}{d}{cp}{k * 1000:08d}" for d in days for k in strikes for cp in "CP"]


NOW = settle_ns(dt.date(2025, 12, 17), 12, 0)


def test_quotes_go_to_the_contracts_nearest_the_money_on_the_nearest_expiries():
    sel = QuoteSelector(["SPX"], limit=8, expiries=2)
    sel.on_listing("SPX", listing_of(chain_tickers("SPXW", ["251217", "251218", "251219"], range(5900, 6101, 5))))
    sel.on_spot("SPX", 6001.0)
    chosen = sel.choose(NOW)
    assert chosen == {f"O:SPXW{d}{cp}0600{k}000" for d in ("251217", "251218") for cp in "CP" for k in (0, 5)}
    assert sel.choose(NOW) is None  # nothing moved
    sel.on_spot("SPX", 6002.0)  # less than 0.1 % of spot: kept
    assert sel.choose(NOW) is None
    sel.on_spot("SPX", 6013.0)
    moved = sel.choose(NOW)
    assert moved == {f"O:SPXW{d}{cp}0601{k}000" for d in ("251217", "251218") for cp in "CP" for k in (0, 5)}
    # the front expiry settles: the next two take its place
    later = settle_ns(dt.date(2025, 12, 17), 16, 1)
    assert {t[6:12] for t in sel.choose(later)} == {"251218", "251219"}


def test_the_limit_is_shared_between_underlyings_and_bounded_by_polygon():
    sel = QuoteSelector(["SPX", "NDX"], limit=8, expiries=1)
    sel.on_listing("SPX", listing_of(chain_tickers("SPXW", ["251217"], range(5900, 6101, 5))))
    sel.on_listing("NDX", listing_of(chain_tickers("NDXP", ["251217"], range(21000, 21201, 10))))
    sel.on_spot("SPX", 6000.0)
    sel.on_spot("NDX", 21100.0)
    chosen = sel.choose(NOW)
    assert sum("SPXW" in t for t in chosen) == 4 and sum("NDXP" in t for t in chosen) == 4
    with pytest.raises(ValueError, match="1000"):
        QuoteSelector(["SPX"], limit=QUOTE_LIMIT + 1)


def test_no_quotes_are_chosen_without_a_spot_or_a_listing():
    sel = QuoteSelector(["SPX"], limit=8)
    sel.on_spot("SPX", 6000.0)
    assert sel.choose(NOW) is None
    sel.on_spot("SPX", float("nan"))  # ignored
    sel.on_listing("SPX", listing_of(chain_tickers("SPXW", ["251217"], range(5990, 6011, 5))))
    assert len(sel.choose(NOW)) == 8


# --- frames against their events -----------------------------------------------------------------


def recorded(frames: list[bytes]) -> list:
    """What a client records: each frame, a Gap before the first one's data, then its events."""
    p = StreamParser(SRC, roots=["SPXW"])
    out: list = [FeedStatus(1, 1, SRC, FEED_DISCONNECTED, detail="lost")]
    for i, f in enumerate(frames):
        ts = 100 + i
        out.append(PolygonStreamFrame(ts, ts, SRC, "options", 1, f))
        if i == 0:
            out.append(Gap(ts, ts, SRC, 1, ts, "lost"))
        p.parse(f, ts, out)
    return out


FRAMES = [frame({"ev": "status", "status": "success", "message": "subscribed to: T.*"}),
          frame({"ev": "T", "sym": "O:SPXW251219C05000000", "p": 1.5, "s": 2, "t": T_MS, "q": 1},
                {"ev": "T", "sym": "O:SPY251219C00600000", "p": 1.5, "s": 2, "t": T_MS, "q": 1},
                {"ev": "T", "sym": "O:SPXW251219C05000000", "p": 1.5, "s": 2, "t": T_MS, "q": 1}),
          b"[not json",
          frame({"ev": "Q", "sym": "O:SPXW251219P05000000", "bp": 1.0, "ap": 1.2, "t": T_MS, "q": 2})]


def test_recorded_frames_reparse_into_the_recorded_events():
    check = check_stream_frames(recorded(FRAMES))
    assert check.ok and check.frames == 4 and check.events == 4  # ack, trade, error, quote


def test_a_changed_missing_or_extra_event_after_a_frame_is_named():
    events = recorded(FRAMES)
    i = next(i for i, e in enumerate(events) if isinstance(e, OptionTrade))
    changed = events[:i] + [msgspec.structs.replace(events[i], price=1.55)] + events[i + 1:]
    assert "recorded OptionTrade" in check_stream_frames(changed).mismatch
    missing = [e for e in events if not isinstance(e, OptionQuote)]
    assert "1 events from the frame, 0 recorded" in check_stream_frames(missing).mismatch
    extra = events + [msgspec.structs.replace(events[i], ts_recv=events[-1].ts_recv)]
    assert "the frame gives nothing" in check_stream_frames(extra).mismatch
