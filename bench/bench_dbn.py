"""DBN import benchmark: `mia import dbn` in records/s against databento-dbn's decode alone.

Synthetic ES-like files (trades, mbp-10, mbo; zstd) are written with databento-dbn's encoder.
The peer is the same decoder reading the same file in the same 1 MiB pieces and doing nothing
with the records; the import decodes the file twice (a scan for its day runs, definitions and
identity, then the conversion) and writes the log, so its ceiling is about half the peer's.
"""

from __future__ import annotations

import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import zstandard

from mia.engine.clock import NS_PER_DAY

DAY0 = 20_781 * NS_PER_DAY
START = DAY0 + 14 * 3600 * 10**9
TICK = 250_000_000
IID = 4916


def _write(path: Path, schema, records) -> Path:
    import databento_dbn as dbn

    meta = dbn.Metadata("GLBX.MDP3", START, dbn.SType.RAW_SYMBOL, dbn.SType.INSTRUMENT_ID,
                        schema, symbols=["ESZ6"])
    raw = bytes(meta) + b"".join(bytes(r) for r in records)
    path.write_bytes(zstandard.ZstdCompressor(level=3).compress(raw))
    return path


def trades(n: int, rng) -> list:
    import databento_dbn as dbn

    ts = START + np.cumsum(rng.integers(1_000, 400_000, n))
    px = 24_000 + np.cumsum(rng.choice([-1, 0, 0, 1], n))
    sides = [dbn.Side.BID, dbn.Side.ASK]
    return [dbn.TradeMsg(1, IID, int(t) - 300, int(p) * TICK, int(s), dbn.Action.TRADE,
                         sides[int(k)], 0, int(t), flags=dbn.F_LAST)
            for t, p, s, k in zip(ts, px, rng.integers(1, 20, n), rng.integers(0, 2, n))]


def mbp10(n: int, rng) -> list:
    import databento_dbn as dbn

    ts = START + np.cumsum(rng.integers(1_000, 400_000, n))
    mid = 24_000 + np.cumsum(rng.choice([-1, 0, 0, 0, 0, 0, 1], n))
    out = []
    sizes = rng.integers(1, 60, (n, 20))
    for i in range(n):
        m = int(mid[i])
        lv = [dbn.BidAskPair((m - k) * TICK, (m + 1 + k) * TICK, int(sizes[i, k]),
                             int(sizes[i, 10 + k]), 3, 4) for k in range(10)]
        out.append(dbn.MBP10Msg(1, IID, int(ts[i]) - 300, m * TICK, int(sizes[i, 0]),
                                dbn.Action.MODIFY, dbn.Side.BID, 0, int(ts[i]),
                                flags=dbn.F_LAST, levels=lv))
    return out


def mbo(n: int, rng) -> list:
    import databento_dbn as dbn

    out = []
    live: dict[int, tuple] = {}
    ts, oid, mid = START, 1, 24_000
    A, C, T = dbn.Action.ADD, dbn.Action.CANCEL, dbn.Action.TRADE
    while len(out) < n:
        ts += int(rng.integers(1_000, 100_000))
        r = rng.random()
        if r < 0.5 or len(live) < 50:
            bid = rng.random() < 0.5
            px = mid - int(rng.integers(0, 30)) if bid else mid + 1 + int(rng.integers(0, 30))
            sz = int(rng.integers(1, 20))
            oid += 1
            live[oid] = (dbn.Side.BID if bid else dbn.Side.ASK, px, sz)
            out.append(dbn.MBOMsg(1, IID, ts - 300, oid, px * TICK, sz, A, live[oid][0], ts,
                                  flags=dbn.F_LAST))
        elif r < 0.9:
            o = next(iter(live))
            side, px, sz = live.pop(o)
            out.append(dbn.MBOMsg(1, IID, ts - 300, o, px * TICK, sz, C, side, ts,
                                  flags=dbn.F_LAST))
        else:
            out.append(dbn.MBOMsg(1, IID, ts - 300, 0, mid * TICK, 1, T, dbn.Side.BID, ts,
                                  flags=dbn.F_LAST))
    return out


def decode_only(path: Path) -> tuple[int, float]:
    import databento_dbn as dbn

    t0 = time.perf_counter()
    dec = dbn.DBNDecoder(compression=dbn.Compression.ZSTD)
    n = 0
    with open(path, "rb") as f:
        while True:
            buf = f.read(1 << 20)
            if not buf:
                break
            n += len(dec.write_and_decode(buf))
    return n - 1, time.perf_counter() - t0


def import_once(path: Path, root: Path) -> tuple[int, int, float]:
    from mia.data.databento.importer import import_files

    t0 = time.perf_counter()
    s = import_files(root, [path])
    return s.imported, s.events, time.perf_counter() - t0


def run(quick: bool) -> str:
    import databento_dbn as dbn

    n = 30_000 if quick else 300_000
    rng = np.random.default_rng(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mia-bench-dbn-") as tmp:
        tmp = Path(tmp)
        warm = _write(tmp / "warm.dbn.zst", dbn.Schema.TRADES, trades(100, rng))
        import_once(warm, tmp / "log-warm")  # one-time costs (log reader, numba caches)
        import_once(warm, tmp / "log-warm")
        for name, schema, gen in (("trades", dbn.Schema.TRADES, trades),
                                  ("mbp-10", dbn.Schema.MBP_10, mbp10),
                                  ("mbo", dbn.Schema.MBO, mbo)):
            path = _write(tmp / f"{name}.dbn.zst", schema, gen(n, rng))
            best_dec = min(decode_only(path)[1] for _ in range(2))
            recs, events, t_imp = import_once(path, tmp / f"log-{name}")
            _, _, t_again = import_once(path, tmp / f"log-{name}")  # idempotent: scan + skip
            rows.append((name, recs, events, recs / t_imp, recs / best_dec, recs / t_again))
    lines = "\n".join(
        f"| {name} | {recs:,} | {events:,} | {imp:,.0f} | {dec:,.0f} | {imp / dec:.2f} | "
        f"{again:,.0f} |" for name, recs, events, imp, dec, again in rows)
    return textwrap.dedent(f"""\
        ## DBN import (`mia import dbn`)

        Synthetic ES files written with databento-dbn's encoder, zstd level 3, {n:,} records
        each. Import = scan + decode + convert + write the `import` stream (fsync=interval);
        peer = `DBNDecoder` decoding the same file alone (best of two).

        | schema | records | events written | import records/s | decode-only records/s | import / decode | re-import records/s (adds nothing) |
        |---|---:|---:|---:|---:|---:|---:|
        """) + lines + "\n"


if __name__ == "__main__":
    print(run(quick=True))
