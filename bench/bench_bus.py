"""Bus throughput: events through Publisher -> Subscriber over loopback TCP, against raw pyzmq
moving the same pre-encoded frames (the transport's ceiling), and the catch-up's log replay
against EventLog.read alone."""

from __future__ import annotations

import datetime as dt
import tempfile
import threading
import time

import zmq

from mia.engine.bus import CatchUp, Publisher, Subscriber, TopicNamer, pack_seq
from mia.engine.clock import ManualClock
from mia.engine.events import EventCodec, Instrument, Quote, Trade
from mia.engine.log import EventLog

TARGET_EVENTS_PER_S = 100_000  # above the 1e4-1e5/s one-second peaks of ES+NQ (eventlog.md §5)
T0 = int(dt.datetime(2025, 12, 1, 14, 30, tzinfo=dt.timezone.utc).timestamp() * 1e9)
DAY = dt.date(2025, 12, 1)


def _events(n: int) -> list:
    out = [Instrument(ts_event=T0, ts_recv=T0, instrument=1, symbol="ESZ5", source="bench",
                      tick_size=0.25, point_value=50.0)]
    for i in range(n - 1):
        ts = T0 + 20_000 * i
        if i % 3:
            out.append(Quote(ts_event=ts, ts_recv=ts, instrument=1, bid=5000.0, bid_size=10.0,
                             ask=5000.25, ask_size=12.0))
        else:
            out.append(Trade(ts_event=ts, ts_recv=ts, instrument=1, price=5000.25, size=2.0,
                             side=1))
    return out


def _mia_pubsub(events: list) -> float:
    n = len(events)
    with Publisher("tcp://127.0.0.1:*", sndhwm=n + 10) as pub, \
            Subscriber(pub.addr, rcvhwm=n + 10) as sub:
        assert pub.wait_for_subscriber(timeout_s=5)
        t = threading.Thread(target=pub.publish_many, args=("live", 0, events))
        t0 = time.perf_counter()
        t.start()
        got = sum(1 for _ in sub.messages(timeout_s=5.0, count=n))
        elapsed = time.perf_counter() - t0
        t.join()
    assert got == n and not sub.gaps, (got, sub.gaps[:3])
    return elapsed


def _raw_pubsub(events: list) -> float:
    # The peer: plain PUB/SUB moving the same three frames, encoded beforehand, nothing decoded.
    codec, namer = EventCodec(), TopicNamer()
    frames = [(namer.topic(e), pack_seq("live", i), codec.encode(e)) for i, e in enumerate(events)]
    n = len(frames)
    ctx = zmq.Context()
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    try:
        pub.sndhwm = sub.rcvhwm = n + 10
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        sub.subscribe(b"")
        sub.connect(f"tcp://127.0.0.1:{port}")
        while not sub.poll(10):  # wait out the slow joiner
            pub.send_multipart([b"warmup", b"", b""])
        while sub.poll(50):
            sub.recv_multipart()

        def send():
            for f in frames:
                pub.send_multipart(f)

        t = threading.Thread(target=send)
        t0 = time.perf_counter()
        t.start()
        for _ in range(n):
            sub.recv_multipart()
        elapsed = time.perf_counter() - t0
        t.join()
    finally:
        pub.close(linger=0)
        sub.close(linger=0)
        ctx.term()
    return elapsed


def _catch_up_vs_read(events: list) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as root:
        log = EventLog(root)
        with log.writer("live", clock=ManualClock(T0), fsync="never") as w:
            w.append_many(events)
        sum(1 for _ in log.read(DAY, T0, streams=["live"]))  # warm up: the time index imports numba
        t0 = time.perf_counter()
        n_read = sum(1 for _ in log.read(DAY, streams=["live"]))
        t_read = time.perf_counter() - t0
        with Publisher("tcp://127.0.0.1:*") as pub:
            join = CatchUp(log, DAY, pub.addr, streams=["live"], idle_timeout_s=0.0)
            t0 = time.perf_counter()
            n_join = sum(1 for _ in join)
            t_join = time.perf_counter() - t0
    assert n_join == n_read == len(events) + 2, (n_join, n_read)  # + RecordingStarted/Ended
    return t_read, t_join


def run(quick: bool) -> str:
    n = 20_000 if quick else 300_000
    events = _events(n)
    best = lambda f: min(f() for _ in range(1 if quick else 3))  # noqa: E731
    t_mia = best(lambda: _mia_pubsub(events))
    t_raw = best(lambda: _raw_pubsub(events))
    t_read, t_join = min(_catch_up_vs_read(events) for _ in range(1 if quick else 2))
    mia_rate, raw_rate = n / t_mia, n / t_raw
    read_rate, join_rate = (n + 2) / t_read, (n + 2) / t_join
    ok = "met" if mia_rate >= TARGET_EVENTS_PER_S else "NOT met"
    return (
        "## Bus (ZeroMQ PUB/SUB, catch-up)\n\n"
        f"{n:,} events (2/3 quotes, 1/3 trades), loopback TCP, publisher thread -> subscriber "
        "in the same process (both share the GIL on a 2-core machine).\n\n"
        "| path | events/s | vs peer |\n|---|---:|---:|\n"
        f"| mia Publisher.publish -> Subscriber.recv (encode, topic, seq, decode, gap check) "
        f"| {mia_rate:,.0f} | {mia_rate / raw_rate:.2f}x |\n"
        f"| peer: raw pyzmq send_multipart/recv_multipart of pre-encoded frames "
        f"| {raw_rate:,.0f} | 1.00x |\n"
        f"| catch-up, log part (EventLog.read + topic + dedupe) | {join_rate:,.0f} "
        f"| {join_rate / read_rate:.2f}x |\n"
        f"| peer: EventLog.read alone | {read_rate:,.0f} | 1.00x |\n\n"
        f"Target: >= {TARGET_EVENTS_PER_S:,} events/s end to end (ES+NQ one-second peaks are "
        f"10^4-10^5/s): **{ok}**.\n"
    )


if __name__ == "__main__":
    print(run(quick=True))
