"""Chains parsed once: `replay_day` of the pipeline bench's ES-like day with an SPX chain every
minute, as the poller logs it now (each snapshot's pages, then its ChainSnapshot), against the
same day without chains (the peer, same run), and against the same day recorded as raw pages
only (before: every replay parses the JSON again), before and after `mia migrate` gave it its
ChainSnapshots. Each figure from a fresh process (bench_pipeline's child); the day writer and the
chain pages (from the Polygon simulator) are bench_pipeline's.

Target (issue 16): the day with a chain per minute replays at >= 0.8x the day without chains.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_pipeline import _child, chain_pages, write_day
from mia.engine.log import EventLog

TARGET_RATIO = 0.8


def _measure(root: Path, date: str) -> dict:
    _child(root, date, "decode")  # page cache and numba cache warm
    return {"decode": _child(root, date, "decode"), "replay": _child(root, date, "replay"),
            "bytes": sum(s.size for s in EventLog(root).segments(date))}


def _day(n: int, pages: list, *, snapshots: bool, migrate: bool = False) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench_chains_"))
    try:
        date, count = write_day(tmp, n, pages, snapshots=snapshots)
        out = {"snapshots": count, **_measure(tmp, date)}
        if migrate:
            from mia.replay.migrate import migrate_day

            t0 = time.perf_counter()
            result = migrate_day(tmp, date)
            out["migrate_s"] = time.perf_counter() - t0
            out["migrated"] = result.chain_snapshots
            out["after"] = _measure(tmp, date)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _rate(r: dict) -> float:
    return r["events"] / r["seconds"]


def run(quick: bool) -> str:
    n = 1_000_000 if quick else 10_000_000
    pages = chain_pages()
    plain = _day(n, [], snapshots=False)
    logged = _day(n, pages, snapshots=True)
    raw = _day(n, pages, snapshots=False, migrate=True)
    base = _rate(plain["replay"])

    def row(label: str, m: dict, target: str = "") -> str:
        r, d = m["replay"], m["decode"]
        return (f"| {label} | {r['events']:,} | {m['bytes'] / 1e6:,.1f} | {r['seconds']:.2f} | {_rate(r):,.0f} | "
                f"{_rate(d):,.0f} | {_rate(r) / base:.2f}x | {r['maxrss_mb']:,.0f} | {target} |")

    ratio = _rate(logged["replay"]) / base
    verdict = f">= {TARGET_RATIO}x ({'met' if ratio >= TARGET_RATIO else 'MISSED'})"
    lines = [
        "## Chains parsed once: replay with a chain per minute",
        "",
        f"The pipeline bench's ES-like day of {n:,} market events, with an SPX chain snapshot every "
        f"minute ({logged['snapshots']} snapshots of {len(pages)} pages from the Polygon simulator) "
        "and without. Peer: the day without chains, `replay_day` in the same run. Each figure from a "
        "fresh process.",
        "",
        "| day | events | MB on disk | replay s | replay events/s | decode-only events/s | replay vs no chains "
        "| peak RSS MB | target |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        row("no chains (peer)", plain),
        row("chains logged as pages + ChainSnapshot (now)", logged, verdict),
        row("chains as raw pages only (recorded before)", raw),
        row("the same after `mia migrate` (chains stream)", raw["after"]),
        "",
        f"`mia migrate` of the raw-pages day: {raw['migrate_s']:.1f} s, {raw['migrated']} ChainSnapshots "
        "written (each snapshot's pages parsed once, by the poller's code), no segment rewritten when "
        "it is already in the writer's format.",
        "",
        f"Replay of the day with a chain per minute: {ratio:.2f}x the day without chains (target "
        f"{TARGET_RATIO}x); recorded as raw pages it was {_rate(raw['replay']) / base:.2f}x, because every "
        "replay parsed each snapshot's JSON again.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run("--quick" in sys.argv))
