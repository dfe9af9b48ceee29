"""The Polygon stream clients against the WebSocket simulator on loopback: what they record,
outages (drops, stalls, bad frames), a refused key, the official client, and a recorded day with
streams and faults that replays with --check and holds the key nowhere."""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from pathlib import Path

import msgspec
import pytest
from helpers import cli_run, free_port, last_json_line

from mia.config import Config
from mia.data.polygon.server import build_chain, nbbo
from mia.data.polygon.stream import check_stream_frames, listing_of
from mia.data.polygon.stream_client import PolygonStreamClient, StreamAuthError, stream_clients
from mia.data.polygon.stream_server import PolygonStreamSimulator
from mia.engine.clock import NS_PER_MS, NS_PER_S, SystemClock
from mia.engine.events import (
    FEED_DISCONNECTED,
    FEED_HEARTBEAT_TIMEOUT,
    FEED_SUBSCRIBED,
    FeedStatus,
    Gap,
    IndexValue,
    OptionQuote,
    OptionTrade,
    PolygonStreamFrame,
    SourceError,
)

SECRET = "pk_live_7Qz3vX9wLmN2rB8tYc4K"  # looks like a key; every artefact is searched for it
BOUND_S = 60.0  # a bound for a loaded machine, not an expectation of speed


async def until(check, what: str, timeout_s: float = BOUND_S):
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g}s waiting for {what}"
        await asyncio.sleep(0.02)


def of(events, cls, source: str | None = None):
    return [e for e in events if e.__class__ is cls and (source is None or e.source == source)]


class Streams:
    """Clients of one simulator, their events in one list (as the recorder's queue sees them)."""

    def __init__(self, sim: PolygonStreamSimulator, **kw) -> None:
        self.events: list = []
        self.clients = stream_clients(sim.url, api_key=SECRET, clock=SystemClock(),
                                      emitter=lambda source: self.events.append, **kw)
        for c in self.clients:
            c.reconnect_initial_s, c.reconnect_max_s = 0.05, 0.2
        self.tasks: list[asyncio.Task] = []

    @property
    def options(self) -> PolygonStreamClient:
        return self.clients[0]

    async def __aenter__(self) -> "Streams":
        self.tasks = [asyncio.create_task(c.run()) for c in self.clients]
        return self

    async def __aexit__(self, *exc) -> None:
        for c in self.clients:
            await c.stop()
        await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 10)


def give_listing(streams: Streams, sim: PolygonStreamSimulator) -> None:
    """What the poller's chains do in the recorder: the listing quotes are chosen from."""
    t_s = time.time_ns() // NS_PER_S
    for u in ("SPX", "NDX"):
        streams.options.selector.on_listing(u, listing_of(sim.chains.chain_at(u, t_s).tickers))


def test_the_clients_record_trades_quotes_and_index_values_each_after_its_frame():
    async def go():
        async with PolygonStreamSimulator(rate=400, api_key=SECRET) as sim, \
                Streams(sim, quote_limit=40) as s:
            give_listing(s, sim)
            await until(lambda: len(of(s.events, OptionQuote)) >= 20 and len(of(s.events, OptionTrade)) >= 40
                        and {v.ticker for v in of(s.events, IndexValue)} == {"I:SPX", "I:NDX", "I:VIX"},
                        "trades, quotes and all three index values")
            return s.events, s.options.quoted, sim

    events, quoted, sim = asyncio.run(go())
    trades, quotes = of(events, OptionTrade), of(events, OptionQuote)
    assert {t.underlying for t in trades} == {"SPX", "NDX"}
    assert all(t.ticker[2:6] in ("SPXW", "SPX2", "NDXP", "NDX2") for t in trades)
    assert all(t.price > 0 and t.size >= 1 and t.sequence >= 1 and t.ts_event % NS_PER_MS == 0 for t in trades)
    # quotes only for the chosen contracts, priced as the chain simulator prices them
    assert {q.ticker for q in quotes} <= quoted and len(quoted) == 40
    assert all(0 < q.bid < q.ask for q in quotes)
    # priced as the chain simulator prices its chain at that moment (its IV surface, Black-Scholes
    # and nbbo rule; `t` is the pricing instant truncated to the ms)
    for q in quotes[:6]:
        chain = build_chain(sim.chains.seed, q.underlying, q.ts_event)
        i = list(chain.tickers).index(q.ticker)
        bid, ask = nbbo(float(chain.price[i]))
        tol = 0.1 + 0.001 * ask  # a tick, and the path's move within the ms
        assert q.bid == pytest.approx(bid, abs=tol) and q.ask == pytest.approx(ask, abs=tol), (q, bid, ask)
    changes = [f for f in of(events, FeedStatus) if f.detail.startswith("quotes: 40 contracts")]
    assert changes and "added 40" in changes[0].detail
    for v in of(events, IndexValue):
        assert v.value == pytest.approx(sim.chains.index_value(v.ticker, v.ts_event), abs=0.6)
    # every event follows the frame it came from, with its ts_recv
    last_frame = None
    for ev in events:
        if isinstance(ev, PolygonStreamFrame):
            last_frame = ev
        elif isinstance(ev, (OptionTrade, OptionQuote, IndexValue)):
            assert last_frame is not None and ev.ts_recv == last_frame.ts_recv
            assert ev.ticker.encode() in last_frame.frame


def test_a_reconnect_storm_gives_one_gap_per_drop_and_no_trade_twice():
    drops = 3

    async def go():
        async with PolygonStreamSimulator(rate=400, api_key=SECRET) as sim, Streams(sim, index_tickers=()) as s:
            sim.faults.replay_on_subscribe = 40  # the server repeats trades after each resubscription
            for n in range(1, drops + 1):
                await until(lambda: len(of(s.events, OptionTrade)) >= 30 * n and sim.live_connections == 1,
                            f"trades before drop {n}")
                assert sim.drop() == 1
                await until(lambda: len(of(s.events, Gap)) == n, f"the gap of drop {n}")
            await until(lambda: len(of(s.events, OptionTrade)) >= 30 * (drops + 1), "trades after the last drop")
            return s.events, s.options

    events, client = asyncio.run(go())
    lost = [f for f in of(events, FeedStatus) if f.status == FEED_DISCONNECTED]
    gaps = of(events, Gap)
    assert len(lost) == drops and len(gaps) == drops
    for f, g in zip(lost, gaps):
        assert g.start_ns == f.ts_recv < g.end_ns and g.source == "polygon-ws:options"
    assert client.reconnects == drops
    keys = [(t.ticker, t.sequence) for t in of(events, OptionTrade)]
    assert len(keys) == len(set(keys)), "a trade recorded twice"
    assert client.parser.duplicates > 0  # the server did repeat trades: they were dropped
    by_ticker = collections.defaultdict(list)
    for ticker, q in keys:
        by_ticker[ticker].append(q)
    assert all(qs == sorted(qs) for qs in by_ticker.values())
    # every connection subscribed again
    assert sum(f.detail.startswith("connection ") and "subscribe T.*" in f.detail
               for f in of(events, FeedStatus) if f.status == FEED_SUBSCRIBED) == drops + 1


def test_a_stalled_link_is_a_heartbeat_timeout_then_a_gap():
    async def go():
        async with PolygonStreamSimulator(rate=200, api_key=SECRET) as sim:
            s = Streams(sim, index_tickers=())
            s.options.ping_interval_s, s.options.ping_timeout_s = 0.5, 1.5
            async with s:
                await until(lambda: of(s.events, OptionTrade), "the first trade")
                start = len(s.events)
                sim.stall(4.0)  # longer than a ping interval and its timeout together
                await until(lambda: any(f.status == FEED_HEARTBEAT_TIMEOUT for f in of(s.events[start:], FeedStatus)),
                            "a heartbeat timeout")
                await until(lambda: of(s.events[start:], Gap), "the stall's gap")
                return s.events[start:]

    events = asyncio.run(go())
    timeout = next(f for f in of(events, FeedStatus) if f.status == FEED_HEARTBEAT_TIMEOUT)
    assert "no pong within 1.5s" in timeout.detail
    gap = of(events, Gap)[0]
    assert gap.start_ns >= timeout.ts_recv and gap.end_ns > gap.start_ns


def test_displaced_by_another_connection_on_the_key_it_waits_the_longest_backoff_before_coming_back():
    async def go():
        async with PolygonStreamSimulator(rate=200, api_key=SECRET) as sim, Streams(sim, index_tickers=()) as s:
            await until(lambda: of(s.events, OptionTrade), "the first trade")
            s.options.reconnect_initial_s = 0.01  # a plain loss would come back within 10 ms
            assert await sim.displace() == 1
            await until(lambda: of(s.events, Gap), "the reconnect after the displacement")
            return s.events, s.options

    events, client = asyncio.run(go())
    assert any("max_connections" in e.error for e in of(events, SourceError))
    assert [f.status for f in of(events, FeedStatus) if f.status == FEED_DISCONNECTED] == [FEED_DISCONNECTED]
    assert client.last_delay_s == client.reconnect_max_s


def test_bad_frames_are_source_errors_recorded_beside_the_frame_and_the_stream_goes_on():
    async def go():
        async with PolygonStreamSimulator(rate=200, api_key=SECRET) as sim, Streams(sim, index_tickers=()) as s:
            await until(lambda: of(s.events, OptionTrade), "the first trade")
            sim.faults.malformed_count = 2
            await until(lambda: len(of(s.events, SourceError)) == 2, "two source errors")
            n = len(of(s.events, OptionTrade))
            await until(lambda: len(of(s.events, OptionTrade)) > n + 10, "trades after the bad frames")
            return s.events

    events = asyncio.run(go())
    errors = of(events, SourceError)
    assert "is not a JSON array" in errors[0].error and "does not decode" in errors[1].error
    for err in errors:  # the raw frame right before its error
        frame = events[events.index(err) - 1]
        assert isinstance(frame, PolygonStreamFrame) and frame.ts_recv == err.ts_recv
    assert not of(events, Gap)  # a bad frame is no outage


def test_a_refused_key_is_a_clear_error_and_a_recorded_source_error():
    async def go():
        async with PolygonStreamSimulator(api_key=SECRET) as sim:
            sim.faults.auth_fail = True
            events: list = []
            client = PolygonStreamClient(sim.url, "options", api_key=SECRET, emit=events.append, clock=SystemClock())
            with pytest.raises(StreamAuthError) as err:
                await asyncio.wait_for(client.run(), BOUND_S)
            return events, str(err.value)

    events, message = asyncio.run(go())
    assert "the key was refused" in message and "/options" in message and SECRET not in message
    assert [e.error for e in of(events, SourceError)] == ["authentication failed: authentication failed"]
    assert not any(SECRET.encode() in f.frame for f in of(events, PolygonStreamFrame))


def test_a_server_message_echoing_the_key_is_recorded_with_the_key_redacted():
    events: list = []
    client = PolygonStreamClient("ws://127.0.0.1:1", "options", api_key=SECRET, emit=events.append,
                                 clock=SystemClock())
    client._on_frame(msgspec.json.encode([{"ev": "status", "status": "auth_failed",
                                           "message": f"key {SECRET} is not valid"}]), 1)
    assert [type(e).__name__ for e in events] == ["PolygonStreamFrame", "SourceError"]
    assert SECRET not in repr(events) and b"key <redacted> is not valid" in events[0].frame


def test_the_official_polygon_client_connects_subscribes_and_receives():
    from polygon import WebSocketClient

    async def go():
        async with PolygonStreamSimulator(rate=400, api_key=SECRET) as sim:
            client = WebSocketClient(api_key=SECRET, feed=f"127.0.0.1:{sim.port}", market="options", secure=False,
                                     subscriptions=["T.*"], max_reconnects=0)
            got: list = []

            async def processor(msgs):
                got.extend(msgs)
                if len(got) >= 20:
                    await client.close()

            await asyncio.wait_for(client.connect(processor), BOUND_S)
            return got

    got = asyncio.run(go())
    assert len(got) >= 20
    assert all(m.event_type == "T" and m.symbol.startswith(("O:SPX", "O:NDX")) and m.price > 0 for m in got)


# --- a recorded day ---------------------------------------------------------------------------------


def test_a_recorded_day_with_streams_and_faults_replays_with_check_and_holds_the_key_nowhere(tmp_path, capfd):
    from mia.engine.bus import Subscriber
    from mia.engine.log import EventLog
    from mia.recorder.live import Recorder
    from mia.recorder.sim import Simulators

    data_dir = tmp_path / "data"
    log_file = tmp_path / "debug.log"
    handler = logging.FileHandler(log_file)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)  # everything anyone logs, websockets' frames included
    addr = f"tcp://127.0.0.1:{free_port()}"
    bus_payloads: list[bytes] = []
    stop_bus = threading.Event()

    def collect():
        sub = Subscriber(addr)
        try:
            while not stop_bus.is_set():
                raw = sub.recv_raw(0.05)
                if raw is not None:
                    bus_payloads.append(raw.topic + raw.payload)
        finally:
            sub.close()

    bus_thread = threading.Thread(target=collect, daemon=True)
    bus_thread.start()

    async def go():
        async with Simulators(seed=4, rate=500.0, api_key=SECRET, polygon_ws_rate=300.0) as sims:
            base = Config()
            base = msgspec.structs.replace(base, bus=msgspec.structs.replace(base.bus, address=addr))
            cfg = sims.record_config(base, poll_s=1.0)
            rec = Recorder(cfg, str(data_dir))
            run = asyncio.create_task(rec.run())
            stats = rec.stats

            def count(source: str, attr: str) -> int:
                st = stats.get(source)
                return 0 if st is None else getattr(st, attr)

            try:
                await until(lambda: count("polygon-ws:options", "events") > 300, "the options stream")
                sims.polygon_ws.drop()
                await until(lambda: count("polygon-ws:options", "gaps") == 1
                            and count("polygon-ws:indices", "gaps") == 1, "the drop's gaps")
                sims.polygon_ws.faults.malformed_count = 1
                await until(lambda: count("polygon-ws:options", "errors") >= 1, "the bad frame's error")
                await until(lambda: bus_payloads, "the bus")
                await asyncio.sleep(1.5)  # quotes flowing after the reconnect
            finally:
                rec.stop()
                result = await asyncio.wait_for(run, BOUND_S)
            return result

    try:
        result = asyncio.run(go())
    finally:
        stop_bus.set()
        bus_thread.join(10)
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()

    # the streams are in the day, with their outage
    log = EventLog(data_dir)
    counts = collections.Counter(type(ev).__name__ for _, ev in log.read(result.date))
    assert counts["OptionTrade"] > 100 and counts["OptionQuote"] > 20 and counts["IndexValue"] > 2, counts
    assert counts["PolygonStreamFrame"] > 10 and counts["Gap"] >= 2, counts

    # every frame re-parses into exactly the events recorded after it
    frames = check_stream_frames(ev for _, ev in log.read(result.date, streams=["live"]))
    assert frames.ok and frames.frames == counts["PolygonStreamFrame"] and frames.events > 100, frames

    res = cli_run("replay", "--data-dir", data_dir, "--date", result.date, "--check", "--json", "-q")
    assert res.exit_code == 0, res.output
    assert last_json_line(res.stdout)["check"] == "ok"
    res = cli_run("replay", "--data-dir", data_dir, "--date", result.date, "--check", "--deep")
    assert res.exit_code == 0, res.output
    assert f"{frames.frames:,} Polygon stream frames re-parsed into their {frames.events:,} events" in res.output

    secret = SECRET.encode()
    for path in Path(data_dir).rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), path
    for _, ev in log.read(result.date):
        assert SECRET not in repr(ev)
    text = log_file.read_text()
    assert "polygon stream up" in text and SECRET not in text  # the debug log was written, without it
    assert bus_payloads and not any(secret in p for p in bus_payloads)
    out, err = capfd.readouterr()
    assert SECRET not in out and SECRET not in err


# --- the command line -------------------------------------------------------------------------------


class ThreadedStreamSimulator:
    """The stream simulator on its own event loop in a thread (the CLI runs its own loop)."""

    def __init__(self, **kw) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.sim = PolygonStreamSimulator(**kw)

    def __enter__(self) -> PolygonStreamSimulator:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.sim.start(), self.loop).result(BOUND_S)
        return self.sim

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.stop(), self.loop).result(BOUND_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(BOUND_S)
        self.loop.close()


def test_mia_record_streams_from_the_polygon_ws_url_it_is_given(tmp_path):
    from mia.engine.log import EventLog

    with ThreadedStreamSimulator(rate=200, api_key=SECRET) as sim:
        res = cli_run("record", "--data-dir", tmp_path, "--no-dtc", "--no-polygon", "--no-publish", "-q",
                      "--polygon-ws-url", sim.url, "--duration", "3s", env={"POLYGON_API_KEY": SECRET})
    assert res.exit_code == 0, res.output
    assert SECRET not in res.output
    log = EventLog(tmp_path)
    counts = collections.Counter(type(ev).__name__ for d in log.dates() for _, ev in log.read(d))
    assert counts["OptionTrade"] > 20 and counts["IndexValue"] >= 2 and counts["PolygonStreamFrame"] > 5, counts
    assert counts["PolygonResponse"] == 0  # --no-polygon: no chains, the streams only


def test_polygon_stream_true_in_the_config_file_starts_the_streams(tmp_path):
    from mia.engine.log import EventLog

    with ThreadedStreamSimulator(rate=200, api_key=SECRET) as sim:
        toml = tmp_path / "mia.toml"
        toml.write_text(f'[polygon]\nenabled = false\nstream = true\nstream_url = "{sim.url}"\n'
                        'stream_index_tickers = ["I:VIX"]\n')
        res = cli_run("record", "--data-dir", tmp_path / "data", "--config", toml, "--no-dtc", "--no-publish", "-q",
                      "--duration", "3s", env={"POLYGON_API_KEY": SECRET})
    assert res.exit_code == 0, res.output
    log = EventLog(tmp_path / "data")
    events = [ev for d in log.dates() for _, ev in log.read(d)]
    assert {ev.ticker for ev in events if isinstance(ev, IndexValue)} == {"I:VIX"}
    assert any(isinstance(ev, OptionTrade) for ev in events)


def test_mia_record_with_a_refused_key_stops_with_one_line_naming_the_stream_not_the_key(tmp_path):
    from helpers import assert_one_line_error

    with ThreadedStreamSimulator(rate=100, api_key=SECRET) as sim:
        wrong = SECRET[::-1]
        res = cli_run("record", "--data-dir", tmp_path, "--no-dtc", "--no-polygon", "--no-publish", "-q",
                      "--polygon-ws-url", sim.url, "--duration", "30s", env={"POLYGON_API_KEY": wrong})
    line = assert_one_line_error(res, 1)
    assert "stream ws://127.0.0.1:" in line and "the key was refused" in line
    assert wrong not in res.output and SECRET not in res.output


def test_a_polygon_ws_url_that_is_not_a_websocket_url_is_a_one_line_error(tmp_path):
    from helpers import assert_one_line_error

    res = cli_run("record", "--data-dir", tmp_path, "--no-dtc", "--polygon-ws-url", "http://127.0.0.1:8766",
                  "--duration", "1s")
    assert "is not ws://HOST:PORT" in assert_one_line_error(res, 2)


def test_mia_sim_serves_the_stream_clusters_on_its_polygon_ws_port(tmp_path):
    import subprocess

    from helpers import mia_cmd
    from websockets.asyncio.client import connect

    from mia.data.polygon.server import SIM_API_KEY

    port = free_port()
    args = mia_cmd("sim", "--dtc-port", str(free_port()), "--dtc-historical-port", str(free_port()),
                   "--polygon-port", str(free_port()), "--polygon-ws-port", str(port), "--duration", "60s")
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        seen = []
        while not any(f"its streams on ws://127.0.0.1:{port}" in ln for ln in seen):
            line = proc.stderr.readline()  # log lines first; EOF if it died
            assert line, "".join(seen)
            seen.append(line)

        async def go():
            async with connect(f"ws://127.0.0.1:{port}/indices", proxy=None) as ws:
                assert "connected" in await ws.recv()
                await ws.send(msgspec.json.encode({"action": "auth", "params": SIM_API_KEY}).decode())
                assert "auth_success" in await ws.recv()
                await ws.send('{"action":"subscribe","params":"V.I:SPX"}')
                assert "subscribed to: V.I:SPX" in await ws.recv()
                return msgspec.json.decode(await asyncio.wait_for(ws.recv(), BOUND_S))

        values = asyncio.run(go())
        assert values[0]["ev"] == "V" and values[0]["T"] == "I:SPX" and values[0]["val"] > 0
    finally:
        proc.terminate()
        proc.wait(BOUND_S)
        proc.stderr.close()
