"""Export benchmark: `mia export` of a day's trades and book to Parquet and CSV, against the
pandas path a researcher would otherwise write (`Day.to_pandas(kind).to_parquet/.to_csv`).

No speed target is set for export; the peer shows what the typed export costs or saves.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from bench._timing import best_of
from mia.engine.clock import ManualClock
from mia.engine.clock import utc_day as day_of
from mia.engine.log import EventLog
from mia.replay import open_day
from mia.replay.export import export_day

from .bench_log import START, synthetic_stream


def run(quick: bool) -> str:
    n = 200_000 if quick else 1_000_000
    repeat = 1 if quick else 2
    tmp = Path(tempfile.mkdtemp(prefix="bench_export_"))
    rows = []
    try:
        root = tmp / "log"
        with EventLog(root).writer(clock=ManualClock(START), fsync="never") as w:
            w.append_many(synthetic_stream(n))
        date = day_of(START)
        day = open_day(str(root), date)
        # warm-up: imports (pyarrow.parquet, pandas) and numba caches are not what is measured
        export_day(str(root), date, "trades", "parquet", tmp / "warm.parquet")
        day.to_pandas("Trade").to_parquet(tmp / "warm2.parquet")
        counts = {k: len(day.columns(name)["seq"]) for k, name in (("trades", "Trade"), ("book", "BookLevel"))}
        for kind, name in (("trades", "Trade"), ("book", "BookLevel")):
            for fmt in ("parquet", "csv"):
                out = tmp / f"{kind}.{fmt}"
                mia_s = best_of(lambda: export_day(str(root), date, kind, fmt, out), repeat)

                def peer():
                    df = open_day(str(root), date).to_pandas(name)
                    (df.to_parquet if fmt == "parquet" else df.to_csv)(tmp / f"peer.{fmt}")

                peer_s = best_of(peer, repeat)
                rate, peer_rate = counts[kind] / mia_s, counts[kind] / peer_s
                rows.append(f"| {kind} → {fmt} | {counts[kind]:,} | {rate / 1e6:.2f} M | "
                            f"{peer_rate / 1e6:.2f} M | {rate / peer_rate:.2f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return "\n".join([
        "## Export (`mia export`)",
        "",
        f"Synthetic ES day of {n:,} events; rows per second, best of {repeat}; the peer is "
        "`open_day(...).to_pandas(kind)` then pandas `to_parquet`/`to_csv` (pyarrow engine), "
        "measured in the same run. No target set; ratio > 1 means mia is faster.",
        "",
        "| export | rows | mia rows/s | pandas rows/s | ratio |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ])
