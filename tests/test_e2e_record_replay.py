"""End to end: the simulators -> `Recorder` -> the log -> `mia replay --check`.

Each test records a few seconds from the embedded simulators (real DTC and HTTP servers on
loopback), then proves that replaying the log reproduces every derived event bit for bit, faults
and fallbacks included.
"""

import asyncio
import json

import msgspec
import pytest
from click.testing import CliRunner

from mia.cli import cli
from mia.config import Config
from mia.engine.events import DERIVED_KINDS, FeedStatus, Gap, GammaLevels, SourceError, Trade, kind_of
from mia.engine.log import EventLog
from mia.recorder.live import Recorder
from mia.recorder.sim import Simulators
from mia.replay import open_day, replay_day

SUMMARY_FIELDS = {"trades", "volume", "buy_volume", "sell_volume", "cum_delta", "vwap", "poc",
                  "va_low", "va_high", "high", "low", "last"}
GAMMA_FIELDS = {"ts", "spot", "zero_gamma", "call_wall", "put_wall", "max_pain", "total_gex",
                "pcr_oi", "pcr_volume", "dealer_bias", "stale"}


def base_config() -> Config:
    cfg = Config()
    return msgspec.structs.replace(cfg, bus=msgspec.structs.replace(cfg.bus, enabled=False))


def record(data_dir, seconds, *, during=None, clock=None, rate=2000.0, poll_s=1.0, base=None):
    """Record `seconds` from fresh simulators; `during(sims)` runs alongside (faults).

    Returns (RecordResult, Simulators) — the simulators are stopped but keep what they sent.
    """

    async def go():
        async with Simulators(seed=3, rate=rate, clock=clock) as sims:
            cfg = sims.record_config(base or base_config(), poll_s=poll_s)
            rec = Recorder(cfg, str(data_dir), clock=clock)
            side = asyncio.create_task(during(sims)) if during else None
            try:
                result = await asyncio.wait_for(rec.run(seconds), seconds + 30)
            finally:
                if side is not None:
                    side.cancel()
                    await asyncio.gather(side, return_exceptions=True)
            return result, sims

    return asyncio.run(go())


def replay_json(data_dir, date, *extra):
    res = CliRunner().invoke(cli, ["replay", "--data-dir", str(data_dir), "--date", date,
                                   "--check", "--json", "-q", *extra])
    lines = res.stdout.strip().splitlines()
    return res, json.loads(lines[-1]) if lines else None


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
    result, sims = record(tmp_path, 4.0)
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
        assert s["trades"] > 0 and s["volume"] == s["buy_volume"] + s["sell_volume"] or \
            s["volume"] >= s["buy_volume"] + s["sell_volume"]
        assert s["low"] <= s["vwap"] <= s["high"]
    # the log holds what the simulator sent on the recorder's connection; the summary counts it
    recorded = trades_by_symbol(tmp_path, [result.date])
    assert_prefix_of_sent(recorded, sims.dtc.records[0].trades)
    for sym in ("ESZ6", "NQZ6", "VXZ6"):
        assert out["instruments"][sym]["trades"] == len(recorded[sym])
    for u in ("SPX", "NDX"):
        g = out["gamma"][u]
        assert set(g) == GAMMA_FIELDS
        assert g["spot"] > 0 and g["stale"] is False


def test_faults_are_recorded_and_replay_reproduces_the_fallbacks(tmp_path):
    async def faults(sims):
        await asyncio.sleep(1.5)
        sims.polygon.faults.error_status = 400  # not retried: the poll fails, a fallback is taken
        sims.polygon.faults.error_count = 2
        sims.dtc.drop_links()
        await asyncio.sleep(1.5)
        sims.polygon.faults.malformed_count = 2
        await asyncio.sleep(1.0)
        sims.polygon.faults.error_status = 503  # a 5xx burst the client retries through
        sims.polygon.faults.error_count = 1
        await asyncio.sleep(1.5)
        sims.dtc.drop_links()

    result, sims = record(tmp_path, 8.0, during=faults)
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
                                                           "TermStructure", "IvSurface"]))
    assert rep.check == "ok" and rep.derived == len(recorded) > 0
    assert sum(isinstance(e, GammaLevels) and e.stale for e in recorded) == sum(g.stale for g in gamma)


class OffsetClock:
    """The wall clock shifted so that it starts at a chosen instant (here: just before midnight)."""

    def __init__(self, start_ns: int) -> None:
        import time

        self._offset = start_ns - time.time_ns()

    def now_ns(self) -> int:
        import time

        return time.time_ns() + self._offset


def test_utc_midnight_rollover_loses_nothing_and_both_days_check(tmp_path):
    import datetime as dt

    midnight = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    midnight += dt.timedelta(days=1)
    clock = OffsetClock(int(midnight.timestamp()) * 1_000_000_000 - 2_000_000_000)
    result, sims = record(tmp_path, 5.0, clock=clock)
    log = EventLog(tmp_path)
    day1 = (midnight - dt.timedelta(days=1)).date().isoformat()
    day2 = midnight.date().isoformat()
    assert log.dates() == [day1, day2]
    # every trade the simulator sent is in the log exactly once, in order, across the two days
    assert_prefix_of_sent(trades_by_symbol(tmp_path, [day1, day2]), sims.dtc.records[0].trades)
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
        asyncio.run_coroutine_threadsafe(self.sims.start(), self.loop).result(10)

    def call(self, fn):
        async def run():
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.sims.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def record_cmd(data_dir, sims, *extra):
    import sys

    return [sys.executable, "-m", "mia.cli", "record", "--data-dir", str(data_dir), "-q",
            "--dtc", f"127.0.0.1:{sims.dtc.port}", "--symbols", "ESZ6,NQZ6",
            "--polygon-url", sims.polygon.url, "--poll", "1", "--no-publish", *extra]


def test_sigkill_loses_at_most_the_open_frame_and_the_day_still_replays(tmp_path):
    import os
    import signal
    import subprocess
    import time

    from mia.recorder.sim import SIM_API_KEY

    env = dict(os.environ, POLYGON_API_KEY=SIM_API_KEY)
    ts = ThreadedSimulators(rate=2000.0)
    try:
        proc = subprocess.Popen(record_cmd(tmp_path, ts.sims), env=env, cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # recording for real: frames reach the disk
            segs = list(tmp_path.glob("*/*-live.mseg"))
            if segs and segs[0].stat().st_size > 20_000:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        time.sleep(1.5)
        t_kill = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stderr.close()
        first = ts.call(lambda: ts.sims.dtc.records[0])
        date = EventLog(tmp_path).dates()[0]
        recorded = trades_by_symbol(tmp_path, [date])
        rows_sent = {s: len(r) for s, r in first.trades.items()}
        # at most the open frame (100 ms) and what was in flight: bound it by half a second
        # of the simulator's own trade rate on that connection
        elapsed = t_kill - deadline + 30
        bound = max(25, int(max(rows_sent.values()) / elapsed * 0.5))
        assert_prefix_of_sent(recorded, first.trades, in_flight=bound)
        # the next run starts a new segment beside the crashed one and warms up from it
        done = subprocess.run(record_cmd(tmp_path, ts.sims, "--duration", "2s"), env=env,
                              cwd=tmp_path, capture_output=True, timeout=60)
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
    assert crash["state"] in ("crashed", "torn") and crash["next_start"] > crash["verified_until"]
    assert rep.events == sum(s.events for s in log.inspect(date) if s.info.stream == "live")
    res, out = replay_json(tmp_path, date)
    assert res.exit_code == 0 and out["check"] == "ok"
    assert out["crashed_runs"][0]["recording_id"] == crash["recording_id"]


def test_a_bus_subscriber_joining_mid_recording_gets_every_event_in_order(tmp_path):
    import threading
    import time

    from mia.engine.bus import Subscriber
    from mia.engine.events import EventCodec, RecordingEnded

    cfg = Config()
    base = msgspec.structs.replace(cfg, bus=msgspec.structs.replace(
        cfg.bus, enabled=True, address="tcp://127.0.0.1:0"))
    got: list = []
    failures: list = []

    def listen(addr):
        try:
            with Subscriber(addr) as sub:
                deadline = time.monotonic() + 30
                ended = False
                while time.monotonic() < deadline:
                    msg = sub.recv(timeout_s=0.5)
                    if msg is None:
                        if ended:  # the derived events of the end marker came and went
                            return
                        continue
                    got.append(msg)
                    ended = ended or (msg.stream == "live" and isinstance(msg.event, RecordingEnded))
        except Exception as exc:  # surfaced by the test below
            failures.append(exc)

    async def go():
        async with Simulators(seed=9, rate=2000.0) as sims:
            rec = Recorder(sims.record_config(base, poll_s=1.0), str(tmp_path))
            run = asyncio.create_task(rec.run(4.0))
            for _ in range(200):
                if rec.publisher is not None:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(1.0)  # join a recording in progress
            thread = threading.Thread(target=listen, args=(rec.publisher.addr,))
            thread.start()
            result = await run
            await asyncio.get_running_loop().run_in_executor(None, thread.join, 15)
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
        logged = [(seq, ev) for seq, ev in log.read(result.date, streams=[stream]) if seq >= first
                  and (stream == "live" or kind_of(ev) in DERIVED_KINDS)]
        assert [m.seq for m in mine] == [seq for seq, _ in logged], stream
        assert all(codec.encode(m.event) == codec.encode(ev) for m, (_, ev) in zip(mine, logged))
    assert got[0].seq > 0  # it really joined late
