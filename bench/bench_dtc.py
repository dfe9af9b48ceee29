"""DTC benchmarks: codec decode throughput, client throughput and latency over loopback.

- Decode: a buffer of trade (107), bid/ask (108) and depth (140) messages, decoded by
  ``DtcCodec.feed`` into message structs, against the naive peer: one ``struct.unpack`` per
  header and per body.
- Client: the simulator runs in its own process (its own core); the client counts messages
  received per second; the peer is a bare asyncio Protocol that only frames the same stream.
- Latency: simulator at 50 000 msgs/s, from the trade's DateTime (stamped by the simulator when
  it is produced, just before the write) to the Trade event leaving the client's ``emit``.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import struct
import time

import numpy as np

from bench._timing import best_of
from mia.data.dtc import protocol as p
from mia.engine.clock import SystemClock
from mia.engine.events import Trade
from mia.engine.instruments import InstrumentRegistry

SYMBOLS = ["ESZ6", "NQZ6", "VXZ6"]


def _stream(n: int) -> bytes:
    msgs = [
        p.MarketDataUpdateTrade(symbol_id=1, at_bid_or_ask=2, price=6000.25, volume=3.0, date_time=1.7e9),
        p.MarketDataUpdateBidAsk(symbol_id=1, bid_price=6000.0, bid_quantity=4.0, ask_price=6000.25,
                                 ask_quantity=5.0, date_time=1_700_000_000),
        p.MarketDepthUpdateLevelFloatWithMilliseconds(symbol_id=1, date_time=1_700_000_000_000,
                                                      price=6000.5, quantity=3.0, side=2, update_type=1,
                                                      num_orders=2, final_update_in_batch=1),
    ]
    return b"".join(p.encode_binary(m) for m in msgs) * (n // 3)


def _naive(buf: bytes) -> int:
    """The peer: header unpack, slice, body unpack per message, as most DTC clients do."""
    bodies = {107: struct.Struct("<IH6xddd"), 108: struct.Struct("<Idf4xdfI"),
              140: struct.Struct("<IqffBBHB")}
    off = 0
    n = 0
    end = len(buf)
    while off + 4 <= end:
        size, msg_type = struct.unpack("<HH", buf[off:off + 4])
        body = bodies.get(msg_type)
        if body is not None:
            body.unpack(buf[off + 4:off + 4 + body.size])
        off += size
        n += 1
    return n




def bench_decode(quick: bool) -> list[tuple[str, float]]:
    n = 60_000 if quick else 600_000
    buf = _stream(n)
    rows = [
        ("DtcCodec.feed -> message structs", n / best_of(lambda: p.DtcCodec().feed(buf), 3)),
        ("peer: naive struct.unpack per message", n / best_of(lambda: _naive(buf), 3)),
    ]
    return rows


# --- loopback --------------------------------------------------------------------------------


def _sim_process(rate: float, port_queue) -> None:
    from mia.data.dtc.server import DtcSimulator

    async def main() -> None:
        sim = DtcSimulator(seed=1, rate=rate)
        for s in SYMBOLS:
            sim._market(s)
        await sim.start()
        port_queue.put(sim.port)
        await asyncio.Event().wait()

    asyncio.run(main())


class _FramingPeer(asyncio.Protocol):
    """Peer client: logon + subscribe by hand, then only frame the stream and count."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.count = 0

    def connection_made(self, transport) -> None:
        transport.write(p.encode_binary(p.LogonRequest(heartbeat_interval_in_seconds=30)))
        for i, s in enumerate(SYMBOLS, 1):
            transport.write(p.encode_binary(p.MarketDataRequest(symbol_id=i, symbol=s)))
            transport.write(p.encode_binary(p.MarketDepthRequest(symbol_id=i, symbol=s, num_levels=10)))

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        off = 0
        end = len(buf)
        while end - off >= 4:
            size = buf[off] | (buf[off + 1] << 8)
            if end - off < size:
                break
            off += size
            self.count += 1
        del buf[:off]


async def _measure_client(port: int, seconds: float, latency: bool) -> tuple[float, list[int]]:
    from mia.data.dtc.client import DtcClient

    lat: list[int] = []
    now_ns = time.time_ns

    def emit(ev) -> None:
        if latency and type(ev) is Trade:
            lat.append(now_ns() - ev.ts_event)

    client = DtcClient("127.0.0.1", port, SYMBOLS, emit=emit, clock=SystemClock(),
                       registry=InstrumentRegistry(), heartbeat_interval_s=5.0)
    task = asyncio.create_task(client.run())
    await asyncio.wait_for(asyncio.shield(client.logged_on), 10)
    await asyncio.sleep(0.5)  # warm-up: snapshots and the first bursts
    lat.clear()
    n0, t0 = client.messages_received, time.perf_counter()
    await asyncio.sleep(seconds)
    rate = (client.messages_received - n0) / (time.perf_counter() - t0)
    await client.stop()
    await asyncio.wait_for(task, 5)
    return rate, lat


async def _measure_peer(port: int, seconds: float) -> float:
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_connection(_FramingPeer, "127.0.0.1", port)
    await asyncio.sleep(0.5)
    n0, t0 = peer.count, time.perf_counter()
    await asyncio.sleep(seconds)
    rate = (peer.count - n0) / (time.perf_counter() - t0)
    transport.close()
    return rate


def _with_sim(rate: float, fn):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_sim_process, args=(rate, q), daemon=True)
    proc.start()
    try:
        port = q.get(timeout=30)
        return asyncio.run(fn(port))
    finally:
        proc.terminate()
        proc.join(5)


def run(quick: bool) -> str:
    decode = bench_decode(quick)
    peer_decode = decode[-1][1]
    seconds = 1.5 if quick else 5.0
    asked = 400_000.0
    client_rate, _ = _with_sim(asked, lambda port: _measure_client(port, seconds, False))
    peer_rate = _with_sim(asked, lambda port: _measure_peer(port, seconds))
    _, lat = _with_sim(50_000.0, lambda port: _measure_client(port, seconds, True))
    lat_us = np.array(lat, dtype=np.float64) / 1000.0
    p50, p99 = (np.percentile(lat_us, [50, 99]) if lat_us.size else (float("nan"),) * 2)

    lines = ["## DTC (codec, client, latency)", "",
             f"Sizes: {'quick' if quick else 'full'}; decode buffer of trade/bid-ask/depth messages "
             f"in equal parts; loopback runs {seconds:.1f} s each, simulator in its own process.", "",
             "| Decode path | msgs/s | vs naive peer | target |", "|---|---:|---:|---|"]
    for name, r in decode:
        target = "≥ 2 M msgs/s" if "peer" not in name else "(peer)"
        lines.append(f"| {name} | {r:,.0f} | {r / peer_decode:.2f}x | {target} |")
    lines += ["", "| Loopback | msgs/s | ratio | target |", "|---|---:|---:|---|",
              f"| DtcClient (decode + events), simulator asked for {asked:,.0f}/s | {client_rate:,.0f} "
              f"| {client_rate / peer_rate:.2f}x of peer | ≥ 100 000 msgs/s |",
              f"| peer: bare framing Protocol, same simulator | {peer_rate:,.0f} | 1.00x | (peer; the "
              f"simulator's own send rate caps both) |",
              "", f"Latency at 50 000 msgs/s, simulator produce -> Trade event emitted "
              f"({lat_us.size:,} trades): p50 {p50:.0f} µs, p99 {p99:.0f} µs (target p99 < 1 ms).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(quick=True))
