"""Storage benchmark: a day replayed from S3 (moto's server on loopback, reached through s3fs
range reads) against the same day on local disk.

The peer is the local path (plain files, no fsspec), measured in the same run; the ratio is
local time / S3 time (1.0 would mean S3 costs nothing). Loopback moto is an in-process Python
server: it shows mia's own per-request and per-byte overhead, not a real network's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from bench._timing import best_of
from mia.engine.clock import ManualClock
from mia.engine.clock import utc_day as day_of
from mia.engine.log import EventLog
from mia.replay import replay_day
from mia.replay.push import push_day

from .bench_log import START, synthetic_stream

_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def _rows(root: str, date: str) -> int:
    return sum(len(b) for b in EventLog(root).read_batches(date, streams=["live"]))


def run(quick: bool) -> str:
    try:
        import s3fs
        from moto.server import ThreadedMotoServer
    except ImportError:
        return "## Storage (S3)\n\nskipped: needs the s3 and test extras (s3fs, moto[server])\n"
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request lines
    n = 200_000 if quick else 1_000_000
    repeat = 1 if quick else 3
    tmp = Path(tempfile.mkdtemp(prefix="bench_storage_"))
    saved = {k: os.environ.get(k) for k in (*_ENV, "AWS_ENDPOINT_URL")}
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        os.environ.update(_ENV, AWS_ENDPOINT_URL=f"http://{host}:{port}")
        root = str(tmp / "log")
        with EventLog(root).writer(clock=ManualClock(START), fsync="never") as w:
            w.append_many(synthetic_stream(n))
        date = day_of(START)
        size = sum(s.size for s in EventLog(root).segments(date))
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": os.environ["AWS_ENDPOINT_URL"]})
        fs.mkdir("bench")
        url = "s3://bench/log"
        push_s = best_of(lambda: push_day(root, date, url), 1)
        again_s = best_of(lambda: push_day(root, date, url), 1)  # idempotent: nothing to send
        replay_day(root, date)  # warm-up: numba caches, imports
        replay_day(url, date)
        rows = []
        for label, fn in (
            ("read_batches (live stream)", lambda r: _rows(r, date)),
            ("replay_day (the fold)", lambda r: replay_day(r, date)),
        ):
            local_s = best_of(lambda fn=fn: fn(root), repeat)
            s3_s = best_of(lambda fn=fn: fn(url), repeat)
            rows.append(f"| {label} | {local_s:.3f} | {s3_s:.3f} | {local_s / s3_s:.2f} |")
        # one slice of the day by time: bytes fetched against the day's size
        span = [ev.ts_recv for _, ev in EventLog(root).read(date)]
        lo, hi = span[0], span[-1]
        q0, q1 = lo + (hi - lo) // 2, lo + (hi - lo) * 3 // 4
        fetched = [0]
        orig = s3fs.core.S3File._fetch_range

        def counting(self, start, end):
            data = orig(self, start, end)
            fetched[0] += len(data)
            return data

        s3fs.core.S3File._fetch_range = counting
        try:
            part = sum(1 for _ in EventLog(url).read(date, start=q0, end=q1))
        finally:
            s3fs.core.S3File._fetch_range = orig
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(tmp, ignore_errors=True)
    return "\n".join([
        "## Storage (S3 via `--data-dir s3://...`)",
        "",
        f"Synthetic ES day of {n:,} events ({size / 2**20:.1f} MiB of segments), pushed to moto's "
        f"S3 server on loopback; seconds, best of {repeat}; the peer is the same day on local "
        "disk, same run. Ratio = local / S3 (1.0: S3 costs nothing).",
        "",
        "| what | local s | S3 s | ratio |",
        "|---|---:|---:|---:|",
        *rows,
        "",
        f"`mia push` of the day: {push_s:.2f} s; pushed again (all skipped by size + checksum): "
        f"{again_s:.2f} s.",
        f"A quarter of the day by time ({part:,} rows): {fetched[0] / 2**20:.2f} MiB fetched of "
        f"{size / 2**20:.1f} MiB ({fetched[0] / size:.0%}; frame index beside each segment).",
        "",
    ])
