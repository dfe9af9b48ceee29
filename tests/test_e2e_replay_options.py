"""`mia replay` options over a written day: --speed paces, --from/--to window, --symbols filters,
--publish publishes."""

import json
import socket
import threading
import time

import pytest
from click.testing import CliRunner

from mia.cli import cli
from mia.engine.clock import ManualClock
from mia.engine.events import Instrument, Quote, Trade
from mia.engine.log import EventLog

NS = 1_000_000_000
T0 = 1795183200 * NS  # 2026-11-20 14:00:00 UTC
DATE = "2026-11-20"


def write_day(root) -> list:
    """Three minutes of ESZ6 and NQZ6: a trade and a quote per symbol every 250 ms."""
    clock = ManualClock(T0)
    events = [Instrument(T0, T0, 1, "ESZ6", "dtc:sim", tick_size=0.25),
              Instrument(T0, T0, 2, "NQZ6", "dtc:sim", tick_size=0.25)]
    for k in range(3 * 60 * 4):
        ts = T0 + k * NS // 4 + 1000
        for inst, px in ((1, 6000.0), (2, 21000.0)):
            p = px + 0.25 * ((k * 7 + inst) % 9)
            events.append(Quote(ts, ts, inst, p - 0.25, 5.0, p, 6.0))
            events.append(Trade(ts, ts + 1, inst, p, 1.0 + k % 3, 1 if k % 2 else -1))
    with EventLog(root).writer("live", clock=clock) as w:
        for ev in events:
            clock.set(ev.ts_recv)
            w.append(ev)
    return events


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    root = tmp_path_factory.mktemp("replay-options")
    return root, write_day(root)


def replay(root, *args):
    res = CliRunner().invoke(cli, ["replay", "--data-dir", str(root), "--date", DATE, "-q", *args])
    return res


def test_window_counts_only_rows_inside_it(day):
    root, events = day
    res = replay(root, "--from", "14:01", "--to", "14:02", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
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
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert list(out["instruments"]) == ["NQZ6"]
    bad = replay(root, "--symbols", "CLZ6")
    assert bad.exit_code == 2 and "CLZ6" in bad.output and "Traceback" not in bad.output


def test_bad_window_is_a_usage_error(day):
    root, _ = day
    res = replay(root, "--from", "15:00", "--to", "14:00")
    assert res.exit_code == 2 and "window" in res.output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_speed_10_paces_and_publish_sends_the_window(day):
    from mia.engine.bus import Subscriber

    root, events = day
    addr = f"tcp://127.0.0.1:{free_port()}"
    got = []
    done = threading.Event()

    def listen():
        with Subscriber(addr, topics=("Trade.ESZ6",)) as sub:
            while not done.is_set():
                msg = sub.recv(timeout_s=0.1)
                if msg is not None:
                    got.append(msg.event)
            while (msg := sub.recv(timeout_s=0.3)) is not None:
                got.append(msg.event)

    thread = threading.Thread(target=listen)
    thread.start()
    time.sleep(0.3)
    t = time.monotonic()
    try:
        # a 40 s window at 10x: about 4 s of wall time
        res = replay(root, "--from", "14:01", "--to", "14:02", "--speed", "10", "--symbols", "ESZ6",
                     "--publish", addr)
        wall = time.monotonic() - t
    finally:
        done.set()
        thread.join(10)
    assert res.exit_code == 0, res.output
    span = 60 - 0.25  # first to last row of the window, in seconds
    assert span / 10 * 0.9 <= wall <= span / 10 + 6, wall
    lo, hi = T0 + 60 * NS, T0 + 120 * NS
    want = [e for e in events if isinstance(e, Trade) and e.instrument == 1 and lo <= e.ts_recv < hi]
    # a SUB socket may miss the first messages while it connects (ZeroMQ's slow joiner): the
    # rest arrive, in order, and nothing outside the window or of another symbol
    assert got and got == want[len(want) - len(got):]
    assert len(got) >= len(want) - 8
