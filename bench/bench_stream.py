"""Polygon stream benchmark: messages/s through the recorder, and live latency at 5,000 msgs/s.

The server always runs in its own process (it must not share the receiver's event loop):

(a) throughput: a ``websockets`` server speaking the options cluster's handshake (connected,
    auth_success, the subscribe acknowledgement) then sends a fixed set of frames as fast as it
    can: option trades and quotes of the stream simulator's model, 50 to a frame. Ours: the
    recorder (``mia record --polygon-ws-url``: receive, record the frame, parse, append to the
    log, publish on the bus, fold the reducers), timed from the first data frame's receipt to the
    return of the ``Pipeline.ingest`` that took the last message. Peer, same server, same run: a
    bare ``websockets`` receive loop (``recv`` until every frame is in, no parsing, nothing kept).
(b) latency: the stream simulator paced at 5,000 option messages/s (a frame every 10 ms, its
    messages' ``t`` set to the send time in ms, truncated: up to 1 ms is added, never taken away);
    per message, the time from that send to the return of ``Pipeline.ingest`` (appended,
    published and reduced), after a warm-up of WARMUP_S seconds (the first connection, the
    reducers' first calls). Target p99 < 20 ms (the data plan's options figure).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

TARGET_P99_MS = 20.0
LATENCY_RATE = 5000.0
WARMUP_S = 2.0  # the first seconds after the first message are left out of the latency figures
PER_FRAME = 50

_BLAST_CHILD = textwrap.dedent("""
    import asyncio, sys, msgspec
    from websockets.asyncio.server import serve
    from mia.data.polygon.stream_server import PolygonStreamSimulator, _Conn

    async def main():
        n_frames, per_frame = int(sys.argv[1]), int(sys.argv[2])
        sim = PolygonStreamSimulator(seed=3)
        spx = await sim._model("SPX")
        conn = _Conn(None, "options")
        conn.trades_all = True
        conn.quotes = list(spx.chain.tickers[:500])
        # every frame its own trades: a (sym, q) sent twice is a repeat the client drops
        frames = [msgspec.json.encode(await sim._options(conn, per_frame)).decode() for _ in range(n_frames)]
        enc = msgspec.json.encode

        async def handler(ws):
            await ws.send(enc([{"ev": "status", "status": "connected", "message": "Connected Successfully"}]).decode())
            await ws.recv()
            await ws.send(enc([{"ev": "status", "status": "auth_success", "message": "authenticated"}]).decode())
            await ws.recv()
            await ws.send(enc([{"ev": "status", "status": "success", "message": "subscribed to: T.*"}]).decode())
            for f in frames:
                await ws.send(f)
            await ws.wait_closed()

        async with serve(handler, "127.0.0.1", 0, compression=None, max_size=None) as server:
            print(server.sockets[0].getsockname()[1], flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until closed

    asyncio.run(main())
""")

_PACED_CHILD = textwrap.dedent("""
    import asyncio, sys
    from mia.data.polygon.stream_server import PolygonStreamSimulator
    from mia.data.polygon.server import SIM_API_KEY

    async def main():
        sim = PolygonStreamSimulator(seed=3, rate=float(sys.argv[1]), tick_s=0.01, quote_share=0.5,
                                     stamp_at_send=True)
        await sim.start()
        for u in ("SPX", "NDX"):
            await sim._model(u)  # the chains built before the clock starts
        print(sim.port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        print(sim.trades_sent + sim.quotes_sent, flush=True)
        await sim.stop()

    asyncio.run(main())
""")


def _child(script: str, *args) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())


def _end(proc: subprocess.Popen) -> str:
    try:
        proc.stdin.close()
        out = proc.stdout.read()
        proc.wait(30)
        return out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def bare_loop(port: int, n_frames: int) -> dict:
    from websockets.asyncio.client import connect

    async def go():
        async with connect(f"ws://127.0.0.1:{port}/options", compression=None, max_size=None, proxy=None) as ws:
            await ws.recv()
            await ws.send('{"action":"auth","params":"bench-key-000"}')
            await ws.recv()
            await ws.send('{"action":"subscribe","params":"T.*"}')
            await ws.recv()
            first = await ws.recv()
            t0 = time.perf_counter()
            n = 1
            nbytes = len(first)
            while n < n_frames:
                nbytes += len(await ws.recv())
                n += 1
            return time.perf_counter() - t0, nbytes

    seconds, nbytes = asyncio.run(go())
    return {"seconds": seconds, "frames": n_frames, "bytes": nbytes}


def client_only(port: int, n_msgs: int) -> dict:
    """mia's stream client alone: frames recorded as events and parsed, into a list (no log, bus
    or reducers)."""
    from mia.data.polygon.server import SIM_API_KEY
    from mia.data.polygon.stream_client import PolygonStreamClient
    from mia.engine.clock import SystemClock
    from mia.engine.events import OptionQuote, OptionTrade

    state = {"n": 0, "t0": 0.0, "t1": 0.0}

    async def go():
        events: list = []
        data = (OptionTrade, OptionQuote)

        def emit(ev):
            events.append(ev)
            if ev.__class__ in data:
                if not state["t0"]:
                    state["t0"] = time.perf_counter()
                state["n"] += 1
                if state["n"] == n_msgs:
                    state["t1"] = time.perf_counter()
                    stop.set()

        stop = asyncio.Event()
        client = PolygonStreamClient(f"ws://127.0.0.1:{port}", "options", api_key=SIM_API_KEY, emit=emit,
                                     clock=SystemClock())
        task = asyncio.create_task(client.run())
        await asyncio.wait_for(stop.wait(), 300)
        await client.stop()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())
    return {"seconds": state["t1"] - state["t0"], "messages": state["n"]}


def official_client(port: int, n_msgs: int) -> dict:
    """Polygon's own Python client (`polygon.WebSocketClient`): JSON parsed into its message
    objects, handed to a processor that only counts them."""
    from polygon import WebSocketClient

    state = {"n": 0, "t0": 0.0, "t1": 0.0}

    async def go():
        client = WebSocketClient(api_key="bench-key-000", feed=f"127.0.0.1:{port}", market="options", secure=False,
                                 subscriptions=["T.*"], max_reconnects=0)

        async def processor(msgs):
            if not state["t0"]:
                state["t0"] = time.perf_counter()
            state["n"] += len(msgs)
            if state["n"] >= n_msgs:
                state["t1"] = time.perf_counter()
                await client.close()

        await asyncio.wait_for(client.connect(processor), 300)

    asyncio.run(go())
    return {"seconds": state["t1"] - state["t0"], "messages": state["n"]}


def _recorder(port: int, seconds: float | None, stop_after: int | None, tmp: Path, warmup_s: float = 0.0) -> dict:
    """The recorder streaming from 127.0.0.1:port (stream only, bus on); per-ingest timings."""
    import msgspec

    from mia.config import Config
    from mia.data.polygon.server import SIM_API_KEY
    from mia.engine.events import OptionQuote, OptionTrade
    from mia.engine.pipeline import Pipeline
    from mia.recorder.live import Recorder

    orig = Pipeline.ingest
    lat: list[np.ndarray] = []
    recv_lat: list[np.ndarray] = []
    state = {"n": 0, "first_recv": 0, "last_done": 0, "warm": 0}
    rec_box: list = []

    def timed_ingest(self, events):
        out = orig(self, events)
        now = time.time_ns()  # the batch appended, published and reduced
        data = [e for e in events if e.__class__ is OptionTrade or e.__class__ is OptionQuote]
        if data and warmup_s and not state["first_recv"]:
            state["first_recv"] = data[0].ts_recv
        if data and data[-1].ts_recv - state["first_recv"] < warmup_s * 1e9:
            state["warm"] += len(data)
            data = []
        if data:
            t = np.fromiter((e.ts_event for e in data), np.int64, len(data))
            r = np.fromiter((e.ts_recv for e in data), np.int64, len(data))
            lat.append(now - t)
            recv_lat.append(r - t)
            if not state["first_recv"]:
                state["first_recv"] = int(r[0])
            state["n"] += len(data)
            state["last_done"] = now
            if stop_after is not None and state["n"] >= stop_after and rec_box:
                rec_box[0].stop("bench done")
        return out

    async def go():
        cfg = Config()
        cfg = msgspec.structs.replace(
            cfg, bus=msgspec.structs.replace(cfg.bus, enabled=True, address="tcp://127.0.0.1:0"), dtc=[],
            polygon=msgspec.structs.replace(cfg.polygon, enabled=False, stream=True, api_key=SIM_API_KEY,
                                            stream_url=f"ws://127.0.0.1:{port}", stream_quotes=500,
                                            stream_index_tickers=[]))
        rec = Recorder(cfg, str(tmp))
        rec_box.append(rec)
        return await rec.run(seconds)

    Pipeline.ingest = timed_ingest
    try:
        asyncio.run(go())
    finally:
        Pipeline.ingest = orig
    allv = np.concatenate(lat) if lat else np.zeros(1, np.int64)
    recv = np.concatenate(recv_lat) if recv_lat else np.zeros(1, np.int64)
    return {"messages": state["n"], "seconds": (state["last_done"] - state["first_recv"]) / 1e9,
            "p50_ms": float(np.percentile(allv, 50)) / 1e6, "p99_ms": float(np.percentile(allv, 99)) / 1e6,
            "max_ms": float(allv.max()) / 1e6, "recv_p99_ms": float(np.percentile(recv, 99)) / 1e6,
            "warm": state["warm"]}


def bench_throughput(n_frames: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench_stream_"))
    try:
        proc, port = _child(_BLAST_CHILD, n_frames, PER_FRAME)
        try:
            bare_loop(port, min(n_frames, 200))  # warm: server frames built, page cache, imports
            peer = bare_loop(port, n_frames)
            official = official_client(port, n_frames * PER_FRAME)
            client = client_only(port, n_frames * PER_FRAME)
            _recorder(port, 120.0, 20 * PER_FRAME, tmp / "warm")  # the reducers' first calls
            ours = _recorder(port, 120.0, n_frames * PER_FRAME, tmp / "run")  # 120 s: a bound, not a figure
        finally:
            _end(proc)
        return {"peer": peer, "ours": ours, "official": official, "client": client,
                "messages": n_frames * PER_FRAME}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_latency(seconds: float, rate: float = LATENCY_RATE) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench_stream_live_"))
    try:
        proc, port = _child(_PACED_CHILD, rate)
        try:
            r = _recorder(port, seconds + WARMUP_S, None, tmp, warmup_s=WARMUP_S)
        finally:
            sent = int(_end(proc).strip().splitlines()[-1] or 0)
        r["sent"] = sent
        r["load"] = os.getloadavg()[0]
        r["rate"] = rate
        r["duration"] = seconds
        return r
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(quick: bool) -> str:
    n_frames = 400 if quick else 4000
    tp = bench_throughput(n_frames)
    live = bench_latency(3.0 if quick else 10.0)
    peer, ours, msgs = tp["peer"], tp["ours"], tp["messages"]
    peer_rate = msgs / peer["seconds"]
    ours_rate = ours["messages"] / ours["seconds"]
    off = tp["official"]
    off_rate = off["messages"] / off["seconds"]
    cl = tp["client"]
    cl_rate = cl["messages"] / cl["seconds"]
    ok = live["p99_ms"] < TARGET_P99_MS
    lines = [
        "## Polygon streams: recorder throughput and live latency",
        "",
        f"(a) {msgs:,} option trades and quotes ({n_frames:,} frames of {PER_FRAME}, "
        f"{peer['bytes'] / 1e6:,.1f} MB of JSON) sent as fast as a `websockets` server in another process "
        "can send them.",
        "",
        "| receiver | messages | seconds | messages/s |",
        "|---|---:|---:|---:|",
        f"| mia recorder: frame recorded, parsed, appended, published, reduced | {ours['messages']:,} | "
        f"{ours['seconds']:.2f} | {ours_rate:,.0f} |",
        f"| mia stream client alone: frame kept as an event, parsed (no log, bus, reducers) | "
        f"{cl['messages']:,} | {cl['seconds']:.2f} | {cl_rate:,.0f} |",
        f"| peer: bare `websockets` recv loop (no parsing, nothing kept) | {msgs:,} | {peer['seconds']:.2f} | "
        f"{peer_rate:,.0f} |",
        f"| peer: Polygon's `WebSocketClient` (JSON parsed into its objects, counted) | {off['messages']:,} | "
        f"{off['seconds']:.2f} | {off_rate:,.0f} |",
        "",
        f"mia / bare loop: {ours_rate / peer_rate:.3f}x of the bare receive rate; mia / Polygon's client: "
        f"{ours_rate / off_rate:.2f}x; mia's client alone / Polygon's client: {cl_rate / off_rate:.2f}x "
        "(same server, same run). The bare loop reads frames already queued "
        "in the socket: its rate is the ceiling of receiving alone.",
        "",
        f"(b) The stream simulator paced at {live['rate']:,.0f} option messages/s for {live['duration']:.0f} s "
        f"after a {WARMUP_S:.0f} s warm-up ({live['warm']:,} messages, left out) (a frame of 50 every 10 ms), "
        "recorded by `mia record --polygon-ws-url` (bus on). Latency per message from the simulator's send "
        "(`t` stamped at send, ms, truncated) to `Pipeline.ingest` returning:",
        "",
        "| sent | recorded | p50 ms | p99 ms | max ms | receive p99 ms | target p99 |",
        "|---:|---:|---:|---:|---:|---:|---|",
        f"| {live['sent']:,} | {live['messages'] + live['warm']:,} | {live['p50_ms']:.2f} | {live['p99_ms']:.2f} | "
        f"{live['max_ms']:.1f} | {live['recv_p99_ms']:.2f} | < {TARGET_P99_MS:.0f} ms "
        f"({'met' if ok else 'MISSED'}) |",
        "",
        "Receive p99: send to `ts_recv` alone (the socket read), the peer floor of the same run. "
        f"Load average during the run: {live['load']:.1f} on {os.cpu_count()} cores (other processes' CPU "
        "delays the recorder's event loop: the receive p99 shows how much of the total is that wait).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run("--quick" in sys.argv))
