"""Monitoring reducer throughput over market rows (the per-row path that must stay tiny).

Rows: Trade / Quote / BookLevel of two instruments of one DTC source, a Heartbeat every 10,000
rows (a recorder heartbeat per second at 10k rows/s), cut into batches. Peers measured in the
same run: the numpy floor (latency = ts_recv - ts_event and its histogram, nothing else) and a
plain per-row Python fold (dict per source, the naive implementation).
"""

from __future__ import annotations

import time

import numpy as np

from mia.analytics.monitor import NBINS, MonitorReducer, latency_bins
from mia.engine.columns import ColumnBatch
from mia.engine.events import (
    FEED_LOGGED_ON,
    K_BOOK_LEVEL,
    K_HEARTBEAT,
    K_INSTRUMENT,
    K_QUOTE,
    K_TRADE,
    FeedStatus,
    Heartbeat,
    Instrument,
)
from mia.engine.jsonenc import to_json

SOURCE = "dtc:127.0.0.1:11099"
T0 = 1_718_000_000_000_000_000
TARGET_ROWS_PER_S = 10_000_000


def make_rows(n: int, beat_every: int = 10_000, seed: int = 1) -> ColumnBatch:
    rng = np.random.default_rng(seed)
    b = ColumnBatch.allocate(n)
    b.kind[:] = rng.choice(np.array([K_TRADE, K_QUOTE, K_BOOK_LEVEL], dtype=np.uint8), n, p=[0.2, 0.3, 0.5])
    b.ts_recv[:] = T0 + np.arange(n, dtype=np.int64) * 100_000  # 10k rows/s
    b.ts_event[:] = b.ts_recv - rng.integers(200_000, 5_000_000, n)
    b.instrument[:] = rng.integers(0, 2, n).astype(np.int32)
    b.seq[:] = np.arange(n)
    objects = [Instrument(T0, T0, 0, "ES", SOURCE), Instrument(T0, T0, 1, "NQ", SOURCE),
               FeedStatus(T0, T0, SOURCE, FEED_LOGGED_ON)]
    b.kind[:3] = [K_INSTRUMENT, K_INSTRUMENT, 22]
    b.obj[:3] = [0, 1, 2]
    for i in range(beat_every, n, beat_every):
        ts = int(b.ts_recv[i])
        b.kind[i] = K_HEARTBEAT
        b.obj[i] = len(objects)
        objects.append(Heartbeat(ts, ts))
    b.instrument[b.obj >= 0] = -1
    b.objects = objects
    return b


def cut(batch: ColumnBatch, size: int) -> list[ColumnBatch]:
    return [batch.take(np.arange(lo, min(lo + size, len(batch)))) for lo in range(0, len(batch), size)]


def time_monitor(batches: list[ColumnBatch]) -> tuple[float, MonitorReducer]:
    mon = MonitorReducer()
    t0 = time.perf_counter()
    for b in batches:
        mon.on_batch(b)
    return time.perf_counter() - t0, mon


def time_numpy_floor(batches: list[ColumnBatch]) -> float:
    hist = np.zeros(NBINS, dtype=np.int64)
    t0 = time.perf_counter()
    for b in batches:
        market = b.obj < 0
        lat = b.ts_recv[market] - b.ts_event[market]
        hist += np.bincount(latency_bins(lat), minlength=NBINS)
    return time.perf_counter() - t0


def time_python_fold(batch: ColumnBatch, n: int) -> float:
    kinds = batch.kind[:n].tolist()
    recv = batch.ts_recv[:n].tolist()
    event = batch.ts_event[:n].tolist()
    inst = batch.instrument[:n].tolist()
    t0 = time.perf_counter()
    stats: dict[str, list] = {}
    src_of = {0: SOURCE, 1: SOURCE}
    for k, r, e, i in zip(kinds, recv, event, inst):
        if k in (K_TRADE, K_QUOTE, K_BOOK_LEVEL):
            s = stats.setdefault(src_of.get(i, "?"), [0, []])
            s[0] += 1
            s[1].append(r - e)
    for s in stats.values():
        s[1].sort()
    return time.perf_counter() - t0


def run(quick: bool) -> str:
    n = 300_000 if quick else 2_000_000
    rows = make_rows(n)
    lines = ["## Monitoring reducer (`bench/bench_monitor.py`)", "",
             f"{n:,} market rows (Trade/Quote/BookLevel, 2 instruments, 1 source), a Heartbeat every "
             f"10,000 rows. Target: >= {TARGET_ROWS_PER_S / 1e6:.0f} M rows/s in 4096-row batches "
             "(the monitor must cost little beside the order-flow reducer).", "",
             "| batch rows | MonitorReducer M rows/s | numpy floor M rows/s | monitor time / floor time |",
             "|---:|---:|---:|---:|"]
    results = {}
    for size in (64, 4096, 65536):
        part = rows.take(np.arange(min(n, 256_000))) if size == 64 else rows  # small batches: a slice
        batches = cut(part, size)
        rows_in = sum(len(b) for b in batches)
        time_monitor(batches[:2])  # warm-up
        mon_s, mon = time_monitor(batches)
        floor_s = time_numpy_floor(batches)
        results[size] = rows_in / mon_s
        lines.append(f"| {size} | {rows_in / mon_s / 1e6:.1f} | {rows_in / floor_s / 1e6:.1f} | "
                     f"{mon_s / floor_s:.1f}x |")
    t0 = time.perf_counter()
    health = to_json(mon.metrics())  # the typed HealthMetrics of the last run, as `mia health --json`
    metrics_ms = (time.perf_counter() - t0) * 1e3
    py_n = min(n, 300_000)
    py_s = time_python_fold(rows, py_n)
    lines += ["", f"Peer, plain per-row Python fold (count + latency list per source, then sort): "
              f"{py_n / py_s / 1e6:.2f} M rows/s; MonitorReducer at 4096 rows is "
              f"{results[4096] / (py_n / py_s):.1f}x faster.", "",
              f"Typed health metrics of the day (`metrics()` + `engine.jsonenc.to_json`): {metrics_ms:.2f} ms, "
              f"{len(health):,} B of JSON.", "",
              f"Result: {results[4096] / 1e6:.1f} M rows/s at 4096-row batches, target "
              f"{TARGET_ROWS_PER_S / 1e6:.0f} M rows/s: {'met' if results[4096] >= TARGET_ROWS_PER_S else 'NOT met'}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(quick=True))
