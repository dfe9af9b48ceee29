"""`mia replay` options over a written day: --speed paces, --from/--to window, --symbols filters,
--publish publishes."""

import threading
import time

import pytest
from helpers import assert_one_line_error, cli_run, free_port, last_json_line, write_events

from mia.engine.events import Instrument, Quote, Trade

NS = 1_000_000_000
T0 = 1795183200 * NS  # 2026-11-20 14:00:00 UTC
DATE = "2026-11-20"


def write_day(root) -> list:
    """Three minutes of ESZ6 and NQZ6: a trade and a quote per symbol every 250 ms."""
    events = [Instrument(T0, T0, 1, "ESZ6", "dtc:sim", tick_size=0.25),
              Instrument(T0, T0, 2, "NQZ6", "dtc:sim", tick_size=0.25)]
    for k in range(3 * 60 * 4):
        ts = T0 + k * NS // 4 + 1000
        for inst, px in ((1, 6000.0), (2, 21000.0)):
            p = px + 0.25 * ((k * 7 + inst) % 9)
            events.append(Quote(ts, ts, inst, p - 0.25, 5.0, p, 6.0))
            events.append(Trade(ts, ts + 1, inst, p, 1.0 + k % 3, 1 if k % 2 else -1))
    write_events(root, events)
    return events


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    root = tmp_path_factory.mktemp("replay-options")
    return root, write_day(root)


def replay(root, *args):
    return cli_run("replay", "--data-dir", root, "--date", DATE, "-q", *args)


def test_window_counts_only_rows_inside_it(day):
    root, events = day
    res = replay(root, "--from", "14:01", "--to", "14:02", "--json")
    assert res.exit_code == 0, res.output
    out = last_json_line(res.stdout)
    lo, hi = T0 + 60 * NS, T0 + 120 * NS
    assert out["events"] == sum(lo <= e.ts_recv < hi for e in events)
    trades = [e for e in events if isinstance(e, Trade) and lo <= e.ts_recv < hi and e.instrument == 1]
    es = out["instruments"]["ESZ6"]
    assert es["trades"] == len(trades)
    assert es["volume"] == sum(t.size for t in trades)
    assert es["high"] == max(t.price for t in trades) and es["low"] == min(t.price for t in trades)


def test_symbols_filter_and_unknown_symbol(day):
    root, _ = day
    res = replay(root, "--symbols", "NQZ6", "--json")
    assert res.exit_code == 0, res.output
    out = last_json_line(res.stdout)
    assert list(out["instruments"]) == ["NQZ6"] and out["instruments"]["NQZ6"]["trades"] > 0
    assert "CLZ6" in assert_one_line_error(replay(root, "--symbols", "CLZ6"), 2)


def test_bad_window_is_a_usage_error(day):
    root, _ = day
    res = replay(root, "--from", "15:00", "--to", "14:00")
    assert "window" in assert_one_line_error(res, 2)


def test_speed_10_paces_and_publish_sends_the_window(day):
    from mia.engine.bus import Subscriber

    root, events = day
    lo, hi = T0 + 60 * NS, T0 + 120 * NS
    want = [e for e in events if isinstance(e, Trade) and e.instrument == 1 and lo <= e.ts_recv < hi]
    addr = f"tcp://127.0.0.1:{free_port()}"
    got: list[tuple[float, Trade]] = []  # (arrival, event)
    listening, replayed = threading.Event(), threading.Event()

    def listen():
        with Subscriber(addr, topics=("Trade.ESZ6",)) as sub:
            listening.set()
            deadline = None
            while not got or got[-1][1] != want[-1]:  # until the window's last trade
                if replayed.is_set():  # then whatever is still on its way, within a bound
                    deadline = deadline or time.monotonic() + 30
                    if time.monotonic() > deadline:
                        return
                msg = sub.recv(timeout_s=0.1)
                if msg is not None:
                    got.append((time.monotonic(), msg.event))

    thread = threading.Thread(target=listen)
    thread.start()
    assert listening.wait(60)
    t = time.monotonic()
    try:
        # a 60 s window at 10x: about 6 s of wall time
        res = replay(root, "--from", "14:01", "--to", "14:02", "--speed", "10", "--symbols", "ESZ6",
                     "--publish", addr)
        wall = time.monotonic() - t
    finally:
        replayed.set()
        thread.join(60)
    assert res.exit_code == 0, res.output
    # a SUB socket may miss the first messages while it connects (ZeroMQ's slow joiner): the
    # rest arrive, in order, and nothing outside the window or of another symbol
    trades = [ev for _, ev in got]
    assert trades and trades == want[len(want) - len(trades):]
    assert len(trades) >= len(want) - 8
    # paced: the trades received left no faster than 10x their own time span (a loaded machine
    # only slows them); and not at 1x (60 s)
    span_s = (trades[-1].ts_recv - trades[0].ts_recv) / NS
    assert got[-1][0] - got[0][0] >= span_s / 10 * 0.9, (got[-1][0] - got[0][0], span_s)
    assert wall < 60 / 2, wall
