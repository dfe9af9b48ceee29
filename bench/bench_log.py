"""Event log benchmark: append, decode to events, decode to columns, size, memory; DBN peers.

One synthetic ES-like stream (trades, quotes, depth updates) is written and read by mia's log
(format 2, columnar frames, and format 1, msgpack frames) and, as the same records, by DBN
(TradeMsg / MBP1Msg / MBOMsg) + zstd: encoded and decoded to Python objects by `databento_dbn`,
and decoded to numpy records by the official `databento` package's `DBNStore.to_ndarray()` (one
file per schema, as Databento ships them).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import zstandard

from mia.engine.clock import NS_PER_DAY, ManualClock, utc_day
from mia.engine.events import BookLevel, Instrument, Quote, Trade
from mia.engine.log import EventLog

DAY0 = 19_676 * NS_PER_DAY
START = DAY0 + 14 * 3600 * 10**9  # 14:00 UTC
TICK = 0.25

# issue 16: columns >= 25 M ev/s and >= 5x to_ndarray; typed >= 1.0x DBN objects; append >= 3x
# DBN encode; bytes <= 0.9x DBN + zstd
TARGETS = {"columns": 25e6, "columns_ratio": 5.0, "events_ratio": 1.0, "append_ratio": 3.0,
           "bytes_ratio": 0.9}


def synthetic_stream(n: int, seed: int = 1) -> list:
    """ES-like: ~15% trades, ~25% quotes, ~60% depth updates, on a 0.25 tick random walk."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(3, size=n, p=[0.15, 0.25, 0.60])
    ts = START + np.cumsum(rng.integers(1_000, 200_000, size=n))
    mid_ticks = 20_000 + np.cumsum(rng.choice([-1, 0, 0, 0, 1], size=n))
    sizes = rng.integers(1, 40, size=n)
    sides = rng.choice([-1, 1], size=n)
    levels = rng.integers(0, 10, size=n)
    actions = rng.choice([1, 1, 1, 2], size=n)
    events = [Instrument(int(START), int(START), 1, "ESZ3", "dtc:127.0.0.1:11099",
                         "CME", 0.25, 50.0)]
    for k, t, m, s, sd, lv, ac in zip(kind.tolist(), ts.tolist(), mid_ticks.tolist(),
                                      sizes.tolist(), sides.tolist(), levels.tolist(),
                                      actions.tolist()):
        if k == 0:
            events.append(Trade(t - 300, t, 1, (m + (sd > 0)) * TICK, float(s), sd))
        elif k == 1:
            events.append(Quote(t - 300, t, 1, m * TICK, float(s), (m + 1) * TICK,
                                float(s + 3)))
        else:
            px = (m - lv if sd > 0 else m + 1 + lv) * TICK
            events.append(BookLevel(t - 300, t, 1, sd, px, float(s), ac, lv, s // 3 + 1, 0))
    return events


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def bench_mia(root: Path, events: list, fmt: int) -> dict:
    log = EventLog(root)
    clock = ManualClock(START)
    from mia.engine.fastdecode import warm_up
    from mia.engine.log.frame2 import warm_up as warm_up2

    warm_up()  # compile (or load) the kernels before timing
    warm_up2()
    t0 = time.perf_counter()
    with log.writer(clock=clock, format_version=fmt) as w:
        append = w.append
        for ev in events:
            append(ev)
    t_append = time.perf_counter() - t0
    date = utc_day(START)
    size = sum(s.size for s in log.segments(date))
    t_events = t_cols = float("inf")
    for _ in range(3):  # best of three: the first pass also warms allocator and page cache
        t0 = time.perf_counter()
        n_ev = 0
        for _ in log.read(date):
            n_ev += 1
        t_events = min(t_events, time.perf_counter() - t0)
        t0 = time.perf_counter()
        n_col = 0
        for b in log.read_batches(date):
            n_col += len(b)
        t_cols = min(t_cols, time.perf_counter() - t0)
    frames = sum(s.frames for s in log.inspect(date))
    assert n_ev == n_col == len(events) + 2, (n_ev, n_col, len(events))
    return {"append": _rate(len(events), t_append), "events": _rate(n_ev, t_events),
            "columns": _rate(n_col, t_cols), "bytes": size, "bpe": size / len(events),
            "frames": frames}


def _px(x: float) -> int:
    return int(round(x * 1e9))


def bench_dbn(root: Path, events: list) -> dict:
    import databento
    import databento_dbn as dbn

    meta = dbn.Metadata("GLBX.MDP3", START, dbn.SType.RAW_SYMBOL, dbn.SType.INSTRUMENT_ID, None,
                        symbols=["ESZ3"])
    path = root / "day.dbn.zst"
    t0 = time.perf_counter()
    parts = [bytes(meta.encode())]
    per_schema: dict[str, list[bytes]] = {"trades": [], "mbp-1": [], "mbo": []}
    side = {1: dbn.Side.BID, -1: dbn.Side.ASK, 0: dbn.Side.NONE}
    add, trade = dbn.Action.ADD, dbn.Action.TRADE
    for ev in events:
        tp = type(ev)
        if tp is Trade:
            r = dbn.TradeMsg(1, ev.instrument, ev.ts_event, _px(ev.price), int(ev.size), trade,
                             side[ev.side], 0, ev.ts_recv)  # DBN: a trade's side is the aggressor's
            schema = "trades"
        elif tp is Quote:
            r = dbn.MBP1Msg(1, ev.instrument, ev.ts_event, _px(ev.bid), int(ev.bid_size), add,
                            dbn.Side.BID, 0, ev.ts_recv,
                            levels=dbn.BidAskPair(_px(ev.bid), _px(ev.ask), int(ev.bid_size),
                                                  int(ev.ask_size)))
            schema = "mbp-1"
        elif tp is BookLevel:
            r = dbn.MBOMsg(1, ev.instrument, ev.ts_event, ev.level, _px(ev.price), int(ev.size),
                           add, side[ev.side], ev.ts_recv)
            schema = "mbo"
        else:
            continue
        rec = bytes(r)
        parts.append(rec)
        per_schema[schema].append(rec)
    raw = b"".join(parts)
    comp = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(raw)
    path.write_bytes(comp)
    t_write = time.perf_counter() - t0
    # one file per schema for DBNStore (a DBN file holds one schema for to_ndarray)
    files = []
    for schema, recs in per_schema.items():
        m = dbn.Metadata("GLBX.MDP3", START, dbn.SType.RAW_SYMBOL, dbn.SType.INSTRUMENT_ID,
                         dbn.Schema.from_str(schema), symbols=["ESZ3"])
        f = root / f"{schema}.dbn.zst"
        f.write_bytes(zstandard.ZstdCompressor(level=3).compress(bytes(m.encode()) + b"".join(recs)))
        files.append(f)
    t_nd = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        n_nd = sum(len(databento.DBNStore.from_file(f).to_ndarray()) for f in files)
        t_nd = min(t_nd, time.perf_counter() - t0)
    records = len(parts) - 1
    t_read = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        dec = dbn.DBNDecoder(compression=dbn.Compression.ZSTD)
        n = 0
        data = path.read_bytes()
        step = 1 << 20
        for i in range(0, len(data), step):
            dec.write(data[i : i + step])
            n += len(dec.decode())
        t_read = min(t_read, time.perf_counter() - t0)
    assert n - 1 == records == n_nd, (n, records, n_nd)
    # the same decode, each record then handed to a Python loop one by one, as EventLog.read
    # hands on its events (DBNDecoder.decode returns a list, which nothing iterates above)
    t_iter = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        dec = dbn.DBNDecoder(compression=dbn.Compression.ZSTD)
        m = 0
        for i in range(0, len(data), step):
            dec.write(data[i : i + step])
            for _ in dec.decode():
                m += 1
        t_iter = min(t_iter, time.perf_counter() - t0)
    return {"append": _rate(records, t_write), "events": _rate(records, t_read),
            "events_iter": _rate(records, t_iter), "ndarray": _rate(n_nd, t_nd), "bytes": path.stat().st_size,
            "bpe": path.stat().st_size / records, "raw_bpe": len(raw) / records,
            "schema_bpe": sum(f.stat().st_size for f in files) / records}


def bench_replay(n: int) -> dict:
    """`replay_day` (decode + the fold) and decode alone of bench_pipeline's ES-like day (a
    chain-free day: ~2.3 ms between events, so ~43 events a 100 ms frame), written in format 2
    and in format 1, each read in a fresh process (bench_pipeline's child: peak RSS too)."""
    from bench.bench_pipeline import _child, write_day

    out = {}
    defaults = EventLog.writer.__kwdefaults__
    for fmt in (2, 1):
        tmp = Path(tempfile.mkdtemp(prefix=f"bench_replay{fmt}_"))
        old = defaults["format_version"]
        defaults["format_version"] = fmt  # write_day opens its writer with the defaults
        try:
            date, _ = write_day(tmp, n, [])
        finally:
            defaults["format_version"] = old
        try:
            _child(tmp, date, "decode")  # page cache and numba cache warm for both
            out[fmt] = {"decode": _child(tmp, date, "decode"),
                        "replay": _child(tmp, date, "replay"),
                        "frames": sum(s.frames for s in EventLog(tmp).inspect(date))}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def bench_compaction(n: int, repeats: int = 2) -> dict:
    """The ES-like day of `bench_replay` as recorded live (format 2, ~43 events a 100 ms frame),
    then the same files after `mia migrate` compacts their frames, same run: `replay_day` and
    decode alone in a fresh process each (best of `repeats`), the frame counts, the migrate."""
    from bench.bench_pipeline import _child, write_day
    from mia.replay.migrate import migrate_day

    tmp = Path(tempfile.mkdtemp(prefix="bench_compact_"))
    out: dict = {"n": n}
    try:
        date, _ = write_day(tmp, n, [])

        def measure() -> dict:
            _child(tmp, date, "decode")  # page cache and numba cache warm
            runs = {m: [_child(tmp, date, m) for _ in range(repeats)] for m in ("decode", "replay")}
            best = {m: min(r, key=lambda x: x["seconds"]) for m, r in runs.items()}
            return {**best, "frames": sum(s.frames for s in EventLog(tmp).inspect(date)),
                    "bytes": sum(s.size for s in EventLog(tmp).segments(date))}

        out["live"] = measure()
        t0 = time.perf_counter()
        result = migrate_day(tmp, date, chains=False)
        out["migrate_s"] = time.perf_counter() - t0
        out["rewritten"] = sum(s.action == "rewritten" for s in result.segments)
        out["compacted"] = measure()
        out["second_changed"] = migrate_day(tmp, date, chains=False).changed
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


MEM_CHILD = textwrap.dedent("""
    import sys
    from bench._timing import peak_rss_kib
    from mia.engine.log import EventLog
    root, date, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    log = EventLog(root)
    n = 0
    if mode == "events":
        for _ in log.read(date):
            n += 1
    else:
        for b in log.read_batches(date):
            n += len(b)
    print(n, peak_rss_kib())  # VmHWM: ru_maxrss would carry the parent's peak across exec
""")


def peak_rss_kib(root: Path, mode: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", MEM_CHILD, str(root), utc_day(START), mode],
                         capture_output=True, text=True, check=True, timeout=600).stdout.split()
    return int(out[0]), int(out[1])


def run(quick: bool) -> str:
    n = 200_000 if quick else 2_000_000
    tmp = Path(tempfile.mkdtemp(prefix="bench_log_"))
    try:
        events = synthetic_stream(n)
        mia = bench_mia(tmp / "mia2", events, 2)
        mia1 = bench_mia(tmp / "mia1", events, 1)
        dbn = bench_dbn(tmp, events[1:])
        # memory: a day and a day twice its size, read in a fresh process
        small = n // 4
        mem = {}
        for label, size in (("1x", small), ("2x", 2 * small)):
            root = tmp / f"mem{label}"
            with EventLog(root).writer(clock=ManualClock(START), fsync="never") as w:
                w.append_many(events[: size + 1])
            mem[label] = {m: peak_rss_kib(root, m) for m in ("events", "columns")}
        replay = bench_replay(1_000_000 if quick else 10_000_000)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []

    def row(name, key, peer, peer_key, ratio_target, abs_target=None):
        m, m1, d = mia[key], mia1[key], dbn[peer_key]
        ratio = m / d
        ok = ratio >= ratio_target and (abs_target is None or m >= abs_target)
        tgt = f"≥ {ratio_target:g}x" + (f" and ≥ {abs_target / 1e6:.0f} M ev/s"
                                         if abs_target else "")
        rows.append(f"| {name} | {m / 1e6:.2f} M | {m1 / 1e6:.2f} M | {peer} | {d / 1e6:.2f} M "
                    f"| {ratio:.2f} | {tgt} ({'met' if ok else 'NOT met'}) |")

    row("append (encode + zstd + write, fsync=interval), ev/s", "append", "databento-dbn encode "
        "(records built, `bytes()`, zstd)", "append", TARGETS["append_ratio"])
    row("decode to typed events (`EventLog.read`), ev/s", "events", "databento-dbn "
        "`DBNDecoder` to Python objects", "events", TARGETS["events_ratio"])
    row("decode to columns (`EventLog.read_batches`), ev/s", "columns", "databento "
        "`DBNStore.to_ndarray()` (a file per schema)", "ndarray", TARGETS["columns_ratio"],
        TARGETS["columns"])
    bytes_ratio = mia["bpe"] / dbn["bpe"]
    size_ok = "met" if bytes_ratio <= TARGETS["bytes_ratio"] else "NOT met"
    mem_lines = []
    for mode in ("events", "columns"):
        (n1, r1), (n2, r2) = mem["1x"][mode], mem["2x"][mode]
        mem_lines.append(f"| {mode} | {n1:,} ev: {r1 / 1024:.0f} MiB | {n2:,} ev: "
                         f"{r2 / 1024:.0f} MiB | {r2 / r1:.2f} |")
    rates = {f: {m: replay[f][m]["events"] / replay[f][m]["seconds"] / 1e6
                 for m in ("decode", "replay")} for f in (1, 2)}
    r2, r1 = rates[2]["replay"], rates[1]["replay"]
    d2, d1 = rates[2]["decode"], rates[1]["decode"]
    m2, m1 = replay[2]["replay"]["maxrss_mb"], replay[1]["replay"]["maxrss_mb"]
    rn, rframes = replay[2]["replay"]["events"], replay[2]["frames"]
    ok6 = "met" if r2 >= 6 else "NOT met"
    okm = "met" if m2 < 300 else "NOT met"
    return textwrap.dedent(f"""\
        ## Event log (bench_log)

        {n:,} synthetic ES-like events (15% trades, 25% quotes, 60% depth updates) in one run,
        written and read by mia's log in format 2 (columnar frames, the default) and format 1
        (msgpack frames); peers: the same records as DBN (TradeMsg / MBP1Msg / MBOMsg for depth)
        + zstd level 3, encoded and decoded to Python objects by `databento_dbn`, decoded to numpy
        by the official `databento` package's `DBNStore.to_ndarray()` (one file per schema). One
        core, zstd level 3, frames closed at 4096 events or 100 ms of ts_recv ({mia['frames']}
        frames here). Reads: best of three passes; ratios are format 2 / peer.

        | measure | mia format 2 | mia format 1 | peer | peer | format 2 / peer | target |
        |---|---|---|---|---|---|---|
        """) + "\n".join(rows) + textwrap.dedent(f"""
        | bytes per event on disk | {mia['bpe']:.2f} B | {mia1['bpe']:.2f} B | DBN + zstd (one file) | {dbn['bpe']:.2f} B | {bytes_ratio:.2f} | ≤ 0.9x ({size_ok}) |

        DBN uncompressed: {dbn['raw_bpe']:.1f} B/record; a file per schema + zstd:
        {dbn['schema_bpe']:.2f} B/record. The typed peer returns a list per call: iterated one
        record at a time in a Python loop, as `EventLog.read` hands on its events, DBN gives
        {dbn['events_iter'] / 1e6:.2f} M records/s (format 2 / that: {mia['events'] / dbn['events_iter']:.2f}).

        `replay_day` of bench_pipeline's ES-like day of {rn:,} events ({rframes:,} frames: ~43
        events a frame, frames close at 100 ms), in a fresh process after start-up; peer: the
        same day written in format 1, replayed in the same run.

        | day written in | replay_day ev/s | decode only (`read_batches`) ev/s | peak RSS (replay) | target |
        |---|---|---|---|---|
        | format 2 | {r2:.2f} M | {d2:.2f} M | {m2:.0f} MB | ≥ 6 M ev/s ({ok6}), < 300 MB ({okm}) |
        | format 1 | {r1:.2f} M | {d1:.2f} M | {m1:.0f} MB | |
        | format 2 / format 1 | {r2 / r1:.2f} | {d2 / d1:.2f} | | |

        Peak RSS of a fresh process reading a format-2 day (flat memory: the ratio stays near 1
        when the day doubles):

        | read as | day 1x | day 2x | 2x / 1x |
        |---|---|---|---|
        """) + "\n".join(mem_lines) + "\n"


if __name__ == "__main__":
    if "--compaction" in sys.argv:  # the migrate compaction before/after alone
        print(json.dumps(bench_compaction(1_000_000 if "--quick" in sys.argv else 10_000_000)))
    else:
        print(run(quick="--quick" in sys.argv))
