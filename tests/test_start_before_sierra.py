"""A recorder started before Sierra Chart waits for its DTC server, and records everything the
server sends once it is up; `--exit-if-unreachable` keeps the old one-line failure for scripts."""

import asyncio
import json
import socket

import msgspec
from click.testing import CliRunner

from mia.cli import cli
from mia.config import Config
from mia.data.dtc.config import DtcConfig
from mia.data.dtc.server import DtcSimulator
from mia.engine.events import FEED_DISCONNECTED, FEED_LOGGED_ON, FeedStatus, Trade
from mia.recorder.live import Recorder
from mia.replay import open_day

SYMBOLS = ["ESZ6", "NQZ6", "VXZ6"]
HEAD_START_S = 10.0  # the recorder runs this long before the DTC server exists


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def until(cond, deadline_s: float, what: str) -> None:
    """Poll `cond()` every 50 ms; fail after `deadline_s` naming `what`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while not cond():
        assert loop.time() < end, f"timed out after {deadline_s}s waiting for {what}"
        await asyncio.sleep(0.05)


def config(port: int) -> Config:
    cfg = Config()
    return msgspec.structs.replace(
        cfg, bus=msgspec.structs.replace(cfg.bus, enabled=False),
        polygon=msgspec.structs.replace(cfg.polygon, enabled=False),
        dtc=[DtcConfig(host="127.0.0.1", port=port, symbols=SYMBOLS, heartbeat_s=2.0)])


def test_a_recorder_started_before_the_dtc_server_records_all_it_sends(tmp_path):
    port = free_port()
    lines: list[str] = []

    async def go():
        # Arrange: a recorder with nothing listening on its DTC port
        rec = Recorder(config(port), str(tmp_path), status=lines.append)
        loop = asyncio.get_running_loop()
        started = loop.time()
        run = asyncio.create_task(rec.run())
        await until(lambda: any(f"waiting for DTC 127.0.0.1:{port}" in ln for ln in lines) or run.done(),
                    10, "the waiting status line")
        # Act: the server comes up HEAD_START_S later; the recorder must still be running
        await until(lambda: run.done() or loop.time() - started >= HEAD_START_S, HEAD_START_S + 5,
                    "the head start")
        assert not run.done(), run.exception() if run.done() else None
        sim = DtcSimulator("127.0.0.1", port, seed=5, rate=2000.0)
        await sim.start()
        try:
            # the client's backoff is capped and jittered (at most ~8 s per wait at this point)
            await until(lambda: sim.records and sum(map(len, sim.records[0].trades.values())) > 300,
                        30, "trades from the simulator")
            assert not run.done()
            rec.stop()
            result = await asyncio.wait_for(run, 30)
        finally:
            await sim.stop()
        return result, sim

    result, sim = asyncio.run(go())

    # Assert: the wait was shown and recorded, then the logon
    assert any(f"waiting for DTC 127.0.0.1:{port} \u2026" in ln for ln in lines), lines[:5]
    day = open_day(str(tmp_path), result.date)
    feed = [ev for ev in day.events(kinds=[FeedStatus])]
    waiting = [ev for ev in feed if ev.status == FEED_DISCONNECTED and "waiting for the DTC server" in ev.detail]
    assert len(waiting) == 1 and "connect failed" in waiting[0].detail, feed
    logons = [ev for ev in feed if ev.status == FEED_LOGGED_ON]
    assert len(logons) == 1 and logons[0].ts_recv - waiting[0].ts_recv >= int(HEAD_START_S * 1e9) - 2e9
    # everything the simulator sent on the connection was recorded, in order (bar what was in
    # flight when the recorder hung up)
    assert len(sim.records) == 1
    symbols = day.symbols()
    got: dict[str, list] = {}
    for ev in day.events(kinds=[Trade]):
        got.setdefault(symbols[ev.instrument], []).append((ev.price, ev.size, ev.side))
    sent = sim.records[0].trades
    assert set(got) == set(sent) == set(SYMBOLS)
    for sym, rows in sent.items():
        want = [(p, s, {1: -1, 2: 1}.get(side, 0)) for p, s, side in rows]  # at bid: seller
        assert got[sym] == want[:len(got[sym])], sym
        assert len(want) - len(got[sym]) <= 40, (sym, len(want), len(got[sym]))
    # and the day replays to the same derived events, the wait included
    res = CliRunner().invoke(cli, ["replay", "--data-dir", str(tmp_path), "--date", result.date,
                                   "--check", "--json", "-q"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["check"] == "ok"


def test_exit_if_unreachable_keeps_the_one_line_failure(tmp_path):
    port = free_port()
    res = CliRunner().invoke(cli, ["record", "--data-dir", str(tmp_path), "--dtc", f"127.0.0.1:{port}",
                                   "--symbols", "ESZ6", "--no-polygon", "--no-publish",
                                   "--exit-if-unreachable", "0.5", "-q"])
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1, res.output
    assert f"127.0.0.1:{port}" in lines[0] and "0.5s" in lines[0]
