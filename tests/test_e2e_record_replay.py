"""End to end: the simulators -> `Recorder` -> the log -> `mia replay --check`.

Each test records from the embedded simulators (real DTC and HTTP servers on loopback) until
the day holds what it is about (conditions with bounded deadlines, not fixed durations: on a
loaded machine everything takes longer), then proves that replaying the log reproduces every
derived event bit for bit, faults and fallbacks included.
"""

import asyncio
import time

import msgspec
from helpers import OffsetClock, cli_run, last_json_line, mia_cmd, wait_until

from mia.config import Config
from mia.engine.events import (
    DERIVED_KINDS,
    FeedStatus,
    GammaLevels,
    Gap,
    SourceError,
    Trade,
    kind_of,
)
from mia.engine.log import EventLog
from mia.fold import Fold
from mia.recorder.live import Recorder
from mia.recorder.sim import Simulators
from mia.replay import open_day, replay_day

SUMMARY_FIELDS = {"trades", "volume", "buy_volume", "sell_volume", "cum_delta", "vwap", "poc",
                  "va_low", "va_high", "high", "low", "last"}
GAMMA_FIELDS = {"ts", "spot", "zero_gamma", "call_wall", "put_wall", "max_pain", "total_gex",
                "pcr_oi", "pcr_volume", "dealer_bias", "stale"}
UNDERLYINGS = ("SPX", "NDX")
BOUND_S = 120.0  # the most any recording below may take on a loaded machine


def base_config() -> Config:
    cfg = Config()
    return msgspec.structs.replace(cfg, bus=msgspec.structs.replace(cfg.bus, enabled=False))


async def until(check, what: str, timeout_s: float = BOUND_S, poll_s: float = 0.05):
    """Await `check()` (sync or async) until it is truthy; fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g}s waiting for {what}"
        await asyncio.sleep(poll_s)


async def logged(root, kinds, stream: str = "derived") -> list:
    """The events of `kinds` the recorder has written so far to `stream`, every day (read in
    a worker thread: the recorder runs on this event loop)."""

    def read():
        log = EventLog(root)
        return [ev for d in log.dates() for _, ev in log.read(d, kinds=kinds, streams=[stream])]

    return await asyncio.get_running_loop().run_in_executor(None, read)


def fresh_gamma_of_every_underlying(root):
    async def check():
        levels = await logged(root, [GammaLevels])
        return {g.underlying for g in levels if not g.stale} >= set(UNDERLYINGS)
    return check


def record(data_dir, until_done, *, clock=None, rate=2000.0, poll_s=1.0, base=None):
    """Record from fresh simulators until the coroutine `until_done(sims, rec)` returns (it
    waits for what the test needs in the log and may inject faults meanwhile), then stop
    cleanly. Returns (RecordResult, Simulators): the simulators are stopped but keep what they
    sent."""

    async def go():
        async with Simulators(seed=3, rate=rate, clock=clock) as sims:
            cfg = sims.record_config(base or base_config(), poll_s=poll_s)
            rec = Recorder(cfg, str(data_dir), clock=clock)
            run = asyncio.create_task(rec.run())
            waiter = asyncio.create_task(until_done(sims, rec))
            try:
                await asyncio.wait({run, waiter}, return_when=asyncio.FIRST_COMPLETED)
                if run.done():  # it should run until stopped
                    raise AssertionError(f"the recorder stopped on its own: {run.result()}")
                waiter.result()  # the waiter's own failure (a timeout) first
            finally:
                waiter.cancel()
                rec.stop()
                result = await asyncio.wait_for(run, 60)
            return result, sims

    return asyncio.run(go())


def replay_json(data_dir, date, *extra):
    res = cli_run("replay", "--data-dir", data_dir, "--date", date, "--check", "--json", "-q",
                  *extra)
    return res, last_json_line(res.stdout) if res.stdout.strip() else None


def assert_prefix_of_sent(recorded: dict, sent: dict, *, in_flight: int = 40) -> None:
    """Per symbol, the recorded trades are what the simulator sent on the connection, in order;
    only the last few sent just before the recorder hung up (still in flight) may be missing."""
    assert set(recorded) == set(sent)
    for sym, rows in sent.items():
        want = [(p, s, {1: -1, 2: 1}.get(side, 0)) for p, s, side in rows]  # at bid: seller
        got = recorded[sym]
        assert got == want[:len(got)], sym
        assert len(want) - len(got) <= in_flight, (sym, len(want), len(got))


def trades_by_symbol(root, dates) -> dict:
    by_id, out = {}, {}
    for date in dates:
        day = open_day(root, date)
        by_id.update(day.symbols())
        for ev in day.events(kinds=[Trade]):
            out.setdefault(by_id[ev.instrument], []).append((ev.price, ev.size, ev.side))
    return out


def test_sim_record_then_replay_check_passes_with_the_documented_summary(tmp_path):
    async def four_seconds_and_fresh_gamma(sims, rec):
        await asyncio.sleep(4.0)  # the recording's minimum length, not a wait for anything
        await until(fresh_gamma_of_every_underlying(tmp_path), "fresh GammaLevels of each index")

    result, sims = record(tmp_path, four_seconds_and_fresh_gamma)
    assert result.events > 1000 and result.derived > 0
    # receive lag against a loopback server is well under a second; whole-second DTC times
    # (BidAsk 108) must not count as lag
    dtc = [st for name, st in result.sources.items() if name.startswith("dtc:")]
    assert dtc and all(0 <= st.lag_ns < 200_000_000 for st in dtc), [st.lag_ns for st in dtc]
    res, out = replay_json(tmp_path, result.date)
    assert res.exit_code == 0, res.output
    assert out["check"] == "ok"
    assert set(out) >= {"date", "events", "instruments", "gamma", "check"}
    assert out["date"] == result.date
    # every row of the day's input stream is replayed, the writer's own bracketing included
    assert out["events"] >= result.events
    for sym in ("ESZ6", "NQZ6"):
        s = out["instruments"][sym]
        assert set(s) == SUMMARY_FIELDS
        assert s["low"] <= s["vwap"] <= s["high"]
    # the log holds what the simulator sent on the recorder's connection; the summary counts it:
    # every trade and its volume; at least the sides DTC flagged (the rest are inferred)
    recorded = trades_by_symbol(tmp_path, [result.date])
    assert_prefix_of_sent(recorded, sims.dtc.records[0].trades)
    for sym in ("ESZ6", "NQZ6", "VXZ6"):
        s, rows = out["instruments"][sym], recorded[sym]
        assert s["trades"] == len(rows) > 0, sym
        assert s["volume"] == sum(size for _, size, _ in rows), sym
        assert s["buy_volume"] >= sum(size for _, size, side in rows if side > 0), sym
        assert s["sell_volume"] >= sum(size for _, size, side in rows if side < 0), sym
        assert s["buy_volume"] + s["sell_volume"] <= s["volume"], sym
        assert s["cum_delta"] == s["buy_volume"] - s["sell_volume"], sym
    for u in UNDERLYINGS:
        g = out["gamma"][u]
        assert set(g) == GAMMA_FIELDS
        assert g["spot"] > 0 and g["stale"] is False


def test_faults_are_recorded_and_replay_reproduces_the_fallbacks(tmp_path):
    async def faults(sims, rec):
        def dtc_stats():
            return next(st for name, st in rec.stats.items() if name.startswith("dtc:"))

        async def drop_links_and_await_reconnect():
            links = len(sims.dtc.records)
            sims.dtc.drop_links()
            await until(lambda: len(sims.dtc.records) > links, "the DTC client to reconnect")

        # recording for real: a fresh chain of each index, DTC traffic
        await until(fresh_gamma_of_every_underlying(tmp_path), "fresh GammaLevels of each index")
        await until(lambda: any(n.startswith("dtc:") for n in rec.stats), "the DTC source")
        errors = rec.stats["polygon"].errors
        sims.polygon.faults.error_status = 400  # not retried: the poll fails, a fallback is taken
        sims.polygon.faults.error_count = 2
        await drop_links_and_await_reconnect()
        await until(lambda: sims.polygon.faults.error_count == 0
                    and rec.stats["polygon"].errors > errors, "the 400s, recorded")

        async def stale_gamma():
            return any(g.stale for g in await logged(tmp_path, [GammaLevels]))
        await until(stale_gamma, "a stale GammaLevels (the fallback)")
        sims.polygon.faults.malformed_count = 2
        await until(lambda: sims.polygon.faults.malformed_count == 0, "two malformed pages served")
        sims.polygon.faults.error_status = 503  # a 5xx burst the client retries through
        sims.polygon.faults.error_count = 1
        await until(lambda: sims.polygon.faults.error_count == 0, "the 503 served")
        await drop_links_and_await_reconnect()
        after = dtc_stats().events
        await until(lambda: dtc_stats().events > after + 500, "DTC traffic after the last drop")

    result, sims = record(tmp_path, faults)
    day = open_day(tmp_path, result.date)
    events = list(day.events(kinds=["Gap", "FeedStatus", "SourceError", "GammaLevels"]))
    gaps = [e for e in events if isinstance(e, Gap)]
    statuses = [e for e in events if isinstance(e, FeedStatus)]
    errors = [e for e in events if isinstance(e, SourceError)]
    gamma = [e for e in events if isinstance(e, GammaLevels)]
    assert any(g.source.startswith("dtc:") and g.end_ns >= g.start_ns for g in gaps), gaps
    assert len({(s.source, s.status) for s in statuses}) >= 2  # disconnected, then connected again
    assert any(e.source == "polygon" and e.fallback for e in errors), errors
    assert any(g.stale for g in gamma) and any(not g.stale for g in gamma)
    # the DTC client reconnected: trades were recorded after the last drop
    trades = day.columns("Trade")
    assert len(trades["price"]) > 0 and trades["ts_recv"].max() > gaps[-1].start_ns
    res, out = replay_json(tmp_path, result.date)
    assert res.exit_code == 0, res.output
    assert out["check"] == "ok"
    rep = replay_day(str(tmp_path), result.date, check=True)
    recorded = list(day.events(streams=["derived"], kinds=["GammaLevels", "OrderflowBar", "Alert",
                                                           "TermStructure", "IvSurface", "OptionFlow",
                                                           "UnusualTrade"]))
    assert rep.check == "ok" and rep.derived == len(recorded) > 0
    assert sum(isinstance(e, GammaLevels) and e.stale for e in recorded) == sum(g.stale for g in gamma)


def test_utc_midnight_rollover_loses_nothing_and_both_days_check(tmp_path):
    import datetime as dt

    midnight = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    midnight += dt.timedelta(days=1)
    day1 = (midnight - dt.timedelta(days=1)).date().isoformat()
    day2 = midnight.date().isoformat()
    Fold.compile(base_config())  # the kernels now: compiling must not eat the 2 s before midnight
    # 2 s before midnight from the moment the simulators or the recorder first read the time
    clock = OffsetClock(int(midnight.timestamp()) * 1_000_000_000 - 2_000_000_000,
                        from_first_use=True)

    async def past_midnight_with_trades(sims, rec):
        async def trades_on_day2():
            return any(ev.ts_recv >= int(midnight.timestamp()) * 1_000_000_000
                       for ev in await logged(tmp_path, [Trade], "live"))
        await until(trades_on_day2, "trades recorded after midnight", poll_s=0.25)
        await asyncio.sleep(1.0)  # and a second of the new day (a length, not a wait)

    result, sims = record(tmp_path, past_midnight_with_trades, clock=clock)
    log = EventLog(tmp_path)
    assert log.dates() == [day1, day2]
    # every trade the simulator sent is in the log exactly once, in order, across the two days
    assert_prefix_of_sent(trades_by_symbol(tmp_path, [day1, day2]), sims.dtc.records[0].trades)
    assert len(list(open_day(tmp_path, day1).events(kinds=[Trade]))) > 0
    assert len(list(open_day(tmp_path, day2).events(kinds=[Trade]))) > 0
    ends = [ev for _, ev in log.read(day1, kinds=["RecordingEnded"])]
    assert ends and all(e.reason == "rollover" for e in ends)
    for date in (day1, day2):
        res, out = replay_json(tmp_path, date)
        assert res.exit_code == 0 and out["check"] == "ok", (date, res.output[-500:])


class ThreadedSimulators:
    """Simulators on their own event loop in a thread, for recorders running as subprocesses."""

    def __init__(self, **kw) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sims = Simulators(seed=5, **kw)
        asyncio.run_coroutine_threadsafe(self.sims.start(), self.loop).result(60)

    def call(self, fn):
        async def run():
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(60)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.sims.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(60)
        self.loop.close()


def record_cmd(data_dir, sims, *extra):
    return mia_cmd("record", "--data-dir", str(data_dir), "-q",
                   "--dtc", f"127.0.0.1:{sims.dtc.port}", "--symbols", "ESZ6,NQZ6",
                   "--polygon-url", sims.polygon.url, "--poll", "1", "--no-publish", *extra)


def test_sigkill_loses_at_most_the_open_frame_and_the_day_still_replays(tmp_path):
    import os
    import signal
    import subprocess

    from mia.recorder.sim import SIM_API_KEY

    env = dict(os.environ, POLYGON_API_KEY=SIM_API_KEY)
    ts = ThreadedSimulators(rate=2000.0)

    def sent_trades() -> int:
        return ts.call(lambda: sum(len(r) for r in ts.sims.dtc.records[0].trades.values())
                       if ts.sims.dtc.records else 0)

    def live_bytes(proc) -> int:
        assert proc.poll() is None, proc.stderr.read().decode()
        return sum(p.stat().st_size for p in tmp_path.glob("*/*-live.mseg"))

    try:
        with open(tmp_path / "recorder.stderr", "w+b") as err:
            proc = subprocess.Popen(record_cmd(tmp_path, ts.sims), env=env, cwd=tmp_path,
                                    stdout=subprocess.DEVNULL, stderr=err)
            try:
                # recording for real: frames reach the disk; then kill it mid-stream, once it
                # has written as much again, measuring the simulator's trade rate meanwhile
                wait_until(lambda: live_bytes(proc) > 20_000, BOUND_S, "the first frames")
                t0, sent0 = time.monotonic(), sent_trades()
                wait_until(lambda: live_bytes(proc) > 60_000, BOUND_S, "more frames")
                proc.send_signal(signal.SIGKILL)
                t_kill, sent_kill = time.monotonic(), sent_trades()
            finally:
                proc.kill()
                proc.wait(60)
        first = ts.call(lambda: ts.sims.dtc.records[0])
        date = EventLog(tmp_path).dates()[0]
        recorded = trades_by_symbol(tmp_path, [date])
        # at most the open frame (100 ms) and what was in flight: bound it by half a second
        # of the simulator's own trade rate on that connection
        rate = (sent_kill - sent0) / (t_kill - t0)
        bound = max(25, int(rate * 0.5))
        assert_prefix_of_sent(recorded, first.trades, in_flight=bound)
        # the next run starts a new segment beside the crashed one and warms up from it
        done = subprocess.run(record_cmd(tmp_path, ts.sims, "--duration", "2s"), env=env,
                              cwd=tmp_path, capture_output=True, timeout=BOUND_S + 60)
        assert done.returncode == 0, done.stderr.decode()
    finally:
        ts.close()
    log = EventLog(tmp_path)
    states = sorted(s.state for s in log.inspect(date) if s.info.stream == "live")
    assert len(states) == 2 and states[0] == "clean" and states[1] in ("crashed", "torn")
    rep = replay_day(str(tmp_path), date, check=True)
    assert rep.check == "ok", rep.mismatch
    assert len(rep.crashed_runs) == 1
    crash = rep.crashed_runs[0]
    assert crash.state in ("crashed", "torn") and crash.next_start > crash.verified_until
    assert rep.events == sum(s.events for s in log.inspect(date) if s.info.stream == "live")
    res, out = replay_json(tmp_path, date)
    assert res.exit_code == 0 and out["check"] == "ok"
    assert out["crashed_runs"][0]["recording_id"] == crash.recording_id


def test_a_bus_subscriber_joining_mid_recording_gets_every_event_in_order(tmp_path):
    import threading

    from mia.engine.bus import Subscriber
    from mia.engine.events import EventCodec

    cfg = Config()
    base = msgspec.structs.replace(cfg, bus=msgspec.structs.replace(
        cfg.bus, enabled=True, address="tcp://127.0.0.1:0"))
    got: list = []
    failures: list = []
    subscribed = threading.Event()
    ended = threading.Event()
    last_logged: dict[str, int] = {}  # stream -> the last seq the bus must deliver (once ended)

    def listen(addr):
        try:
            with Subscriber(addr) as sub:
                subscribed.set()
                last: dict[str, int] = {}
                deadline = time.monotonic() + BOUND_S
                while not (ended.is_set()
                           and all(last.get(s, -1) >= q for s, q in last_logged.items())):
                    assert time.monotonic() < deadline, f"bus stopped at {last}, log at {last_logged}"
                    msg = sub.recv(timeout_s=0.1)
                    if msg is not None:
                        got.append(msg)
                        last[msg.stream] = msg.seq
        except Exception as exc:  # surfaced by the test below
            failures.append(exc)

    async def go():
        loop = asyncio.get_running_loop()
        async with Simulators(seed=9, rate=2000.0) as sims:
            rec = Recorder(sims.record_config(base, poll_s=1.0), str(tmp_path))
            run = asyncio.create_task(rec.run())
            try:
                # join a recording in progress: once a thousand events went out
                await until(lambda: rec.publisher is not None
                            and sum(st.events for st in rec.stats.values()) > 1000,
                            "a thousand events published")
                thread = threading.Thread(target=listen, args=(rec.publisher.addr,))
                thread.start()
                assert await loop.run_in_executor(None, subscribed.wait, BOUND_S)
                await asyncio.sleep(2.0)  # two seconds of recording with it connected (a length)
            finally:
                rec.stop()
                result = await asyncio.wait_for(run, 60)
            # everything logged (but the derived writer's own bracketing rows) must come
            log = EventLog(tmp_path)
            for stream in ("live", "derived"):
                last_logged[stream] = max(seq for seq, ev in log.read(result.date, streams=[stream])
                                          if stream == "live" or kind_of(ev) in DERIVED_KINDS)
            ended.set()
            await loop.run_in_executor(None, thread.join, BOUND_S + 10)
            assert not thread.is_alive()
            return result

    result = asyncio.run(go())
    assert not failures, failures
    codec = EventCodec()
    log = EventLog(tmp_path)
    for stream in ("live", "derived"):
        mine = [m for m in got if m.stream == stream]
        assert mine, stream
        first = mine[0].seq
        # the derived writer's own bracketing rows are in its segment, not on the bus
        on_disk = [(seq, ev) for seq, ev in log.read(result.date, streams=[stream]) if seq >= first
                   and (stream == "live" or kind_of(ev) in DERIVED_KINDS)]
        assert [m.seq for m in mine] == [seq for seq, _ in on_disk], stream
        assert all(codec.encode(m.event) == codec.encode(ev) for m, (_, ev) in zip(mine, on_disk))
    assert got[0].seq > 0  # it really joined late
