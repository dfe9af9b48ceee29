"""OrderflowReducer against a plain pandas reference, batch-cut invariance, hand-checked cases."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mia.analytics.calendar import cme_trade_date
from mia.analytics.orderflow import OrderflowConfig, OrderflowReducer
from mia.engine.columns import ColumnBatch
from mia.engine.events import (
    BATCH_BEGIN,
    BATCH_END,
    BOOK_SNAPSHOT,
    K_BOOK_LEVEL,
    K_QUOTE,
    K_RECORDING_ENDED,
    K_TRADE,
    BookLevel,
    EventCodec,
    Instrument,
    Quote,
    RecordingEnded,
    Trade,
    kind_of,
)

MS = 1_000_000
S = 1_000_000_000
CFG = OrderflowConfig(imbalance_min_volume=4, large_trade_min_size=12, value_area=0.7)
TICKS = {1: 0.25, 2: 0.1}


def utc_ns(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp()) * S


# Starts a few minutes before a trade-date boundary or none: Friday close (-> Monday), a Sunday
# open after the March DST change (no boundary), Monday opens in CDT and in CST, the Friday
# before Martin Luther King Day (-> Tuesday), and a quiet mid-session start.
STARTS = [
    utc_ns("2024-03-08T22:57:00"),
    utc_ns("2024-03-10T21:58:30"),
    utc_ns("2024-03-11T21:58:00"),
    utc_ns("2024-11-04T22:58:00"),
    utc_ns("2024-11-01T21:59:00"),
    utc_ns("2024-01-12T22:58:00"),
    utc_ns("2024-06-05T15:00:00"),
]


def make_stream(seed: int, start_ns: int, n: int, two_instruments: bool = True) -> list:
    """A random tick stream: trades (with and without side), quotes, depth snapshots."""
    rng = np.random.default_rng(seed)
    events: list = [Instrument(start_ns, start_ns, 1, "ESH4", "test", tick_size=0.25)]
    if two_instruments:
        events.append(Instrument(start_ns, start_ns, 2, "XYZ", "test", tick_size=0.1))
    insts = [1, 2] if two_instruments else [1]
    ticks_at = {1: 20000, 2: 31234}
    t = start_ns
    for _ in range(n):
        gap = rng.choice([0, 1 * MS, 3 * MS, 40 * MS, 700 * MS, 9 * S, 75 * S],
                         p=[0.25, 0.2, 0.15, 0.2, 0.12, 0.06, 0.02])
        t += int(gap)
        inst = int(rng.choice(insts))
        tick = TICKS[inst]
        what = rng.random()
        if what < 0.15:
            mid = ticks_at[inst]
            events.append(Quote(t, t + 5, inst, (mid - int(rng.integers(0, 2))) * tick,
                                float(rng.integers(1, 50)), (mid + int(rng.integers(1, 3))) * tick,
                                float(rng.integers(1, 50))))
        elif what < 0.2 and inst == 1:
            mid = ticks_at[inst]
            rows = []
            for k in range(3):
                rows.append((1, (mid - 1 - k) * tick))
                rows.append((-1, (mid + 1 + k) * tick))
            for j, (side, px) in enumerate(rows):
                flags = (BATCH_BEGIN if j == 0 else 0) | (BATCH_END if j == len(rows) - 1 else 0)
                events.append(BookLevel(t, t + 7, inst, side, px, float(rng.integers(1, 40)),
                                        BOOK_SNAPSHOT, j // 2, 0, flags))
        else:
            ticks_at[inst] += int(rng.choice([-2, -1, 0, 0, 0, 1, 2]))
            side = int(rng.choice([-1, 0, 0, 1]))
            events.append(Trade(t, t + 3, inst, ticks_at[inst] * tick,
                                float(rng.integers(1, 9)), side))
    events.append(RecordingEnded(t + 1, t + 11, "r", "stopped"))
    return events


# --- the pandas reference -------------------------------------------------------------------


def frame(events: list) -> pd.DataFrame:
    rows = []
    for r, ev in enumerate(events):
        k = kind_of(ev)
        rows.append({
            "row": r, "kind": k, "ts": ev.ts_event, "recv": ev.ts_recv,
            "inst": getattr(ev, "instrument", -1),
            "price": getattr(ev, "price", math.nan), "size": getattr(ev, "size", math.nan),
            "side": getattr(ev, "side", 0) if k == K_TRADE else 0,
            "bid": getattr(ev, "bid", math.nan) if k == K_QUOTE else math.nan,
            "ask": getattr(ev, "ask", math.nan) if k == K_QUOTE else math.nan,
            "book_side": ev.side if k == K_BOOK_LEVEL else 0,
            "flags": ev.flags if k == K_BOOK_LEVEL else 0,
        })
    return pd.DataFrame(rows)


def classify(df: pd.DataFrame) -> pd.DataFrame:
    """Trades with aggressor, price index and trade date."""
    df = df.copy()
    df[["qbid", "qask"]] = df.groupby("inst")[["bid", "ask"]].ffill()
    tr = df[df.kind == K_TRADE].copy()
    quote = np.select(
        [tr.price >= tr.qask, tr.price <= tr.qbid,
         tr.price > (tr.qbid + tr.qask) / 2, tr.price < (tr.qbid + tr.qask) / 2],
        [1, -1, 1, -1], 0)
    quote[tr.qbid.isna().to_numpy() | tr.qask.isna().to_numpy()] = 0
    tr["aggr"] = np.where(tr.side != 0, np.sign(tr.side), quote)
    for inst, idx in tr.groupby("inst").groups.items():
        last_p, last_s = None, 0
        for r in idx:
            s = tr.at[r, "aggr"]
            if s == 0 and last_p is not None:
                p = tr.at[r, "price"]
                s = 1 if p > last_p else -1 if p < last_p else last_s
            tr.at[r, "aggr"] = s
            last_p, last_s = tr.at[r, "price"], s
    tr["tick"] = tr.inst.map(TICKS)
    tr["px_idx"] = np.floor(tr.price / tr.tick + 0.5).astype(np.int64)
    tr["tdate"] = [cme_trade_date(int(t)) for t in tr.ts]
    tr["signed"] = tr["size"] * tr["aggr"]
    return tr


def ref_poc_va(vol_by_idx: pd.Series, frac: float) -> tuple[int, int, int]:
    """POC and CBOT two-row value area, written from the definition over a dense index range."""
    lo, hi = int(vol_by_idx.index.min()), int(vol_by_idx.index.max())
    rows = {x: 0.0 for x in range(lo, hi + 1)}
    for x, v in vol_by_idx.items():
        rows[int(x)] += v
    best = max(rows.values())
    centre = (lo + hi) / 2
    poc = min((x for x, v in rows.items() if v == best), key=lambda x: (abs(x - centre), x))
    total = sum(rows.values())
    a, b, acc = poc, poc, rows[poc]
    while acc < frac * total and (a > lo or b < hi):
        up = [x for x in (b + 1, b + 2) if x <= hi]
        dn = [x for x in (a - 1, a - 2) if x >= lo]
        su, sd = sum(rows[x] for x in up), sum(rows[x] for x in dn)
        take_up = bool(up) and (not dn or su >= sd)
        take_dn = bool(dn) and (not up or sd >= su)
        if take_up:
            b, acc = max(up), acc + su
        if take_dn:
            a, acc = min(dn), acc + sd
    return poc, a, b


def ref_bars(events: list, cfg: OrderflowConfig) -> list[dict]:
    df = frame(events)
    tr = classify(df)
    tr["bar_start"] = tr.ts // cfg.bar_interval_ns * cfg.bar_interval_ns
    # large trades: consecutive fills of an instrument, same price and side, within the window
    tr["large_n"] = 0
    tr["large_vol"] = 0.0
    for inst, idx in tr.groupby("inst").groups.items():
        g = None
        for r in idx:
            p, s, t, v = tr.at[r, "price"], tr.at[r, "aggr"], tr.at[r, "ts"], tr.at[r, "size"]
            if g and s != 0 and s == g["side"] and p == g["price"] and 0 <= t - g["t0"] <= cfg.large_trade_window_ns:
                g["size"] += v
            else:
                g = {"side": s, "price": p, "t0": t, "size": v, "counted": False}
            if s != 0:
                if g["counted"]:
                    tr.at[r, "large_vol"] = v
                elif g["size"] >= cfg.large_trade_min_size:
                    g["counted"] = True
                    tr.at[r, "large_n"] = 1
                    tr.at[r, "large_vol"] = g["size"]
    market = df[df.kind.isin([K_TRADE, K_QUOTE, K_BOOK_LEVEL])]
    ended = df[df.kind == K_RECORDING_ENDED]
    out = []
    for (inst, start), bar in tr.groupby(["inst", "bar_start"]):
        end = start + cfg.bar_interval_ns
        last_row = bar.row.max()
        closers = market[(market.inst == inst) & (market.ts >= end) & (market.row > last_row)]
        enders = ended[ended.row > last_row]
        close_row = min(closers.row.min() if len(closers) else 10**12, enders.row.min())
        tick = TICKS[inst]
        tdate = int(bar.tdate.iloc[0])
        sess = tr[(tr.inst == inst) & (tr.tdate == tdate) & (tr.row <= last_row)]
        vwap = np.average(sess.price, weights=sess["size"])
        sd = math.sqrt(np.average((sess.price - vwap) ** 2, weights=sess["size"]))
        poc, va_lo, va_hi = ref_poc_va(sess.groupby("px_idx")["size"].sum(), cfg.value_area)
        bar_poc, _, _ = ref_poc_va(bar.groupby("px_idx")["size"].sum(), cfg.value_area)
        ask = bar[bar["aggr"] == 1].groupby("px_idx")["size"].sum()
        bid = bar[bar["aggr"] == -1].groupby("px_idx")["size"].sum()
        counts = {"ask": 0, "bid": 0, "stk_ask": 0, "stk_bid": 0}
        runs = {"ask": 0, "bid": 0}
        for x in range(bar.px_idx.min(), bar.px_idx.max() + 1):
            a, b = ask.get(x, 0.0), bid.get(x, 0.0)
            flags = {
                "ask": a > 0 and a >= cfg.imbalance_min_volume and a >= cfg.imbalance_ratio * bid.get(x - 1, 0.0),
                "bid": b > 0 and b >= cfg.imbalance_min_volume and b >= cfg.imbalance_ratio * ask.get(x + 1, 0.0),
            }
            for name, on in flags.items():
                runs[name] = runs[name] + 1 if on else 0
                counts[name] += on
                counts["stk_" + name] += runs[name] == cfg.stacked_min
        book_imb = math.nan
        if inst == 1:
            snap = df[(df.kind == K_BOOK_LEVEL) & (df.inst == inst) & (df.row < close_row)]
            if len(snap):
                begin = snap[(snap["flags"] & BATCH_BEGIN) != 0].row.max()
                last = snap[snap.row >= begin]
                bsum = last[last.book_side == 1]["size"].sum()
                asum = last[last.book_side == -1]["size"].sum()
                book_imb = (bsum - asum) / (bsum + asum)
        out.append({
            "close_row": close_row, "instrument": inst, "ts_event": end,
            "ts_recv": int(df.recv[close_row]), "bar_start": start,
            "open": bar.price.iloc[0], "high": bar.price.max(), "low": bar.price.min(),
            "close": bar.price.iloc[-1], "volume": bar["size"].sum(),
            "buy_volume": bar["size"][bar["aggr"] == 1].sum(), "sell_volume": bar["size"][bar["aggr"] == -1].sum(),
            "delta": bar.signed.sum(), "cum_delta": sess.signed.sum(), "trades": len(bar),
            "bar_poc": (bar.px_idx.min() + bar_poc - bar.px_idx.min()) * tick,
            "poc": poc * tick, "va_low": va_lo * tick, "va_high": va_hi * tick,
            "vwap": vwap, "vwap_sd": sd,
            "bid_imbalances": counts["bid"], "ask_imbalances": counts["ask"],
            "stacked_bid": counts["stk_bid"], "stacked_ask": counts["stk_ask"],
            "book_imbalance": book_imb, "large_trades": int(bar.large_n.sum()),
            "large_buy_volume": bar.large_vol[bar["aggr"] == 1].sum(),
            "large_sell_volume": bar.large_vol[bar["aggr"] == -1].sum(),
            "trading_date": tdate,
        })
    out.sort(key=lambda b: (b["close_row"], b["instrument"]))
    return out


def check_against_reference(events: list, cfg: OrderflowConfig = CFG) -> None:
    reducer = OrderflowReducer(cfg)
    bars = reducer.on_batch(ColumnBatch.from_events(events))
    want = ref_bars(events, cfg)
    assert len(bars) == len(want)
    for got, ref in zip(bars, want):
        for name, value in ref.items():
            if name == "close_row":
                continue
            have = getattr(got, name)
            if name in ("vwap", "vwap_sd", "book_imbalance"):
                assert have == pytest.approx(value, rel=1e-9, abs=1e-9, nan_ok=True), name
            else:
                assert have == value, (name, have, value)
    # the summary agrees with the trades
    tr = classify(frame(events))
    summary = reducer.summary()
    for inst, part in tr.groupby("inst"):
        s = summary[inst]
        assert s.trades == len(part)
        assert s.volume == part["size"].sum()
        assert s.cum_delta == part.signed.sum()
        assert s.buy_volume == part["size"][part["aggr"] == 1].sum()
        assert s.vwap == pytest.approx(np.average(part.price, weights=part["size"]), rel=1e-12)
        poc, lo, hi = ref_poc_va(part.groupby("px_idx")["size"].sum(), cfg.value_area)
        assert (s.poc, s.va_low, s.va_high) == (poc * TICKS[inst], lo * TICKS[inst], hi * TICKS[inst])
        assert (s.high, s.low, s.last) == (part.price.max(), part.price.min(), part.price.iloc[-1])


@pytest.mark.parametrize("seed,start", [(s, STARTS[s % len(STARTS)]) for s in range(7)])
def test_matches_pandas_reference_fixed_seeds(seed, start):
    check_against_reference(make_stream(seed, start, 700))


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 2**31), st.sampled_from(STARTS), st.integers(1, 400), st.booleans())
def test_matches_pandas_reference_property(seed, start, n, two):
    check_against_reference(make_stream(seed, start, n, two), CFG)


def test_streams_cross_trade_date_and_reset():
    # a Friday close stream: bars on both sides of 17:00 CT, cum delta restarts on Monday's date
    events = make_stream(3, STARTS[0], 900)
    bars = OrderflowReducer(CFG).on_batch(ColumnBatch.from_events(events))
    dates = {b.trading_date for b in bars}
    assert dates == {20240308, 20240311}
    first_monday = next(b for b in bars if b.trading_date == 20240311 and b.instrument == 1)
    assert first_monday.cum_delta == first_monday.delta
    assert first_monday.bar_start >= utc_ns("2024-03-08T23:00:00")


# --- batch-cut invariance -------------------------------------------------------------------


def run_cut(events: list, cut: int) -> tuple[bytes, dict[str, bytes]]:
    reducer = OrderflowReducer(CFG)
    codec = EventCodec()
    bars = []
    for lo in range(0, len(events), cut):
        bars.extend(reducer.on_batch(ColumnBatch.from_events(events[lo : lo + cut])))
    state = {k: v.tobytes() for k, v in reducer.state_arrays().items()}
    return codec.encode_many(bars), state


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31), st.sampled_from(STARTS), st.integers(40, 600))
def test_batch_cuts_give_identical_bits(seed, start, n):
    events = make_stream(seed, start, n)
    whole, whole_state = run_cut(events, 4096)
    assert len(whole) > 1
    for cut in (1, 7):
        bars, state = run_cut(events, cut)
        assert bars == whole
        assert state == whole_state


def test_price_axis_growth_keeps_bits():
    # a trend far beyond the initial price axis forces re-centring mid-stream
    t0 = STARTS[-1]
    events = [Trade(t0 + k * 10 * MS, t0 + k * 10 * MS, 1, 5000.0 + 0.25 * k * 3, 1.0, 1) for k in range(2000)]
    events.append(RecordingEnded(t0 + 30 * S, t0 + 30 * S, "r", "stopped"))
    whole, state = run_cut(events, 4096)
    assert run_cut(events, 7) == (whole, state)
    reducer = OrderflowReducer(CFG)
    reducer.on_batch(ColumnBatch.from_events(events))
    prof = reducer.profile(1)
    assert prof.volume.sum() == 2000 and prof.prices[0] == 5000.0 and prof.prices[-1] == 5000.0 + 0.25 * 3 * 1999


# --- hand-checked cases ---------------------------------------------------------------------


def trades_at(t0: int, fills: list[tuple[float, float, int]], step_ns: int = 10 * MS) -> list:
    return [Trade(t0 + k * step_ns, t0 + k * step_ns, 1, p, v, s) for k, (p, v, s) in enumerate(fills)]


def test_value_area_small_profile_by_hand():
    # volumes by price: 100.00:5 100.25:10 100.50:30 100.75:20 101.00:15 101.25:5 101.50:15
    # total 100, 70 % = 70. From the POC 100.50 (30): up pair 20+15=35 > down pair 10+5=15
    # -> 65, [100.50, 101.00]; up pair 5+15=20 > down 15 -> 85 >= 70: VA [100.50, 101.50].
    vols = {100.0: 5, 100.25: 10, 100.5: 30, 100.75: 20, 101.0: 15, 101.25: 5, 101.5: 15}
    t0 = STARTS[-1]
    events = trades_at(t0, [(p, float(v), 1) for p, v in vols.items()])
    reducer = OrderflowReducer(OrderflowConfig())
    reducer.on_batch(ColumnBatch.from_events(events))
    prof = reducer.profile(1)
    assert (prof.poc, prof.va_low, prof.va_high) == (100.5, 100.5, 101.5)
    assert list(prof.volume) == [5, 10, 30, 20, 15, 5, 15]


def test_value_area_tie_adds_both_sides_and_poc_tie_goes_to_centre():
    # 1 2 9 3 9 2 1 (one tick apart): POC tie between rows 2 and 4, both 1 from the centre
    # (row 3): the lower wins. From row 2: up pair 3+9=12 > down 2+1=3 -> 21 of 27 (target
    # 18.9) -> VA rows 2..4.
    t0 = STARTS[-1]
    fills = [(100 + 0.25 * k, float(v), -1) for k, v in enumerate([1, 2, 9, 3, 9, 2, 1])]
    reducer = OrderflowReducer(OrderflowConfig())
    reducer.on_batch(ColumnBatch.from_events(trades_at(t0, fills)))
    prof = reducer.profile(1)
    assert (prof.poc, prof.va_low, prof.va_high) == (100.5, 100.5, 101.0)
    # 4 4 [5] 4 4: the pairs tie (8 vs 8) so both are added: VA is the whole profile
    fills = [(200 + 0.25 * k, float(v), 1) for k, v in enumerate([4, 4, 5, 4, 4])]
    reducer = OrderflowReducer(OrderflowConfig())
    reducer.on_batch(ColumnBatch.from_events(trades_at(t0, fills)))
    prof = reducer.profile(1)
    assert (prof.poc, prof.va_low, prof.va_high) == (200.5, 200.0, 201.0)


def test_diagonal_imbalance_and_stack_by_hand():
    # bid volume (sells) at p - tick against ask volume (buys) at p, ratio 3, min volume 10:
    #   100.00 bid 5      100.25 ask 15 (>= 3 * 5: ask imbalance)
    #   100.25 bid 2      100.50 ask 30 (>= 3 * 2: ask imbalance)
    #   100.50 bid 4      100.75 ask 12 (>= 3 * 4: ask imbalance)  -> a stack of three
    #   100.75 bid 40     101.00 ask 9  (below the minimum volume)
    #   bid 40 at 100.75 vs ask 9 at 101.00: 40 >= 27 -> one bid imbalance
    t0 = STARTS[-1]
    fills = [(100.0, 5, -1), (100.25, 15, 1), (100.25, 2, -1), (100.5, 30, 1), (100.5, 4, -1),
             (100.75, 12, 1), (100.75, 40, -1), (101.0, 9, 1)]
    events = trades_at(t0, [(p, float(v), s) for p, v, s in fills], step_ns=10 * S // 8)
    events.append(RecordingEnded(t0 + 59 * S, t0 + 59 * S, "r", "stopped"))
    bars = OrderflowReducer(OrderflowConfig()).on_batch(ColumnBatch.from_events(events))
    assert len(bars) == 1
    bar = bars[0]
    assert (bar.ask_imbalances, bar.stacked_ask, bar.bid_imbalances, bar.stacked_bid) == (3, 1, 1, 0)
    assert bar.ts_recv == t0 + 59 * S and bar.ts_event == t0 + 60 * S


def test_large_trade_group_by_hand():
    # four 6-lot buys at 100.00 within 5 ms are one 24-lot order; a fill 6 ms after the first
    # starts a new group; a sell at the same price breaks nothing it does not belong to.
    t0 = STARTS[-1]
    events = [
        Trade(t0, t0, 1, 100.0, 6.0, 1),
        Trade(t0 + 1 * MS, t0, 1, 100.0, 6.0, 1),
        Trade(t0 + 2 * MS, t0, 1, 100.0, 6.0, 1),  # 18: not yet 20
        Trade(t0 + 4 * MS, t0, 1, 100.0, 6.0, 1),  # 24: a large buy order
        Trade(t0 + 6 * MS, t0, 1, 100.0, 19.0, 1),  # outside the window: its own group, 19
        Trade(t0 + 7 * MS, t0, 1, 100.0, 30.0, -1),  # a 30-lot sell: large
        Trade(t0 + 61 * S, t0 + 61 * S, 1, 100.0, 1.0, 1),  # closes the bar
    ]
    bars = OrderflowReducer(OrderflowConfig()).on_batch(ColumnBatch.from_events(events))
    assert len(bars) == 1
    bar = bars[0]
    assert (bar.large_trades, bar.large_buy_volume, bar.large_sell_volume) == (2, 24.0, 30.0)
    assert bar.ts_recv == t0 + 61 * S


def test_aggressor_fallbacks_by_hand():
    t0 = STARTS[-1]
    events = [
        Trade(t0, t0, 1, 100.0, 1.0, 0),  # nothing known: unknown side
        Quote(t0 + 1, t0, 1, 100.0, 5.0, 100.5, 5.0),
        Trade(t0 + 2, t0, 1, 100.5, 2.0, 0),  # at the ask: buy
        Trade(t0 + 3, t0, 1, 100.0, 4.0, 0),  # at the bid: sell
        Trade(t0 + 4, t0, 1, 100.375, 8.0, 0),  # inside, above the mid: buy
        Trade(t0 + 5, t0, 1, 100.25, 16.0, 0),  # at the mid: tick rule, downtick: sell
        Trade(t0 + 6, t0, 1, 100.25, 32.0, 0),  # at the mid, zero tick: previous side (sell)
        Trade(t0 + 7, t0, 1, 100.25, 64.0, 1),  # the source's flag wins
    ]
    reducer = OrderflowReducer(OrderflowConfig())
    reducer.on_batch(ColumnBatch.from_events(events))
    s = reducer.summary()[1]
    assert (s.buy_volume, s.sell_volume, s.volume) == (2 + 8 + 64, 4 + 16 + 32, 127)
    assert s.cum_delta == (2 + 8 + 64) - (4 + 16 + 32)
