"""A stand-in for Sierra Chart writing its files: `.scid` ticks and `.depth` commands.

Byte layouts are Sierra's (see `scid`, `depth`). Like Sierra, the live `SimWriter` buffers
records and writes them every `flush_s` (5 s by default; configurable); with `torn=True` a
flush ends inside a record (the rest comes with the next flush), and depth files roll over at
the UTC date of the records' time (`<symbol>.<YYYY-MM-DD>.depth`).

    python -m mia.data.sierra.simwriter DIR --symbols ESZ6,NQZ6 --rate 100 --flush 0.2 --duration 5
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mia.engine.clock import NS_PER_DAY, NS_PER_US, utc_day

from . import depth as _depth
from . import scid as _scid
from .common import ns_to_scdt, scdt_to_ns
from .follower import depth_path, scid_path
from .symbols import SPECS, root_of

_DEFAULT_TICK = 0.25


def _tick_of(symbol: str) -> float:
    root = root_of(symbol)
    return SPECS[root].tick_size if root else _DEFAULT_TICK


def make_trades(n: int, start_ns: int, *, seed: int = 0, tick: float = 0.25,
                price: float = 6000.0, step_ns: int = 1_000_000) -> np.ndarray:
    """`n` tick records (Open = SINGLE_TRADE_WITH_BID_ASK), strictly increasing µs times from
    `start_ns`, a random walk on the tick grid, bid/ask around it, aggressor on one side."""
    rng = np.random.default_rng(seed)
    recs = np.zeros(n, _scid.RECORD_DTYPE)
    gaps = rng.integers(1, max(2, 2 * step_ns // NS_PER_US), n) if n else np.zeros(0, np.int64)
    us0 = ns_to_scdt(int(start_ns))
    recs["dt"] = us0 + np.cumsum(gaps) - gaps[0] if n else 0
    steps = rng.integers(-1, 2, n)
    ticks = np.round(price / tick) + np.cumsum(steps)
    buy = rng.random(n) < 0.5
    bid = ticks * tick - np.where(buy, tick, 0.0)
    px = ticks * tick
    recs["open"] = 0.0
    recs["close"] = px
    recs["low"] = bid
    recs["high"] = bid + tick
    size = rng.integers(1, 20, n)
    recs["num_trades"] = 1
    recs["total_volume"] = size
    recs["ask_volume"] = np.where(buy, size, 0)
    recs["bid_volume"] = np.where(buy, 0, size)
    return recs


def make_depth(n: int, start_ns: int, *, seed: int = 0, tick: float = 0.25,
               price: float = 6000.0, step_ns: int = 1_000_000, snapshot: bool = True) -> np.ndarray:
    """`n` depth records: a clear-book and a 10-level snapshot first (when `snapshot`), then
    batches of 1-4 add/modify/delete commands; the last record of each batch has Flags 0x01.
    Records of one batch share a time; batch times strictly increase."""
    rng = np.random.default_rng(seed)
    recs = np.zeros(n, _depth.RECORD_DTYPE)
    us = ns_to_scdt(int(start_ns))
    mid = round(price / tick)
    i = 0
    if snapshot and n:
        cmds = [(_depth.COMMAND_CLEAR_BOOK, 0.0, 0)]
        cmds += [(_depth.COMMAND_ADD_BID_LEVEL, (mid - k) * tick, 10 + k) for k in range(10)]
        cmds += [(_depth.COMMAND_ADD_ASK_LEVEL, (mid + 1 + k) * tick, 10 + k) for k in range(10)]
        for c, p, q in cmds[:n]:
            recs[i] = (us, c, 0, 1 if q else 0, p, q, 0)
            i += 1
        recs["flags"][i - 1] = _depth.FLAG_END_OF_BATCH
    while i < n:
        us += int(rng.integers(1, max(2, 2 * step_ns // NS_PER_US)))
        k = min(n - i, int(rng.integers(1, 5)))
        for j in range(k):
            bid = bool(rng.random() < 0.5)
            level = int(rng.integers(0, 10))
            p = (mid - level) * tick if bid else (mid + 1 + level) * tick
            op = int(rng.integers(0, 3))  # add, modify, delete
            c = (2, 4, 6)[op] + (0 if bid else 1)
            q = 0 if op == 2 else int(rng.integers(1, 200))
            recs[i] = (us, c, _depth.FLAG_END_OF_BATCH if j == k - 1 else 0,
                       int(rng.integers(1, 30)) if q else 0, p, q, 0)
            i += 1
    return recs


def write_scid(path: str | Path, recs: np.ndarray, *, append: bool = False) -> None:
    """A whole .scid file (or records appended to one that exists)."""
    path = Path(path)
    mode = "ab" if append and path.exists() else "wb"
    with open(path, mode) as f:
        if mode == "wb":
            f.write(_scid.encode_header())
        f.write(_scid.encode_records(recs))


def write_depth(path: str | Path, recs: np.ndarray, *, append: bool = False) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "ab" if append and path.exists() else "wb"
    with open(path, mode) as f:
        if mode == "wb":
            f.write(_depth.encode_header())
        f.write(_depth.encode_records(recs))


class _Out:
    """One file being appended to, with a torn tail carried to the next flush."""

    def __init__(self, path: Path, header: bytes) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists() or path.stat().st_size == 0
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if new:
            os.write(self.fd, header)
        self.fresh = new
        self.buf = bytearray()

    def flush(self, torn: bool, rng: np.random.Generator, record_size: int) -> int:
        """Write the buffer; with `torn`, hold back part of its last record. Returns bytes."""
        data = bytes(self.buf)
        cut = 0
        if torn and len(data) >= record_size:
            cut = int(rng.integers(1, record_size))
        out = data[:len(data) - cut]
        if out:
            os.write(self.fd, out)
        self.buf = bytearray(data[len(data) - cut:])
        return len(out)

    def close(self) -> None:
        if self.buf:
            os.write(self.fd, bytes(self.buf))
            self.buf.clear()
        os.close(self.fd)


class SimWriter:
    """Appends ticks and depth for `symbols` under `data_dir` as Sierra would (see module doc).

    `now_ns` gives record times (the wall clock by default); `rate` is records per second per
    file. `on_flush(now_ns, records_by_path)` is called after each flush (bench latency).
    """

    def __init__(self, data_dir: str | os.PathLike, symbols: Sequence[str], *, rate: float = 100.0,
                 flush_s: float = 5.0, torn: bool = True, depth: bool = True, seed: int = 0,
                 now_ns: Callable[[], int] = time.time_ns,
                 on_flush: Callable[[int, dict], None] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.symbols = list(symbols)
        self.rate = rate
        self.flush_s = flush_s
        self.torn = torn
        self.depth = depth
        self.now_ns = now_ns
        self.on_flush = on_flush
        self.rng = np.random.default_rng(seed)
        self._seed = seed
        self._scid = {s: _Out(scid_path(self.data_dir, s), _scid.encode_header())
                      for s in self.symbols}
        self._depth: dict[str, tuple[str, _Out]] = {}
        self._price = {s: 6000.0 if root_of(s) != "VX" else 18.0 for s in self.symbols}
        self._last_us: dict[str, int] = {}
        self._carry = 0.0
        self.written = {"scid": 0, "depth": 0}  # records generated

    def _times(self, key: str, k: int, t0: int, t1: int) -> np.ndarray:
        """`k` strictly increasing µs times in [t0, t1] (pushed later if needed), after the
        last time this file got."""
        us = np.sort(self.rng.integers(ns_to_scdt(t0), ns_to_scdt(t1) + 1, k))
        idx = np.arange(k)
        floor = self._last_us.get(key, 0) + 1
        us = np.maximum.accumulate(np.maximum(us - idx, floor)) + idx
        if k:
            self._last_us[key] = int(us[-1])
        return us

    def step(self, t0: int, t1: int) -> None:
        """Generate the records of [t0, t1) and flush them."""
        want = self.rate * (t1 - t0) / 1e9 + self._carry
        k = int(want)
        self._carry = want - k
        flushed: dict[str, int] = {}
        for sym in self.symbols:
            tick = _tick_of(sym)
            if k:
                recs = make_trades(k, t0, seed=int(self.rng.integers(1 << 31)), tick=tick,
                                   price=self._price[sym])
                recs["dt"] = self._times("scid:" + sym, k, t0, t1 - 1)
                self._price[sym] = float(recs["close"][-1])
                self._scid[sym].buf += _scid.encode_records(recs)
                self.written["scid"] += k
            out = self._scid[sym]
            flushed[str(out.path)] = out.flush(self.torn, self.rng, _scid.RECORD_SIZE)
            if not self.depth:
                continue
            if k:
                drecs = make_depth(k, t0, seed=int(self.rng.integers(1 << 31)), tick=tick,
                                   price=self._price[sym], snapshot=False)
                # one time per batch, strictly increasing
                ends = np.flatnonzero(drecs["flags"] & 1)
                bt = self._times("depth:" + sym, len(ends), t0, t1 - 1)
                starts = np.concatenate(([0], ends[:-1] + 1))
                for b, (a, e) in enumerate(zip(starts, ends)):
                    drecs["dt"][a:e + 1] = bt[b]
                tail = len(drecs) - (ends[-1] + 1 if len(ends) else 0)
                if tail:
                    drecs["flags"][-1] = 1
                    drecs["dt"][-tail:] = bt[-1] if len(bt) else ns_to_scdt(t0)
                self._append_depth(sym, drecs)
                self.written["depth"] += k
            for date, dout in list(self._depth.values()):
                flushed[str(dout.path)] = dout.flush(self.torn, self.rng, _depth.RECORD_SIZE)
        if self.on_flush is not None:
            self.on_flush(self.now_ns(), flushed)

    def _append_depth(self, sym: str, drecs: np.ndarray) -> None:
        """Records into the file of their UTC date; a new day's file starts with a snapshot."""
        days = scdt_to_ns(drecs["dt"]) // NS_PER_DAY
        for dn in np.unique(days).tolist():
            part = drecs[days == dn]
            day = utc_day(dn * NS_PER_DAY)
            cur = self._depth.get(sym)
            if cur is None or cur[0] != day:
                if cur is not None:  # the day changed: finish yesterday's file
                    cur[1].close()
                out = _Out(depth_path(self.data_dir, sym, day), _depth.encode_header())
                if out.fresh:
                    snap = make_depth(21, 0, tick=_tick_of(sym), price=self._price[sym])
                    snap["dt"] = part["dt"][0]
                    out.buf += _depth.encode_records(snap)
                    self.written["depth"] += len(snap)
                self._depth[sym] = (day, out)
            self._depth[sym][1].buf += _depth.encode_records(part)

    def run(self, duration_s: float, *, stop: Callable[[], bool] | None = None) -> None:
        """Flush every `flush_s` for `duration_s` (wall time), then write what is buffered."""
        end = time.monotonic() + duration_s
        t0 = self.now_ns()
        while time.monotonic() < end and not (stop and stop()):
            time.sleep(max(0.0, min(self.flush_s, end - time.monotonic())))
            t1 = self.now_ns()
            self.step(t0, t1)
            t0 = t1
        self.close()

    def close(self) -> None:
        for out in self._scid.values():
            out.close()
        for _, out in self._depth.values():
            out.close()
        self._scid.clear()
        self._depth.clear()


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m mia.data.sierra.simwriter")
    ap.add_argument("data_dir")
    ap.add_argument("--symbols", default="ESZ6")
    ap.add_argument("--rate", type=float, default=100.0, help="records per second per file")
    ap.add_argument("--flush", type=float, default=5.0, help="seconds between flushes")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--no-torn", action="store_true")
    ap.add_argument("--no-depth", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    w = SimWriter(args.data_dir, [s for s in args.symbols.split(",") if s], rate=args.rate,
                  flush_s=args.flush, torn=not args.no_torn, depth=not args.no_depth,
                  seed=args.seed)
    w.run(args.duration)
    print(f"wrote {w.written['scid']} scid and {w.written['depth']} depth records", flush=True)


if __name__ == "__main__":
    main()
