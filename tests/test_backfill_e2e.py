"""Backfill after a simulated disconnect, end to end on loopback.

The simulators run; the recorder records a few seconds while the DTC link is dropped twice;
`mia backfill` asks the simulator's historical port for the gaps. Then the day's trades (live
plus backfill) are exactly what the simulator generated while the recorder was there, with no
duplicate and none missing; `mia replay --check` is still ok; a second backfill adds nothing.
"""

import asyncio
import json
from collections import Counter

import msgspec
from click.testing import CliRunner

from mia.cli import cli
from mia.config import Config
from mia.data.dtc.backfill import STREAM, filled_windows
from mia.data.dtc.convert import ns_from_seconds_f64
from mia.engine.clock import NS_PER_S
from mia.engine.events import Gap, Instrument, RecordingStarted, Trade
from mia.engine.log import EventLog
from mia.recorder.live import Recorder
from mia.recorder.sim import Simulators

SIDE = {1: -1, 2: 1}  # DTC AtBidOrAsk -> mia side (at bid: the seller aggressed)


def base_config() -> Config:
    cfg = Config()
    return msgspec.structs.replace(cfg, bus=msgspec.structs.replace(cfg.bus, enabled=False))


async def wait_for(cond, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def cli_json(args: list[str]):
    res = CliRunner().invoke(cli, args)
    lines = res.stdout.strip().splitlines()
    return res, (json.loads(lines[-1]) if res.exit_code == 0 and lines else None)


def day_trades(root, date) -> dict[str, list[tuple]]:
    """Per symbol, the day's trades of every stream as (ts_event, price, size, side)."""
    log = EventLog(root)
    symbols = {}
    out: dict[str, list[tuple]] = {}
    for _, ev in log.read(date, kinds=[Instrument, Trade]):
        if isinstance(ev, Instrument):
            symbols[ev.instrument] = ev.symbol
        else:
            out.setdefault(symbols[ev.instrument], []).append(
                (ev.ts_event, ev.price, ev.size, ev.side))
    return out


def test_backfill_fills_the_disconnects_exactly_and_twice_adds_nothing(tmp_path):
    root = str(tmp_path)

    async def scenario():
        async with Simulators(seed=11, rate=2000.0) as sims:
            cfg = sims.record_config(base_config(), poll_s=1.0)
            rec = Recorder(cfg, root)

            async def faults():
                dtc = sims.dtc
                await wait_for(lambda: sum(map(len, dtc.history.values())) > 200, 10, "trades")
                for n in (1, 2):
                    dtc.drop_links()
                    # hold the link down a little: the simulator keeps trading meanwhile
                    await asyncio.sleep(0.4)
                    await wait_for(lambda n=n: len(dtc.records) > n and dtc._connections, 10,
                                   f"reconnect {n}")
                    await asyncio.sleep(0.5)

            side = asyncio.create_task(faults())
            try:
                result = await asyncio.wait_for(rec.run(4.5), 40)
            finally:
                side.cancel()
                await asyncio.gather(side, return_exceptions=True)
            loop = asyncio.get_running_loop()
            args = ["backfill", "--data-dir", root, "--date", result.date,
                    "--dtc-historical", sims.dtc_historical, "--json"]
            # the command runs its own event loop: in a thread, while the simulators serve here
            first = await loop.run_in_executor(None, cli_json, args)
            second = await loop.run_in_executor(None, cli_json, args)
            history = {s: list(h) for s, h in sims.dtc.history.items()}
            return result, first, second, history, sims.dtc.historical_requests

    result, (res1, out1), (res2, out2), history, requests = asyncio.run(scenario())
    date = result.date
    log = EventLog(root)

    # the recorder saw the drops
    gaps = [g for _, g in log.read(date, kinds=[Gap]) if g.source.startswith("dtc:")]
    assert gaps, "the recorder saw no DTC gap"
    assert res1.exit_code == 0, res1.output
    assert out1["date"] == date and out1["gaps"] == len(gaps)
    assert out1["added"] > 0 and out1["segment"]
    assert {"ESZ6", "NQZ6"} <= {w["symbol"] for w in out1["windows"]}
    assert all(r["zlib"] == 1 and r["interval"] == 0 for r in requests)

    # the backfill segment: its own stream, ts_recv = ts_event, the live instrument ids
    segs = [s for s in log.segments(date) if s.stream == STREAM]
    assert len(segs) == 1
    live_ids = {ev.symbol: ev.instrument for _, ev in log.read(date, kinds=[Instrument], streams="live")}
    rows = [ev for _, ev in log.read(date, streams=STREAM)]
    assert isinstance(rows[0], RecordingStarted) and rows[0].stream == STREAM
    assert any(src.startswith("dtc-historical:") for src in rows[0].sources)
    decl = {ev.symbol: ev.instrument for ev in rows if isinstance(ev, Instrument)}
    assert decl and all(live_ids[s] == i for s, i in decl.items())
    filled = [ev for ev in rows if isinstance(ev, Trade)]
    assert len(filled) == out1["added"] and all(t.ts_recv == t.ts_event for t in filled)
    windows = filled_windows(log, date)
    assert sum(w.trades for w in windows) == out1["added"]

    # live + backfill == what the simulator generated while the recorder was there
    live = day_trades(root, date)
    live_only = {}
    for _, ev in log.read(date, kinds=[Trade], streams="live"):
        live_only.setdefault(ev.instrument, []).append(ev.ts_event)
    assert set(live) <= set(history)
    for sym, rows_ in live.items():
        if live_ids[sym] not in live_only:
            continue  # no live trade to bound the recording by
        lo = min(live_only[live_ids[sym]])
        hi = max(live_only[live_ids[sym]])
        want = Counter((ns_from_seconds_f64(t / NS_PER_S), price, size, SIDE.get(side, 0))
                       for t, price, size, side in history[sym]
                       if lo <= ns_from_seconds_f64(t / NS_PER_S) <= hi)
        have = Counter(r for r in rows_ if lo <= r[0] <= hi)
        assert have == want, (sym, sum((have - want).values()), sum((want - have).values()))
    # the trades the gaps hid were really missing live: backfill added some
    for sym in ("ESZ6", "NQZ6"):
        assert len(live[sym]) > len(live_only[live_ids[sym]]), sym

    # replay folds the backfill; --check compares against the live stream alone: still ok
    res, out = cli_json(["replay", "--data-dir", root, "--date", date, "--check", "--json", "-q"])
    assert res.exit_code == 0, res.output
    assert out["check"] == "ok"
    res, out_live = cli_json(["replay", "--data-dir", root, "--date", date, "--live-only",
                              "--json", "-q"])
    assert res.exit_code == 0, res.output
    assert out["instruments"]["ESZ6"]["trades"] > out_live["instruments"]["ESZ6"]["trades"]

    # twice adds nothing
    assert res2.exit_code == 0, res2.output
    assert out2["added"] == 0 and out2["segment"] is None
    assert len([s for s in log.segments(date) if s.stream == STREAM]) == 1

    # mia inspect shows what was filled
    res, ins = cli_json(["inspect", "--data-dir", root, "--date", date, "--json"])
    assert res.exit_code == 0, res.output
    day = ins["days"][0]
    assert sum(w["trades"] for w in day["backfilled"]) == out1["added"]
    res = CliRunner().invoke(cli, ["inspect", "--data-dir", root, "--date", date])
    assert res.exit_code == 0 and "backfilled" in res.output
