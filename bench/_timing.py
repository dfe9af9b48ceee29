"""Timing helpers shared by the bench modules."""

from __future__ import annotations

import time
from typing import Callable


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """The fastest of `repeat` calls, in seconds: the least disturbed by a shared machine."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def peak_rss_kib() -> int:
    """This process's peak resident set (VmHWM), in KiB.

    Not ru_maxrss: Linux carries that across fork and exec, so a child started by a large
    benchmark process would report the parent's peak. VmHWM belongs to the address space
    that exec creates, so it starts afresh.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")
