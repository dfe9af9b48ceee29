"""Following Sierra's files live: the follower alone (a manual clock), then `mia record
--sierra-data` as a subprocess beside a writer subprocess, and a kill -9 with a restart."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mia.data.sierra import depth as _depth
from mia.data.sierra import scid as _scid
from mia.data.sierra.common import scdt_to_ns
from mia.data.sierra.follower import SierraFollower, depth_path, scid_path
from mia.data.sierra.simwriter import make_depth, make_trades, write_depth, write_scid
from mia.engine.clock import NS_PER_S, ManualClock, day_bounds, utc_day
from mia.engine.events import (
    FEED_AVAILABLE,
    FEED_SUBSCRIBED,
    FEED_UNAVAILABLE,
    BookLevel,
    FeedStatus,
    Gap,
    Instrument,
    Trade,
)
from mia.engine.instruments import InstrumentRegistry
from mia.engine.log import EventLog

PY = sys.executable
MIA = str(Path(PY).parent / "mia")
DAY = "2026-11-27"
NOON = day_bounds(DAY)[0] + 12 * 3600 * NS_PER_S


@pytest.fixture
def follower():
    made = []

    def make(tmp_path, clock, **kw):
        out = []
        f = SierraFollower(tmp_path, ["ESZ6"], emit=out.append, clock=clock,
                           registry=InstrumentRegistry(), **kw)
        made.append(f)
        return f, out

    yield make
    for f in made:
        f.close()


def _append_torn(path, data: bytes, cut: int):
    with open(path, "ab") as fh:
        fh.write(data[:cut])
    return data[cut:]


def test_follower_starts_at_the_end_and_holds_back_torn_records(tmp_path, follower):
    # Arrange: 100 records of history, and the depth file of the day
    clock = ManualClock(NOON)
    old = make_trades(100, NOON - 600 * NS_PER_S, seed=1)
    write_scid(scid_path(tmp_path, "ESZ6"), old)
    write_depth(depth_path(tmp_path, "ESZ6", DAY), make_depth(50, NOON - 600 * NS_PER_S))
    f, out = follower(tmp_path, clock)
    # Act: start, then Sierra appends 10 trades in two flushes, the first ending mid-record
    f.poll()
    assert not [e for e in out if isinstance(e, (Trade, BookLevel))]  # no history
    assert [e.detail for e in out if isinstance(e, FeedStatus)] == [
        "following ESZ6.scid from record 100", f"following ESZ6.{DAY}.depth from record 50"]
    new = make_trades(10, NOON + NS_PER_S, seed=2)
    rest = _append_torn(scid_path(tmp_path, "ESZ6"), _scid.encode_records(new), 7 * 40 + 13)
    clock.advance(NS_PER_S)
    f.poll()
    got = [e for e in out if isinstance(e, Trade)]
    assert len(got) == 7 and all(e.ts_recv == clock.now_ns() for e in got)
    _append_torn(scid_path(tmp_path, "ESZ6"), rest, len(rest))
    f.poll()
    # Assert: each appended trade once, in order, exact
    got = [e for e in out if isinstance(e, Trade)]
    assert [(e.ts_event, e.price, e.size) for e in got] == list(zip(
        scdt_to_ns(new["dt"]).tolist(), new["close"].astype(float).tolist(),
        new["total_volume"].astype(float).tolist()))
    assert isinstance(out[0], Instrument) and out[0].symbol == "ESZ6" and out[0].tick_size == 0.25


def test_depth_file_rolls_over_at_the_day_change(tmp_path, follower):
    end = day_bounds(DAY)[1]
    clock = ManualClock(end - NS_PER_S)
    write_scid(scid_path(tmp_path, "ESZ6"), make_trades(5, end - 60 * NS_PER_S))
    d0 = depth_path(tmp_path, "ESZ6", DAY)
    write_depth(d0, make_depth(30, end - 60 * NS_PER_S))
    f, out = follower(tmp_path, clock, rollover_grace_s=10.0)
    f.poll()
    # before midnight: 4 records into today's file
    late = make_depth(25, end - NS_PER_S, seed=3, snapshot=False)[:4]
    write_depth(d0, late, append=True)
    clock.set(end + NS_PER_S)  # past midnight: the new day's file appears, read from its start
    nxt = day_bounds(utc_day(end))[0]
    d1 = depth_path(tmp_path, "ESZ6", utc_day(end))
    fresh = make_depth(30, nxt + 1000, seed=4)
    write_depth(d1, fresh)
    f.poll()
    late2 = make_depth(25, end - NS_PER_S // 2, seed=5, snapshot=False)[:3]
    write_depth(d0, late2, append=True)  # Sierra flushes yesterday's last records late
    clock.advance(NS_PER_S)
    f.poll()
    books = [e for e in out if isinstance(e, BookLevel)]
    want = np.concatenate([late, fresh, late2])
    assert sorted(e.ts_event for e in books) == sorted(scdt_to_ns(want["dt"]).tolist())
    assert len(books) == len(want)
    clock.advance(20 * NS_PER_S)  # after the grace, yesterday's file is let go
    f.poll()
    assert [t.path for t in f._tails if t.kind == "depth"] == [d1]


def test_a_silent_file_is_reported_then_the_gap(tmp_path, follower):
    clock = ManualClock(NOON)
    write_scid(scid_path(tmp_path, "ESZ6"), make_trades(5, NOON - 60 * NS_PER_S))
    opened = []
    f, out = follower(tmp_path, clock, depth=False, silence_s=5.0,
                       market_open=lambda ts: opened.append(ts) or True)
    f.poll()
    clock.advance(3 * NS_PER_S)
    f.poll()
    assert not [e for e in out if isinstance(e, FeedStatus) and e.status == FEED_UNAVAILABLE]
    clock.advance(3 * NS_PER_S)
    f.poll()
    f.poll()
    down = [e for e in out if isinstance(e, FeedStatus) and e.status == FEED_UNAVAILABLE]
    assert len(down) == 1 and "ESZ6.scid has not grown for 6s" == down[0].detail and opened
    clock.advance(4 * NS_PER_S)
    write_scid(scid_path(tmp_path, "ESZ6"), make_trades(2, clock.now_ns()), append=True)
    f.poll()
    up = [e for e in out if isinstance(e, FeedStatus) and e.status == FEED_AVAILABLE]
    (gap,) = [e for e in out if isinstance(e, Gap)]
    assert len(up) == 1 and (gap.start_ns, gap.end_ns) == (NOON, NOON + 10 * NS_PER_S)
    assert gap.instrument == out[0].instrument
    # a closed market is not silence
    f2, out2 = follower(tmp_path, clock, depth=False, silence_s=1.0, market_open=lambda ts: False)
    f2.poll()
    clock.advance(5 * NS_PER_S)
    f2.poll()
    assert not [e for e in out2 if isinstance(e, FeedStatus) and e.status == FEED_UNAVAILABLE]


def test_a_file_that_appears_later_is_read_from_its_start(tmp_path, follower):
    clock = ManualClock(NOON)
    f, out = follower(tmp_path, clock, depth=False)
    f.poll()
    assert [e.status for e in out if isinstance(e, FeedStatus)] == [FEED_UNAVAILABLE]
    recs = make_trades(20, NOON)
    write_scid(scid_path(tmp_path, "ESZ6"), recs)
    f.poll()
    assert len([e for e in out if isinstance(e, Trade)]) == 20
    assert FEED_SUBSCRIBED in [e.status for e in out if isinstance(e, FeedStatus)]


# --- subprocesses: a writer process and `mia record --sierra-data` ---------------------------


def _wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _rows(root):
    """(symbol, kind, ts_event, price, size) of the live stream, in log order."""
    log = EventLog(root)
    ids, out = {}, []
    for date in log.dates():
        for _, ev in log.read(date, streams="live", kinds=[Instrument, Trade, BookLevel]):
            if isinstance(ev, Instrument):
                ids[ev.instrument] = ev.symbol
            elif isinstance(ev, Trade):
                out.append((ids[ev.instrument], "T", ev.ts_event, ev.price, ev.size))
            else:
                out.append((ids[ev.instrument], "B", ev.ts_event, ev.price, ev.size))
    return out


def _following(root, n):
    log = EventLog(root)
    try:
        return sum(1 for d in log.dates() for _, e in log.read(d, streams="live", kinds=[FeedStatus])
                   if e.detail.startswith("following")) >= n
    except Exception:
        return False


def _recorder(sierra, root, *extra):
    return subprocess.Popen(
        [MIA, "record", "--sierra-data", str(sierra), "--symbols", "ESZ6,NQZ6", "--no-polygon",
         "--no-publish", "--duration", "60s", "-q", "--data-dir", str(root), *extra],
        cwd=root.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _writer(sierra, seconds, seed):
    return subprocess.Popen(
        [PY, "-m", "mia.data.sierra.simwriter", str(sierra), "--symbols", "ESZ6,NQZ6",
         "--rate", "150", "--flush", "0.1", "--duration", str(seconds), "--seed", str(seed)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _expected(sierra, start):
    """What the files hold after the records present at start: trades and depth commands."""
    out = []
    for sym in ("ESZ6", "NQZ6"):
        recs = _scid.ScidReader().feed(scid_path(sierra, sym).read_bytes())[start[("scid", sym)]:]
        out += [(sym, "T", t, p, s) for t, p, s in zip(
            scdt_to_ns(recs["dt"]).tolist(), recs["close"].astype(float).tolist(),
            recs["total_volume"].astype(float).tolist())]
        for path in sorted((sierra / "MarketDepthData").glob(f"{sym}.*.depth")):
            d = _depth.DepthReader().feed(path.read_bytes())[start.get(("depth", path.name), 0):]
            d = d[d["command"] != 0]
            out += [(sym, "B", t) for t in scdt_to_ns(d["dt"]).tolist()]
    return out


def _prefill(sierra):
    now = time.time_ns()
    start = {}
    for i, sym in enumerate(("ESZ6", "NQZ6")):
        write_scid(scid_path(sierra, sym), make_trades(300, now - 120 * NS_PER_S, seed=i))
        start[("scid", sym)] = 300
        dp = depth_path(sierra, sym, utc_day(now))
        write_depth(dp, make_depth(200, now - 120 * NS_PER_S, seed=i))
        start[("depth", dp.name)] = 200
    return start


def _compare(sierra, root, start):
    want = _expected(sierra, start)
    got = _rows(root)
    for sym in ("ESZ6", "NQZ6"):
        gt = [r for r in got if r[0] == sym and r[1] == "T"]
        wt = [r for r in want if r[0] == sym and r[1] == "T"]
        assert gt == wt, sym  # every appended trade once, in order, none from before the start
        gb = [r[2] for r in got if r[0] == sym and r[1] == "B"]
        wb = [r[2] for r in want if r[0] == sym and r[1] == "B"]
        assert sorted(gb) == sorted(wb) and len(gb) == len(wb), sym
    return want


def _finish(proc):
    """Kill `proc` if it still runs, and close its pipes."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)


def _wait_writer(w):
    out, err = w.communicate(timeout=30)
    assert w.returncode == 0, err[-2000:]
    return out


def _stop(proc):
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    return out


def test_record_follows_a_writer_process(tmp_path):
    sierra, root = tmp_path / "sierra", tmp_path / "log"
    sierra.mkdir()
    start = _prefill(sierra)
    rec = _recorder(sierra, root)
    try:
        _wait(lambda: _following(root, 4) or rec.poll() is not None, 60, "the recorder to follow")
        assert rec.poll() is None, rec.communicate()[1][-2000:]
        _wait_writer(_writer(sierra, 1.5, 11))
        n = len(_expected(sierra, start))
        _wait(lambda: len(_rows(root)) >= n, 20, f"{n} rows in the log")
        out = _stop(rec)
    finally:
        _finish(rec)
    assert "recorded" in out
    want = _compare(sierra, root, start)
    assert len([r for r in want if r[1] == "T"]) > 200


def test_kill_9_and_a_restart_lose_nothing_sierra_flushed(tmp_path):
    sierra, root = tmp_path / "sierra", tmp_path / "log"
    sierra.mkdir()
    start = _prefill(sierra)
    a = _recorder(sierra, root)
    b = None
    w = None
    try:
        _wait(lambda: _following(root, 4) or a.poll() is not None, 60, "the first recorder")
        w = _writer(sierra, 4.0, 12)
        _wait(lambda: len(_rows(root)) > 100, 20, "rows from the first recorder")
        os.kill(a.pid, signal.SIGKILL)  # mid-frame, mid-flush
        _finish(a)
        b = _recorder(sierra, root)
        _wait_writer(w)
        n = len(_expected(sierra, start))
        _wait(lambda: len(_rows(root)) >= n or b.poll() is not None, 30, f"{n} rows")
        _stop(b)
    finally:
        for p in (a, b, w):
            _finish(p)
    _compare(sierra, root, start)
