"""Order-flow and book reducers: kernel rates against a vectorised pandas reference, cold start.

Targets (task #5): order-flow kernel >= 30 M trades/s and >= 20x the pandas reference on the
same trades; book kernel rate reported; first call on a cold numba cache vs a warm one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np
import pandas as pd

from bench._timing import best_of
from mia.analytics.book import BookReducer
from mia.analytics.calendar import session_table
from mia.analytics.orderflow import OrderflowConfig, OrderflowReducer
from mia.engine.columns import ColumnBatch
from mia.engine.events import BOOK_DELETE, BOOK_UPSERT, K_BOOK_LEVEL, K_QUOTE, K_TRADE

START_NS = 1_709_938_800_000_000_000  # 2024-03-08 23:00 UTC: Monday's trade date opens
TICK = 0.25


def synth_trades(n: int, seed: int = 7, quotes_every: int = 0) -> ColumnBatch:
    """n ES-like trades over about a day (most with the DTC side flag), optional quotes."""
    rng = np.random.default_rng(seed)
    ts = START_NS + np.cumsum(rng.exponential(55e6, n).astype(np.int64))
    ticks = 20_000 + np.cumsum(rng.choice([-1, 0, 0, 1], n))
    price = ticks * TICK
    size = rng.geometric(0.6, n).astype(np.float64)
    side = np.where(rng.random(n) < 0.9, rng.choice([-1, 1], n), 0).astype(np.int8)
    if quotes_every:
        m = n + n // quotes_every
        b = ColumnBatch.allocate(m)
        is_quote = np.zeros(m, dtype=bool)
        is_quote[quotes_every :: quotes_every + 1] = True
        tr = ~is_quote
        b.kind[:] = np.where(is_quote, K_QUOTE, K_TRADE)
        b.ts_event[tr] = ts
        b.ts_event[is_quote] = ts[quotes_every - 1 :: quotes_every][: is_quote.sum()]
        b.price[tr], b.size[tr], b.side[tr] = price, size, side
        qp = price[quotes_every - 1 :: quotes_every][: is_quote.sum()]
        b.bid[is_quote], b.ask[is_quote] = qp - TICK, qp
        b.bid_size[is_quote] = b.ask_size[is_quote] = 10.0
    else:
        b = ColumnBatch.allocate(n)
        b.kind[:] = K_TRADE
        b.ts_event[:] = ts
        b.price[:], b.size[:], b.side[:] = price, size, side
    b.ts_recv[:] = b.ts_event
    b.instrument[:] = 1
    return b


def synth_book(n: int, seed: int = 11) -> ColumnBatch:
    """n depth rows: upserts and deletes around a drifting mid, both sides."""
    rng = np.random.default_rng(seed)
    b = ColumnBatch.allocate(n)
    b.kind[:] = K_BOOK_LEVEL
    b.ts_event[:] = START_NS + np.arange(n, dtype=np.int64) * 1000
    b.ts_recv[:] = b.ts_event
    b.instrument[:] = 1
    mid = 20_000 + np.cumsum(rng.choice([-1, 0, 0, 0, 0, 0, 0, 1], n))
    side = rng.choice([1, -1], n)
    depth = rng.integers(1, 11, n)
    b.side[:] = side
    b.price[:] = (mid - side * depth) * TICK
    b.size[:] = rng.integers(1, 200, n).astype(np.float64)
    b.action[:] = np.where(rng.random(n) < 0.2, BOOK_DELETE, BOOK_UPSERT)
    return b


def pandas_reference(b: ColumnBatch, cfg: OrderflowConfig) -> pd.DataFrame:
    """The same features the numba kernel computes, vectorised with pandas."""
    df = pd.DataFrame({"ts": b.ts_event, "price": b.price, "size": b.size, "side": b.side.astype(np.int64)})
    # the source's flag, else the tick rule; a zero tick repeats the previous trade's side
    first = np.where(df.side != 0, df.side, np.sign(df.price.diff().fillna(0)))
    df["aggr"] = pd.Series(first, index=df.index).replace(0, np.nan).ffill().fillna(0)
    starts, dates = session_table(int(df.ts.iloc[0]), int(df.ts.iloc[-1]))
    df["tdate"] = dates[np.searchsorted(starts, df.ts.to_numpy(), side="right") - 1]
    df["signed"] = df["size"] * df.aggr
    df["cum_delta"] = df.groupby("tdate").signed.cumsum()
    df["pv"] = df.price * df["size"]
    g = df.groupby("tdate")
    df["vwap"] = g.pv.cumsum() / g["size"].cumsum()
    df["pv2"] = df.price**2 * df["size"]
    df["sd"] = np.sqrt((df.groupby("tdate").pv2.cumsum() / g["size"].cumsum() - df.vwap**2).clip(lower=0))
    df["px"] = np.floor(df.price / TICK + 0.5).astype(np.int64)
    df["bar"] = df.ts // cfg.bar_interval_ns
    df["buy"] = df["size"].where(df.aggr == 1, 0.0)
    df["sell"] = df["size"].where(df.aggr == -1, 0.0)
    bars = df.groupby(["tdate", "bar"]).agg(
        open=("price", "first"), high=("price", "max"), low=("price", "min"), close=("price", "last"),
        volume=("size", "sum"), buy=("buy", "sum"), sell=("sell", "sum"), cum_delta=("cum_delta", "last"),
        vwap=("vwap", "last"), sd=("sd", "last"), trades=("price", "size"))
    fp = df.groupby(["bar", "px"]).agg(buy=("buy", "sum"), sell=("sell", "sum"), vol=("size", "sum"))
    bars["bar_poc"] = fp.vol.groupby(level=0).idxmax().map(lambda k: k[1] * TICK).to_numpy()
    prof = df.groupby(["tdate", "px"])["size"].sum()
    bars.attrs["poc"] = prof.groupby(level=0).idxmax()
    return bars


COLD_SCRIPT = """
import time
t0 = time.perf_counter()
from mia.analytics.orderflow import OrderflowReducer
from mia.analytics.book import BookReducer
from mia.engine.columns import ColumnBatch
from mia.engine.events import Trade, Quote, BookLevel, RecordingEnded, BOOK_UPSERT
t = 1_709_938_800_000_000_000
evs = [Quote(t, t, 1, 99.75, 1.0, 100.0, 1.0), BookLevel(t, t, 1, 1, 99.75, 5.0, BOOK_UPSERT),
       Trade(t, t, 1, 100.0, 1.0, 0), RecordingEnded(t + 1, t + 1, "r", "stopped")]
b = ColumnBatch.from_events(evs)
OrderflowReducer().on_batch(b)
BookReducer().on_batch(b)
print(time.perf_counter() - t0)
"""


def first_call_seconds(cache_dir: str) -> float:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run([sys.executable, "-c", COLD_SCRIPT], env=env, capture_output=True,
                         text=True, check=True, timeout=300)
    return float(out.stdout.strip().splitlines()[-1])


def run(quick: bool) -> str:
    n_trades = 200_000 if quick else 1_500_000
    n_book = 1_000_000 if quick else 8_000_000
    repeat = 2 if quick else 3
    cfg = OrderflowConfig()

    trades = synth_trades(n_trades)
    mixed = synth_trades(n_trades, quotes_every=4)
    OrderflowReducer(cfg).on_batch(synth_trades(1000))  # compile / load the cache
    t_of = best_of(lambda: OrderflowReducer(cfg).on_batch(trades), repeat)
    t_mixed = best_of(lambda: OrderflowReducer(cfg).on_batch(mixed), repeat)
    t_pd = best_of(lambda: pandas_reference(trades, cfg), 1 if not quick else 1)
    reducer = OrderflowReducer(cfg)
    bars = reducer.on_batch(trades)
    ref = pandas_reference(trades, cfg)
    # sanity: both sides agree on what they both compute (bars closed by the kernel so far), and
    # the typed summary (InstrumentSummary) holds every trade
    k = len(bars)
    summary = reducer.summary()[1]
    agree = (np.array_equal([b.volume for b in bars], ref.volume.to_numpy()[:k])
             and np.array_equal([b.cum_delta for b in bars], ref.cum_delta.to_numpy()[:k])
             and summary.trades == n_trades and summary.volume == float(np.sum(trades.size))
             and summary.cum_delta == summary.buy_volume - summary.sell_volume)

    book = synth_book(n_book)
    BookReducer().on_batch(synth_book(1000))
    t_book = best_of(lambda: BookReducer().on_batch(book), repeat)

    with tempfile.TemporaryDirectory() as cache:
        cold = first_call_seconds(cache)
        warm = first_call_seconds(cache)

    rate = n_trades / t_of / 1e6
    ratio = t_pd / t_of
    lines = [
        "## Order flow and book reducers (bench_orderflow)",
        "",
        f"Synthetic ES day: {n_trades:,} trades (90 % with the DTC side flag, the rest by tick rule), "
        f"one instrument, 60 s bars; one `OrderflowReducer.on_batch` call over the whole batch "
        f"(wrapper included), best of {repeat}. Peer: a vectorised pandas reference computing the "
        f"same features (aggressor, trade date, cum delta, VWAP/sd, bar OHLCV, footprint, POC) on "
        f"the same trades. Bars agree with the reference on volume and cum delta, and the typed "
        f"summary counts every trade: {agree}.",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| order-flow kernel | {rate:.1f} M trades/s ({t_of * 1e3:.1f} ms) | >= 30 M trades/s |",
        f"| pandas reference | {n_trades / t_pd / 1e6:.2f} M trades/s ({t_pd * 1e3:.0f} ms) | |",
        f"| ratio kernel / pandas | {ratio:.0f}x | >= 20x |",
        f"| order flow, trades + quotes (1 quote per 4 trades) | {len(mixed) / t_mixed / 1e6:.1f} M rows/s | |",
        f"| book kernel ({n_book:,} upsert/delete rows, 10 levels) | {n_book / t_book / 1e6:.1f} M rows/s | reported |",
        f"| first call, cold numba cache (subprocess, import + compile) | {cold:.2f} s | |",
        f"| first call, warm numba cache (subprocess, import + load) | {warm:.2f} s | |",
        "",
        f"Verdict: {'meets' if rate >= 30 and ratio >= 20 else 'MISSES'} the order-flow targets "
        f"({rate:.1f} M/s, {ratio:.0f}x).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
