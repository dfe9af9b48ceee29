"""`make bench`: run every benchmark module and write BENCHMARKS.md.

Each module bench/bench_<area>.py defines `run(quick: bool) -> str` returning a markdown section
(with its peer in the same run and the ratio). Sections are written in the order below.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import platform
import subprocess
import sys
import time
import traceback

MODULES = ["bench_log", "bench_dtc", "bench_polygon", "bench_orderflow", "bench_gamma", "bench_monitor", "bench_bus", "bench_pipeline", "bench_chains", "bench_sierra", "bench_study",
           "bench_volatility", "bench_dbn", "bench_storage", "bench_flow", "bench_startup",
           "bench_stream"]


def machine() -> str:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="BENCHMARKS.md")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--only", nargs="*", default=None, help="module names to run")
    args = ap.parse_args()
    sections = []
    for name in args.only or MODULES:
        try:
            mod = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"bench.{name}":
                continue
            raise
        t0 = time.perf_counter()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        try:
            sections.append(mod.run(quick=args.quick))
        except Exception:
            sections.append(f"## {name}\n\nFAILED:\n\n```\n{traceback.format_exc()}\n```\n")
        print(f"bench: {name} done in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    head = (f"# Benchmarks\n\nCommand: `make bench` (`python -m bench.run{' --quick' if args.quick else ''}`)\n\n"
            f"Machine: {machine()}\n\nDate: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, "
            f"commit {rev or 'uncommitted'}\n\nShared, noisy machines: read ratios against the peer "
            f"measured in the same run, not absolute figures.\n")
    with open(args.out, "w") as f:
        f.write(head + "\n" + "\n".join(sections))
    print(f"bench: wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
