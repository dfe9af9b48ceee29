"""The bus: framing, topics, ordering, gap detection, binding."""

from __future__ import annotations

import inspect
import json
import math
import threading
import time

import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from mia.engine.bus import (
    DEFAULT_ADDR,
    MAX_SEQ,
    BusAddressInUseError,
    BusError,
    Publisher,
    Subscriber,
    TopicNamer,
    pack_seq,
    tail,
    tail_line,
    unpack_seq,
)
from mia.engine.errors import MiaError
from mia.engine.events import (
    EventCodec,
    FeedStatus,
    GammaLevels,
    Instrument,
    OrderflowBar,
    Quote,
    Trade,
)

ANY_PORT = "tcp://127.0.0.1:*"
NAN = math.nan


def instrument(iid: int, symbol: str) -> Instrument:
    return Instrument(ts_event=0, ts_recv=0, instrument=iid, symbol=symbol, source="dtc:test",
                      tick_size=0.25, point_value=50.0)


def trade(i: int, iid: int = 1) -> Trade:
    return Trade(ts_event=1_000 + i, ts_recv=2_000 + i, instrument=iid, price=5000.0 + i * 0.25,
                 size=float(1 + i % 7), side=1 if i % 2 else -1)


def gamma(underlying: str) -> GammaLevels:
    return GammaLevels(
        ts_event=1, ts_recv=2, underlying=underlying, spot=5000.0, basis=NAN, zero_gamma=4990.0,
        call_wall=5100.0, put_wall=4900.0, max_pain=5000.0, total_gex=1e9, call_gex=2e9,
        put_gex=-1e9, pcr_oi=0.9, pcr_volume=1.1, pin_strikes=[5000.0], dealer_bias=0.2,
        vanna_exposure=0.0, charm_exposure=0.0, iv_skew=0.0, stale=False, staleness_ns=0)


def drain(sub: Subscriber, idle_s: float = 0.5, limit: int = 1_000_000) -> list:
    """Everything the subscriber gets until it has been idle for `idle_s`."""
    return list(sub.messages(timeout_s=idle_s, count=limit))


# --- framing and naming -----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(stream=st.sampled_from(["live", "derived", "other"]), seq=st.integers(0, MAX_SEQ),
       topic_seq=st.integers(0, 10**6))
def test_seq_frame_round_trips_stream_seq_and_topic_counter(stream, seq, topic_seq):
    frame = pack_seq(stream, seq, topic_seq)
    assert len(frame) == 8
    assert unpack_seq(frame) == (stream, seq, topic_seq % 65536)


def test_seq_frame_is_big_endian_with_the_stream_in_the_first_byte():
    frame = pack_seq("derived", 0x0102030405, 7)
    assert frame == bytes([2, 1, 2, 3, 4, 5, 0, 7])
    assert unpack_seq(pack_seq("replay-x", 3))[0] == "other"


def test_seq_out_of_range_is_a_bus_error():
    with pytest.raises(BusError, match="seq -1"):
        pack_seq("live", -1)
    with pytest.raises(BusError):
        pack_seq("live", MAX_SEQ + 1)


def test_topics_name_the_kind_and_the_symbol_learnt_from_instrument_events():
    namer = TopicNamer()
    assert namer.topic(trade(0, iid=1)) == b"Trade"  # symbol not declared yet: no suffix
    assert namer.topic(instrument(1, "ESZ5")) == b"Instrument.ESZ5"
    assert namer.topic(trade(0, iid=1)) == b"Trade.ESZ5"
    assert namer.topic(Quote(ts_event=0, ts_recv=0, instrument=1, bid=1, bid_size=1, ask=2,
                             ask_size=1)) == b"Quote.ESZ5"
    assert namer.topic(gamma("SPX")) == b"GammaLevels.SPX"
    assert namer.topic(FeedStatus(ts_event=0, ts_recv=0, source="dtc", status=1)) == b"FeedStatus"
    # A later segment may give the id another symbol: the newest declaration wins.
    namer.topic(instrument(1, "ESH6"))
    assert namer.topic(trade(0, iid=1)) == b"Trade.ESH6"


# --- delivery -----------------------------------------------------------------------------------


def test_subscriber_receives_thousands_of_events_in_order():
    events = [instrument(1, "ESZ5")] + [trade(i) for i in range(5_000)]
    with Publisher(ANY_PORT) as pub, Subscriber(pub.addr) as sub:
        assert pub.wait_for_subscriber(timeout_s=30)
        pub.publish_many("live", 0, events)
        got = drain(sub)
    assert [m.seq for m in got] == list(range(len(events)))
    assert [m.event for m in got] == events
    assert {m.stream for m in got} == {"live"}
    assert got[1].topic == "Trade.ESZ5"
    assert sub.gaps == [] and sub.lost == 0


def test_topic_prefix_filters_es_trades_only():
    events = [instrument(1, "ESZ5"), instrument(2, "NQZ5")]
    for i in range(600):
        events.append(trade(i, iid=1 + i % 2))
        events.append(Quote(ts_event=i, ts_recv=i, instrument=1, bid=1.0, bid_size=1.0, ask=2.0,
                            ask_size=1.0))
    with Publisher(ANY_PORT) as pub, Subscriber(pub.addr, ["Trade.ES"]) as sub:
        assert pub.wait_for_subscriber("Trade.ES", timeout_s=30)
        pub.publish_many("live", 0, events)
        got = drain(sub)
    want = [(seq, e) for seq, e in enumerate(events) if isinstance(e, Trade) and e.instrument == 1]
    assert [(m.seq, m.event) for m in got] == want
    assert {m.topic for m in got} == {"Trade.ESZ5"}
    assert sub.gaps == []  # stream seqs jump (filtered), the topic counter does not


def test_streams_are_told_apart_and_derived_topics_use_the_instrument_symbol():
    bar = OrderflowBar(
        ts_event=10, ts_recv=10, instrument=1, bar_start=0, interval_ns=60, open=1, high=1, low=1,
        close=1, volume=1, buy_volume=1, sell_volume=0, delta=1, cum_delta=1, trades=1, bar_poc=1,
        poc=1, va_low=1, va_high=1, vwap=1, vwap_sd=0, bid_imbalances=0, ask_imbalances=0,
        stacked_bid=0, stacked_ask=0, book_imbalance=0, large_trades=0, large_buy_volume=0,
        large_sell_volume=0)
    with Publisher(ANY_PORT) as pub, Subscriber(pub.addr) as sub:
        assert pub.wait_for_subscriber(timeout_s=30)
        pub.publish("live", 0, instrument(1, "NQZ5"))
        pub.publish("derived", 0, bar)
        pub.publish("live", 1, trade(1))
        pub.publish("derived", 1, gamma("NDX"))
        got = drain(sub, idle_s=0.3)
    assert [(m.stream, m.seq, m.topic) for m in got] == [
        ("live", 0, "Instrument.NQZ5"), ("derived", 0, "OrderflowBar.NQZ5"),
        ("live", 1, "Trade.NQZ5"), ("derived", 1, "GammaLevels.NDX")]
    assert sub.gaps == []


def test_recv_times_out_with_none():
    with Publisher(ANY_PORT) as pub, Subscriber(pub.addr) as sub:
        t0 = time.monotonic()
        assert sub.recv(timeout_s=0.2) is None
        assert 0.15 <= time.monotonic() - t0 < 30.0  # it waited, and it returned


# --- gaps ---------------------------------------------------------------------------------------


def test_slow_subscriber_reports_exactly_the_seqs_it_missed():
    n = 20_000
    events = [trade(i) for i in range(n)]
    with Publisher(ANY_PORT, sndhwm=50) as pub, Subscriber(pub.addr, rcvhwm=50) as sub:
        assert pub.wait_for_subscriber(timeout_s=30)
        pub.publish_many("live", 0, events)  # flood while the subscriber reads nothing
        got = drain(sub)
    seqs = [m.seq for m in got]
    assert seqs == sorted(seqs) and len(seqs) < n, "the high-water mark should have dropped some"
    lo, hi = seqs[0], seqs[-1]
    missed = set(range(lo, hi + 1)) - set(seqs)
    reported = {s for _, expected, got_seq in sub.gaps for s in range(expected, got_seq)}
    assert missed and reported == missed
    assert sub.lost == len(missed)
    assert all(stream == "live" for stream, _, _ in sub.gaps)


def test_filtered_slow_subscriber_counts_its_topic_losses():
    events = [instrument(1, "ESZ5"), instrument(2, "NQZ5")]
    events += [trade(i, iid=1 + i % 2) for i in range(20_000)]
    with Publisher(ANY_PORT, sndhwm=40) as pub, Subscriber(pub.addr, ["Trade.ES"], rcvhwm=40) as sub:
        assert pub.wait_for_subscriber("Trade.ES", timeout_s=30)
        pub.publish_many("live", 0, events)
        got = drain(sub)
    es_seqs = [seq for seq, e in enumerate(events) if isinstance(e, Trade) and e.instrument == 1]
    seqs = [m.seq for m in got]
    inside = [s for s in es_seqs if seqs[0] <= s <= seqs[-1]]
    missed = sorted(set(inside) - set(seqs))
    assert missed and sub.lost == len(missed)
    # Every missed ES seq lies in a reported range, and every range holds a missed one.
    assert all(any(a <= s < b for _, a, b in sub.gaps) for s in missed)
    assert all(any(a <= s < b for s in missed) for _, a, b in sub.gaps)


def test_seq_going_back_is_a_reset_not_a_gap():
    with Publisher(ANY_PORT) as pub, Subscriber(pub.addr) as sub:
        assert pub.wait_for_subscriber(timeout_s=30)
        pub.publish_many("live", 500, [trade(i) for i in range(3)])
        pub.publish_many("live", 0, [trade(i) for i in range(3)])  # a new UTC day
        got = drain(sub, idle_s=0.3)
    assert [m.seq for m in got] == [500, 501, 502, 0, 1, 2]
    assert sub.gaps == [] and sub.resets == 1


def test_malformed_messages_are_skipped_and_counted():
    ctx = zmq.Context()
    raw_pub = ctx.socket(zmq.PUB)
    try:
        port = raw_pub.bind_to_random_port("tcp://127.0.0.1")
        with Subscriber(f"tcp://127.0.0.1:{port}", context=ctx) as sub:
            deadline = time.monotonic() + 5
            got = None
            while got is None and time.monotonic() < deadline:
                raw_pub.send_multipart([b"Trade", b"short"])
                raw_pub.send_multipart([b"Trade", pack_seq("live", 0), b"\xc1garbage"])
                raw_pub.send_multipart([b"Trade", pack_seq("live", 1), EventCodec().encode(trade(1))])
                got = sub.recv(timeout_s=0.05)
            assert got is not None and got.event == trade(1)
            assert sub.malformed >= 2
    finally:
        raw_pub.close(linger=0)
        ctx.term()


# --- binding ------------------------------------------------------------------------------------


def test_default_address_is_loopback():
    assert DEFAULT_ADDR == "tcp://127.0.0.1:5556"
    assert inspect.signature(Publisher).parameters["addr"].default == DEFAULT_ADDR
    assert inspect.signature(Subscriber).parameters["addr"].default == DEFAULT_ADDR
    with Publisher("tcp://127.0.0.1:0") as pub:  # ":0" means any free port, as with sockets
        assert pub.addr.startswith("tcp://127.0.0.1:") and not pub.addr.endswith(":0")


def test_port_in_use_is_a_clear_mia_error():
    with Publisher(ANY_PORT) as pub:
        with pytest.raises(BusAddressInUseError) as info:
            Publisher(pub.addr)
    assert isinstance(info.value, MiaError)
    assert pub.addr in str(info.value) and "in use" in str(info.value)


def test_bad_address_is_a_bus_error_naming_it():
    with pytest.raises(BusError, match="nonsense://x"):
        Publisher("nonsense://x")


# --- tail ---------------------------------------------------------------------------------------


def test_tail_yields_count_messages_as_json_lines():
    with Publisher(ANY_PORT) as pub:
        lines = []
        it = tail(pub.addr, "GammaLevels", count=2, timeout_s=30)
        deadline = time.monotonic() + 5
        seq = 0
        # The subscriber connects on the first next(); publish until two have come.
        done = threading.Event()

        def consume():
            for msg in it:
                lines.append(tail_line(msg))
            done.set()

        t = threading.Thread(target=consume, daemon=True)
        t.start()
        while not done.is_set() and time.monotonic() < deadline:
            pub.publish("derived", seq, gamma("SPX"))
            pub.publish("live", seq, trade(seq))
            seq += 1
            time.sleep(0.01)
        t.join(timeout=5)
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["topic"] == "GammaLevels.SPX" and first["stream"] == "derived"
    assert first["event"]["kind"] == "GammaLevels" and first["event"]["underlying"] == "SPX"
    assert first["event"]["basis"] is None  # NaN prints as null: the line stays valid JSON


def test_tail_stops_after_timeout_without_messages():
    with Publisher(ANY_PORT) as pub:
        t0 = time.monotonic()
        assert list(tail(pub.addr, timeout_s=0.2)) == []
        assert 0.15 <= time.monotonic() - t0 < 30  # it waited, and it stopped
