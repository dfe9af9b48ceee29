"""`mia demo`: simulators -> record -> replay --check -> order-flow and gamma summary, levels."""

from __future__ import annotations

import asyncio
import math
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

    levels_path = os.path.join(data_dir, "levels", "mia-levels.txt")
    os.makedirs(os.path.dirname(levels_path), exist_ok=True)
    base = msgspec.structs.replace(Config(), levels_file=levels_path,
                                   bus=msgspec.structs.replace(Config().bus, enabled=False))

    async def record():
        async with Simulators(seed=seed, rate=2000.0) as sims:
            echo(f"[1/3] simulators up: DTC 127.0.0.1:{sims.dtc.port}, Polygon {sims.polygon.url}")
            cfg = sims.record_config(base, poll_s=4.0)
            echo(f"[2/3] recording ESZ6, NQZ6, VXZ6 and SPX, NDX chains for {seconds:.0f}s "
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
    echo("Order flow (session so far)")
    for sym, s in rep.instruments.items():
        echo(f"  {sym:6} trades {s['trades']:>6,}  volume {s['volume']:>8,.0f}  "
             f"delta {s['cum_delta']:>+7,.0f}  VWAP {s['vwap']:>9.2f}  POC {s['poc']:>9.2f}  "
             f"VA {s['va_low']:.2f}-{s['va_high']:.2f}")
    echo("Dealer gamma")
    for u, g in rep.gamma.items():
        zg = "none" if g["zero_gamma"] is None or math.isnan(g["zero_gamma"]) else f"{g['zero_gamma']:.1f}"
        echo(f"  {u:6} spot {g['spot']:.2f}  zero gamma {zg}  call wall {g['call_wall']:.0f}  "
             f"put wall {g['put_wall']:.0f}  max pain {g['max_pain']:.0f}  "
             f"GEX {g['total_gex'] / 1e9:+.2f}bn/1%  P/C OI {g['pcr_oi']:.2f}  "
             f"bias {g['dealer_bias']:+.2f}")
    if os.path.exists(levels_path):
        echo(f"Sierra Chart levels file ({levels_path}):")
        with open(levels_path, encoding="utf-8") as f:
            for line in f:
                echo("  " + line.rstrip("\n"))
    echo(f"done in {time.perf_counter() - t0:.1f}s")
    return rep.check == "ok"
