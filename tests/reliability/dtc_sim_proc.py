"""A DTC simulator in its own process, for crash tests: the recorder under test must not share
its CPU time or its fate.

    python tests/reliability/dtc_sim_proc.py --rate 50000 --seed 1 --sent /tmp/sent.json

Prints ``PORT <n>`` on stdout once listening; on SIGTERM or SIGINT it stops and writes what it
sent on every connection to ``--sent`` (see ``DtcSimulator.write_sent``), then exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from mia.data.dtc.server import serve_forever


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    task = asyncio.ensure_future(serve_forever(
        "127.0.0.1", 0, seed=args.seed, rate=args.rate, symbols=tuple(args.symbols.split(",")),
        ready=ready, sent_path=args.sent))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    port = await ready
    print(f"PORT {port}", flush=True)
    try:
        await task
    except asyncio.CancelledError:
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=50_000.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--symbols", default="ESZ6,NQZ6")
    parser.add_argument("--sent", required=True)
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
