"""`mia demo`: simulators -> record -> replay --check -> order-flow and gamma summary, levels."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Callable

import msgspec

from mia.config import Config


def run_demo(data_dir: str, *, seconds: float = 20.0, seed: int = 0,
             echo: Callable[[str], None] = print) -> bool:
    """Record `seconds` from the simulators into `data_dir`, replay with a check, print it all.

    Returns True when the replay check passed.
    """
    from mia.recorder.live import Recorder
    from mia.recorder.sim import Simulators
    from mia.replay import replay_day
    from mia.replay.run import summary_lines

    levels_path = os.path.join(data_dir, "levels", "mia-levels.txt")
    os.makedirs(os.path.dirname(levels_path), exist_ok=True)
    base = msgspec.structs.replace(Config(), levels_file=levels_path,
                                   bus=msgspec.structs.replace(Config().bus, enabled=False))

    async def record():
        async with Simulators(seed=seed, rate=2000.0) as sims:
            echo(f"[1/3] simulators up: DTC 127.0.0.1:{sims.dtc.port}, Polygon {sims.polygon.url} "
                 f"(streams {sims.polygon_ws.url})")
            cfg = sims.record_config(base, poll_s=4.0)
            echo(f"[2/3] recording ESZ6, NQZ6, VXZ6, SPX and NDX chains and option streams for {seconds:.0f}s "
                 f"into {data_dir} ...")
            rec = Recorder(cfg, data_dir)
            return await rec.run(seconds)

    t0 = time.perf_counter()
    result = asyncio.run(record())
    echo(f"      {result.events:,} events, {result.derived:,} derived, "
         f"day {result.date}, recording {result.recording_id}")
    echo("[3/3] replaying the day with --check ...")
    rep = replay_day(data_dir, result.date, check=True)
    echo(f"      {rep.events:,} events replayed in {rep.seconds:.2f}s; check: {rep.check}"
         + (f" ({rep.mismatch})" if rep.mismatch else ""))
    echo("")
    echo("Order flow (session so far) and dealer gamma")
    for line in summary_lines(rep):
        echo(line)
    if os.path.exists(levels_path):
        echo(f"Sierra Chart levels file ({levels_path}):")
        with open(levels_path, encoding="utf-8") as f:
            for line in f:
                echo("  " + line.rstrip("\n"))
    echo(f"done in {time.perf_counter() - t0:.1f}s")
    return rep.check == "ok"
