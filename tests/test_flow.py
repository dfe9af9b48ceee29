"""Option flow (mia.analytics.flow): trade signing, OptionFlow bars and UnusualTrade against a plain
Python reference, the unusual thresholds at their edges, the flow-adjusted GEX against an
independent numpy computation, batch-cut independence, and GammaLevels unchanged without streams.
"""

from __future__ import annotations

import dataclasses
import math
import random

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mia.analytics._gamma_synth import synthetic_chain
from mia.analytics.calendar import trade_date_boundaries, trade_date_start_ns
from mia.analytics.flow import DEFAULT_CONFIG as DEFAULT_FLOW
from mia.analytics.flow import FlowConfig, FlowReducer, contract_key, flow_summary
from mia.analytics.gamma import GammaConfig, GammaReducer, compute_gamma, flow_gex
from mia.engine.columns import ColumnBatch
from mia.engine.errors import ConfigError
from mia.engine.events import (
    GammaLevels,
    IndexValue,
    OptionFlow,
    OptionQuote,
    OptionTrade,
    PolygonResponse,
    RecordingEnded,
    UnusualTrade,
)

SEC = 10**9
T0 = 1_750_082_400 * SEC  # 2025-06-16 14:00 UTC, a Monday (the trade date ends 22:00 UTC)
EXP = T0 + 2 * 86400 * SEC
NAN = math.nan


def contract(i: int, underlying: str = "SPX") -> dict:
    right = 1 if i % 2 == 0 else -1
    strike = 6000.0 + 5.0 * (i // 2)
    root = "SPXW" if underlying == "SPX" else "NDXP"
    ticker = f"O:{root}250618{'C' if right > 0 else 'P'}{int(strike * 1000):08d}"
    return dict(ticker=ticker, underlying=underlying, right=right, strike=strike, expiry_ns=EXP)


def trade(t: int, c: dict, price: float, size: float, conditions=(), seq: int = 0) -> OptionTrade:
    return OptionTrade(t, t + 1000, **c, price=price, size=size, conditions=list(conditions), sequence=seq)


def quote(t: int, c: dict, bid: float, ask: float) -> OptionQuote:
    return OptionQuote(t, t + 1000, **c, bid=bid, bid_size=10.0, ask=ask, ask_size=10.0)


def run_flow(events: list, cuts=(), config: FlowConfig = DEFAULT_FLOW, gamma: GammaReducer | None = None) -> list:
    """Fold `events` cut at `cuts` (gamma first, as the fold does); the derived events in order."""
    flow = FlowReducer(config, greeks=gamma)
    out = []
    bounds = [0, *sorted(set(cuts)), len(events)]
    for lo, hi in zip(bounds, bounds[1:]):
        if hi <= lo:
            continue
        batch = ColumnBatch.from_events(events[lo:hi])
        if gamma is not None:
            out.extend(gamma.on_batch(batch))
        out.extend(flow.on_batch(batch))
    return out


# --- the plain Python reference -----------------------------------------------------------------


def session_of(t: int) -> tuple[int, int]:
    start = trade_date_start_ns(t)
    return start, int(trade_date_boundaries(t + 1, t + 10 * 86400 * SEC)[0])


def reference(events: list, config: FlowConfig = DEFAULT_FLOW, greeks=None) -> list:
    """Row by row in plain Python. `greeks(i_row) -> {key: (delta, gamma)}, chain spot` or None."""
    iv_ns, mult = config.bar_interval_ns, config.multiplier
    nbbo, last, spot = {}, {}, {}
    bars: dict[str, dict] = {}
    sess: dict[str, tuple[int, int]] = {}
    contracts: dict[str, OptionTrade] = {}
    chain_greeks: dict[str, tuple[dict, float]] = {}
    und_order: dict[str, int] = {}  # underlyings by first sight: a recording end closes bars so
    out = []

    def close(u, ts_recv):
        b = bars.pop(u)
        by = sorted(b["by"].items(), key=lambda kv: (contracts[kv[0]].strike, contracts[kv[0]].expiry_ns,
                                                     contracts[kv[0]].right))
        out.append(OptionFlow(
            ts_event=b["end"], ts_recv=ts_recv, underlying=u, bar_start=b["start"], interval_ns=iv_ns,
            trades=b["trades"], contracts=b["c"], premium=b["p"], signed_contracts=b["sc"],
            signed_premium=b["sp"], signed_delta_notional=b["sd"], signed_gamma_notional=b["sg"],
            call_premium=b["cp"], put_premium=b["pp"], unusual=b["unusual"],
            strikes=[contracts[k].strike for k, _ in by], expiries=[contracts[k].expiry_ns for k, _ in by],
            rights=[contracts[k].right for k, _ in by], by_signed_contracts=[v[0] for _, v in by],
            by_signed_premium=[v[1] for _, v in by], by_signed_delta=[v[2] for _, v in by],
            by_signed_gamma=[v[3] for _, v in by]))

    for n, ev in enumerate(events):
        if greeks is not None:
            g = greeks(n)
            if g is not None:
                chain_greeks[g[0]] = (g[1], g[2])
        if isinstance(ev, RecordingEnded):
            for u in sorted(bars, key=und_order.__getitem__):
                close(u, ev.ts_recv)
            continue
        if isinstance(ev, IndexValue):
            u = ev.ticker.removeprefix("I:")
        elif isinstance(ev, (OptionTrade, OptionQuote)):
            u = ev.underlying
        else:
            continue
        und_order.setdefault(u, len(und_order))
        if isinstance(ev, OptionTrade):
            if set(ev.conditions) & set(config.cancel_conditions) or not ev.size > 0 or math.isnan(ev.price):
                continue
        if u in bars and ev.ts_event >= bars[u]["end"]:
            close(u, ev.ts_recv)
        if isinstance(ev, IndexValue):
            if ev.value > 0:
                spot[u] = ev.value
            continue
        key = contract_key(ev.ticker)
        if isinstance(ev, OptionQuote):
            nbbo[key] = (ev.bid, ev.ask)
            continue
        contracts.setdefault(key, ev)
        p, q = ev.price, ev.size
        bid, ask = nbbo.get(key, (NAN, NAN))
        s = 0
        if bid == bid and ask == ask and bid >= 0 and ask >= bid and ask > 0:
            if p >= ask:
                s = 1
            elif p <= bid:
                s = -1
            elif p > 0.5 * (bid + ask):
                s = 1
            elif p < 0.5 * (bid + ask):
                s = -1
        if s == 0 and key in last:
            lp, ls = last[key]
            s = 1 if p > lp else -1 if p < lp else ls
        last[key] = (p, s)
        if u not in sess or ev.ts_event >= sess[u][1]:
            sess[u] = session_of(ev.ts_event)
        premium = p * q * mult
        unusual = (premium >= config.unusual_premium or q >= config.unusual_size
                   or bool(set(ev.conditions) & set(config.sweep_conditions)))
        if u not in bars:
            aligned = ev.ts_event // iv_ns * iv_ns
            start = sess[u][0] if aligned < sess[u][0] <= ev.ts_event else aligned
            bars[u] = dict(start=start, end=min(aligned + iv_ns, sess[u][1]), trades=0, unusual=0, c=0.0,
                           p=0.0, sc=0.0, sp=0.0, sd=0.0, sg=0.0, cp=0.0, pp=0.0, by={})
        b = bars[u]
        gmap, cspot = chain_greeks.get(u, ({}, NAN))
        delta, gamma = gmap.get(key, (NAN, NAN))
        sp_ = spot.get(u, cspot)
        sq = s * q
        sd = sq * delta * sp_ * mult if delta == delta and sp_ == sp_ else 0.0
        sg = sq * gamma * sp_ * sp_ * 0.01 * mult if gamma == gamma and sp_ == sp_ else 0.0
        b["trades"] += 1
        b["unusual"] += int(unusual)
        b["c"] += q
        b["p"] += premium
        b["sc"] += sq
        b["sp"] += s * premium
        b["sd"] += sd
        b["sg"] += sg
        if ev.right > 0:
            b["cp"] += premium
        else:
            b["pp"] += premium
        acc = b["by"].setdefault(key, [0.0, 0.0, 0.0, 0.0])
        acc[0] += sq
        acc[1] += s * premium
        acc[2] += sd
        acc[3] += sg
        if unusual:
            reasons = [name for name, hit in (("premium", premium >= config.unusual_premium),
                                              ("size", q >= config.unusual_size),
                                              ("sweep", bool(set(ev.conditions) & set(config.sweep_conditions))))
                       if hit]
            out.append(UnusualTrade(ev.ts_event, ev.ts_recv, u, ev.ticker, ev.right, ev.strike, ev.expiry_ns,
                                    p, q, premium, s, reasons, list(ev.conditions), ev.sequence))
    return out


def enc(events: list) -> list[bytes]:
    return [msgspec.msgpack.encode(e) for e in events]


# --- scripted streams ---------------------------------------------------------------------------


def random_stream(seed: int, n: int = 600) -> list:
    rng = random.Random(seed)
    cs = [contract(i) for i in range(6)] + [contract(i, "NDX") for i in range(4)]
    t = T0 - 3 * 3600 * SEC
    out = []
    mids = {c["ticker"]: 10.0 + i for i, c in enumerate(cs)}
    books = {}
    for k in range(n):
        t += rng.choice([1, 50, 500, 2000, 20_000, 70_000]) * 10**6
        if k == n // 2:
            t = T0 + 9 * 3600 * SEC  # into the next trade date (22:00 UTC boundary)
        c = rng.choice(cs)
        tk = c["ticker"]
        r = rng.random()
        if r < 0.3:
            mid = mids[tk] = max(0.2, mids[tk] + rng.choice([-0.1, 0.0, 0.1]))
            kind = rng.random()
            bid, ask = ((mid - 0.1, mid + 0.1) if kind < 0.8 else (mid + 0.1, mid - 0.1) if kind < 0.88
                        else (NAN, mid) if kind < 0.94 else (0.0, 0.05))
            books[tk] = (bid, ask)
            out.append(quote(t, c, bid, ask))
        elif r < 0.9:
            bid, ask = books.get(tk, (mids[tk] - 0.1, mids[tk] + 0.1))
            ref = mids[tk]
            price = rng.choice([ask, ask + 0.05, bid, bid - 0.05, (bid + ask) / 2, ref + 0.03, ref - 0.03, ref])
            if price != price:
                price = ref
            size = rng.choice([1.0, 5.0, 10.0, 0.0, 999.0, 1000.0, 1500.0])
            cond = rng.choice([[], [], [209], [219], [201], [219, 209], [228]])
            out.append(trade(t, c, round(price, 2), size, cond, seq=k))
        elif r < 0.97:
            out.append(IndexValue(t, t + 1000, "I:" + c["underlying"], 6000.0 + rng.random()))
        else:
            out.append(RecordingEnded(t, t + 1000, "rec", "stopped"))
    out.append(RecordingEnded(t + SEC, t + SEC + 1000, "rec", "stopped"))
    return out


def test_every_signing_branch_on_a_fixed_script():
    c, d = contract(0), contract(1)
    t = T0
    ev = [
        trade(t + 1, c, 10.0, 1000),  # no NBBO, no previous trade: 0
        trade(t + 2, c, 10.1, 1000),  # no NBBO: uptick +1
        trade(t + 3, c, 10.0, 1000),  # downtick -1
        trade(t + 4, c, 10.0, 1000),  # zero tick: the previous sign, -1
        quote(t + 5, c, 9.9, 10.1),
        trade(t + 6, c, 10.1, 1000),  # at the ask +1
        trade(t + 7, c, 10.3, 1000),  # above the ask +1
        trade(t + 8, c, 9.9, 1000),  # at the bid -1
        trade(t + 9, c, 9.7, 1000),  # below the bid -1
        trade(t + 10, c, 10.05, 1000),  # above the mid +1
        trade(t + 11, c, 9.95, 1000),  # below the mid -1
        trade(t + 12, c, 10.0, 1000),  # at the mid: tick rule, up from 9.95: +1
        trade(t + 13, c, 10.0, 1000),  # at the mid, zero tick: keeps +1
        quote(t + 14, c, 10.2, 10.0),  # crossed: unusable
        trade(t + 15, c, 9.9, 1000),  # tick rule: down -1
        quote(t + 16, c, NAN, 10.0),  # one-sided: unusable
        trade(t + 17, c, 9.9, 1000),  # zero tick: -1
        quote(t + 18, c, 0.0, 0.05),  # zero bid is a usable NBBO
        trade(t + 19, c, 0.05, 1000),  # at the ask +1
        trade(t + 20, d, 5.0, 1000, [201]),  # canceled: left out
        trade(t + 21, d, 5.0, 1000),  # d's first trade (the canceled one did not count): 0
        quote(t + 22, d, 4.0, 6.0),
        trade(t + 23, d, 5.0, 1000),  # at the mid, zero tick from 5.0: keeps 0
    ]
    sides = [e.side for e in run_flow(ev) if isinstance(e, UnusualTrade)]
    assert sides == [0, 1, -1, -1, 1, 1, -1, -1, 1, -1, 1, 1, -1, -1, 1, 0, 0]
    assert enc(run_flow(ev)) == enc(reference(ev))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_flow_equals_the_python_reference_on_random_streams(seed):
    ev = random_stream(seed)
    got = run_flow(ev)
    ref = reference(ev)
    assert sum(isinstance(e, OptionFlow) for e in ref) > 20 and any(isinstance(e, UnusualTrade) for e in ref)
    assert enc(got) == enc(ref)
    # sums: the bars' trades equal the kept trades, the signed premium their signed sum
    flows = [e for e in got if isinstance(e, OptionFlow)]
    for f in flows:
        assert f.signed_contracts == pytest.approx(sum(f.by_signed_contracts))
        assert f.call_premium + f.put_premium == pytest.approx(f.premium)
        assert f.bar_start < f.ts_event and f.ts_event - f.bar_start <= 60 * SEC


@pytest.mark.parametrize("seed", [4, 5])
def test_any_batch_cut_gives_the_same_events(seed):
    ev = random_stream(seed, 300)
    whole = enc(run_flow(ev))
    rng = random.Random(seed)
    for _ in range(5):
        cuts = rng.sample(range(1, len(ev)), rng.randint(1, 40))
        assert enc(run_flow(ev, cuts)) == whole
    assert enc(run_flow(ev, range(1, len(ev)))) == whole  # one row a batch


@pytest.mark.parametrize(("price", "size", "conditions", "reasons"), [
    (99.99, 10.0, [], None),  # premium 99,990: below
    (100.0, 10.0, [], ["premium"]),  # exactly 100,000: at
    (100.01, 10.0, [], ["premium"]),  # above
    (0.5, 999.0, [], None),  # size below
    (0.5, 1000.0, [], ["size"]),  # size at
    (0.5, 1001.0, [], ["size"]),  # size above
    (1000.0, 1000.0, [219], ["premium", "size", "sweep"]),
    (0.5, 1.0, [219], ["sweep"]),  # Intermarket Sweep Order
    (0.5, 1.0, [209, 228], None),  # auto-execution, single-leg auction ISO: not a sweep
])
def test_unusual_thresholds_at_their_edges(price, size, conditions, reasons):
    ev = [trade(T0, contract(0), price, size, conditions, seq=7)]
    out = [e for e in run_flow(ev) if isinstance(e, UnusualTrade)]
    if reasons is None:
        assert out == []
    else:
        (u,) = out
        assert u.reasons == reasons and u.premium == price * size * 100 and u.sequence == 7


def test_thresholds_come_from_the_config():
    cfg = FlowConfig(unusual_premium=600.0, unusual_size=5.0, sweep_conditions=(209,))
    ev = [trade(T0, contract(0), 1.0, 4.0), trade(T0 + 1, contract(0), 1.0, 5.0),
          trade(T0 + 2, contract(0), 0.1, 1.0, [209])]
    out = [e.reasons for e in run_flow(ev, config=cfg) if isinstance(e, UnusualTrade)]
    assert out == [["size"], ["sweep"]]
    with pytest.raises(ConfigError):
        FlowConfig(bar_interval_s=0)


# --- greeks and the flow-adjusted GEX -----------------------------------------------------------


def tickers_of(chain) -> tuple[str, ...]:
    return tuple(f"O:SPXW{int(e) // 10**9:010d}{'C' if r > 0 else 'P'}{int(k * 1000):08d}"
                 for k, e, r in zip(chain.strike, chain.expiry_ns, chain.right))


BASE_CHAIN = synthetic_chain(400, seed=3, ts_ns=T0)
BASE_CHAIN = dataclasses.replace(BASE_CHAIN, tickers=tickers_of(BASE_CHAIN))


def parse_chain(pages: list[PolygonResponse]):
    return dataclasses.replace(BASE_CHAIN, ts_ns=pages[-1].ts_recv, snapshot_id=pages[-1].snapshot_id)


def page(t: int, snapshot_id: int) -> PolygonResponse:
    return PolygonResponse(t, t, "SPX", "/v3/snapshot/options/I:SPX", "", 200, "r", 0, b"{}", snapshot_id)


# contracts near the money expiring days after T0 (live at every chain of the tests)
LATER = [j for j in range(len(BASE_CHAIN)) if BASE_CHAIN.expiry_ns[j] > T0 + 3 * 86400 * SEC
         and abs(BASE_CHAIN.strike[j] - 6000) < 100]


def chain_contract(j: int) -> dict:
    c = BASE_CHAIN
    return dict(ticker=c.tickers[j], underlying="SPX", right=int(c.right[j]), strike=float(c.strike[j]),
                expiry_ns=int(c.expiry_ns[j]))


def chain_stream(seed: int) -> list:
    """Quotes and trades on chain contracts near the money, chain snapshots in between."""
    rng = random.Random(seed)
    near = [j for j in range(len(BASE_CHAIN)) if abs(BASE_CHAIN.strike[j] - 6000) < 150]
    picks = rng.sample(near, 12)
    t = T0 - 30 * 60 * SEC
    out, snap = [], 0
    for k in range(400):
        t += rng.choice([100, 3000, 40_000]) * 10**6
        c = chain_contract(rng.choice(picks))
        r = rng.random()
        if r < 0.3:
            out.append(quote(t, c, 9.9, 10.1))
        elif r < 0.93:
            out.append(trade(t, c, rng.choice([9.9, 10.1, 10.0, 10.05, 9.95]), float(rng.randint(1, 300))))
        elif r < 0.97:
            snap += 1
            out.append(page(t, snap))
        else:
            out.append(IndexValue(t, t, "I:SPX", 6001.0 + rng.random()))
    out.append(RecordingEnded(t + SEC, t + SEC, "rec", "stopped"))
    return out


def test_greeks_come_from_the_chain_before_each_trade():
    ev = chain_stream(11)
    gamma_cfg = GammaConfig()
    results: dict[int, tuple] = {}
    for n, e in enumerate(ev):  # what compute_gamma gives at each chain row
        if isinstance(e, PolygonResponse):
            r = compute_gamma(parse_chain([e]), gamma_cfg)
            results[n] = ("SPX", {contract_key(t): (d, g) for t, d, g in
                                  zip(BASE_CHAIN.tickers, r.delta.tolist(), r.gamma.tolist())}, float(r.spot))
    got = run_flow(ev, gamma=GammaReducer(parse_chain, gamma_cfg))
    flows = [e for e in got if not isinstance(e, GammaLevels)]
    ref = reference(ev, greeks=results.get)
    assert enc(flows) == enc(ref)
    assert any(f.signed_gamma_notional != 0 for f in flows if isinstance(f, OptionFlow))
    assert any(f.signed_delta_notional != 0 for f in flows if isinstance(f, OptionFlow))
    cuts = random.Random(1).sample(range(1, len(ev)), 30)
    again = run_flow(ev, cuts, gamma=GammaReducer(parse_chain, gamma_cfg))
    assert enc([e for e in again if not isinstance(e, GammaLevels)]) == enc(flows)
    assert enc([e for e in again if isinstance(e, GammaLevels)]) == enc([e for e in got if isinstance(e, GammaLevels)])


def independent_gex(chain, signed: np.ndarray, spot: float, cfg: GammaConfig):
    """Flow-adjusted GEX by strike and its zero-gamma flip, with numpy alone (Black-Scholes gamma
    from IV, r = q = 0, dealer sign x OI minus the customers' signed volume)."""
    t = np.maximum(chain.expiry_ns - chain.ts_ns, 60 * SEC) / (365 * 86400 * SEC)
    iv = chain.iv
    live = chain.expiry_ns > chain.ts_ns
    sign = np.where(chain.right > 0, 1.0, -1.0)
    dealer = sign * chain.open_interest - signed

    def gamma_at(s):
        d1 = (np.log(s / chain.strike) + 0.5 * iv**2 * t) / (iv * np.sqrt(t))
        return np.exp(-0.5 * d1**2) / np.sqrt(2 * np.pi) / (s * iv * np.sqrt(t))

    g = np.where(live, gamma_at(spot), 0.0)
    gex = dealer * 100.0 * g * spot**2 * 0.01
    strikes = np.unique(chain.strike[live])
    by = np.array([gex[live & (chain.strike == k)].sum() for k in strikes])
    grid = np.exp(np.linspace(np.log(spot * (1 - cfg.grid_width)), np.log(spot * (1 + cfg.grid_width)),
                              cfg.grid_points))
    curve = np.array([np.sum(np.where(live, dealer * 100.0 * gamma_at(s) * s * s * 0.01, 0.0)) for s in grid])
    flips = []
    for j in range(len(grid) - 1):
        a, b = curve[j], curve[j + 1]
        if a == 0 or (a < 0) != (b < 0):
            flips.append(grid[j] + (grid[j + 1] - grid[j]) * (0 - a) / (b - a))
    zero = min(flips, key=lambda x: abs(x - spot)) if flips else NAN
    return strikes, by, zero


def test_flow_adjusted_gex_against_numpy():
    cfg = GammaConfig()
    chain = BASE_CHAIN
    result = compute_gamma(chain, cfg)
    rng = np.random.default_rng(5)
    near = np.abs(chain.strike - chain.spot) < 300
    signed = np.where(near, rng.integers(-40_000, 40_000, len(chain)), 0).astype(float)
    f = flow_gex(result, chain, signed, cfg)
    strikes, by, zero = independent_gex(chain, signed, chain.spot, cfg)
    assert np.array_equal(f.strikes, strikes)
    np.testing.assert_allclose(f.gex_flow, by, rtol=1e-9, atol=1e-3)
    assert f.total_gex == pytest.approx(by.sum(), rel=1e-9)
    assert math.isfinite(f.zero_gamma) and f.zero_gamma == pytest.approx(zero, rel=1e-6)
    assert f.zero_gamma != pytest.approx(result.zero_gamma, rel=1e-4)  # the flow moved the flip
    assert f.contracts == signed[result.live].sum()
    _, by_oi, zero_oi = independent_gex(chain, np.zeros(len(chain)), chain.spot, cfg)
    np.testing.assert_allclose(f.gex_oi, by_oi, rtol=1e-9, atol=1e-3)
    assert result.zero_gamma == pytest.approx(zero_oi, rel=1e-6)
    # no flow: the OI picture, bit for bit
    z = flow_gex(result, chain, np.zeros(len(chain)), cfg)
    assert z.zero_gamma == result.zero_gamma and z.total_gex == result.total_gex
    assert np.array_equal(z.gex_flow, result.net_gex_by_strike)
    assert z.call_wall == result.call_wall and z.put_wall == result.put_wall


def test_gamma_levels_fold_the_signed_volume_of_the_trades_before_the_chain():
    j0, j1 = LATER[0], LATER[1]
    c0, c1 = chain_contract(j0), chain_contract(j1)
    ev = [quote(T0 - 9, c0, 9.9, 10.1), trade(T0 - 8, c0, 10.1, 500.0), trade(T0 - 7, c1, 5.0, 200.0),
          quote(T0 - 6, c1, 5.0, 6.0), trade(T0 - 5, c1, 5.0, 300.0), page(T0, 1),
          trade(T0 + 5, c0, 9.9, 10_000.0), page(T0 + 10 * SEC, 2)]
    cfg = GammaConfig()
    levels = [e for e in run_flow(ev, gamma=GammaReducer(parse_chain, cfg)) if isinstance(e, GammaLevels)]
    assert len(levels) == 2
    for lv, pg, expect in zip(levels, (ev[5], ev[7]),
                              ({j0: 500.0, j1: -300.0}, {j0: 500.0 - 10_000.0, j1: -300.0})):
        chain = parse_chain([pg])
        signed = np.zeros(len(chain))
        for j, v in expect.items():
            signed[j] = v
        r = compute_gamma(chain, cfg)
        f = flow_gex(r, chain, signed, cfg)
        assert lv.flow_contracts == sum(expect.values())
        assert lv.flow_zero_gamma == f.zero_gamma or (math.isnan(lv.flow_zero_gamma) and math.isnan(f.zero_gamma))
        assert lv.flow_total_gex == f.total_gex and lv.gex_flow == f.gex_flow.tolist()
        assert lv.gex_oi == r.net_gex_by_strike.tolist() and lv.gex_strikes == r.strikes.tolist()
        assert lv.total_gex == r.total_gex  # the OI fields are untouched
    # every batch cut gives the same levels
    whole = enc(levels)
    for cut in range(1, len(ev)):
        got = [e for e in run_flow(ev, [cut], gamma=GammaReducer(parse_chain, cfg)) if isinstance(e, GammaLevels)]
        assert enc(got) == whole, cut


def test_the_day_signed_volume_resets_at_the_trade_date():
    c0 = chain_contract(LATER[0])
    boundary = T0 + 8 * 3600 * SEC  # 22:00 UTC: 17:00 CDT opens the next trade date
    ev = [quote(T0, c0, 9.9, 10.1), trade(T0 + 1, c0, 10.1, 500.0),
          page(boundary + 60 * SEC, 1),  # the new trade date, no trade yet: no flow picture
          trade(boundary + 120 * SEC, c0, 9.9, 70.0), page(boundary + 180 * SEC, 2)]
    levels = [e for e in run_flow(ev, gamma=GammaReducer(parse_chain, GammaConfig())) if isinstance(e, GammaLevels)]
    assert math.isnan(levels[0].flow_contracts) and levels[0].gex_flow == []
    assert levels[1].flow_contracts == -70.0


def test_gamma_levels_without_streams_are_unchanged():
    """No option rows: the flow fields stay NaN / empty and the levels equal compute_gamma's."""
    ev = [page(T0, 1), IndexValue(T0 + 1, T0 + 1, "I:SPX", 6000.0), page(T0 + 60 * SEC, 2)]
    out = run_flow(ev, gamma=GammaReducer(parse_chain, GammaConfig()))
    levels = [e for e in out if isinstance(e, GammaLevels)]
    assert len(levels) == 2 and not any(isinstance(e, (OptionFlow, UnusualTrade)) for e in out)
    default = GammaLevels(**{f: getattr(levels[0], f) for f in GammaLevels.__struct_fields__
                             if not f.startswith(("flow_", "gex_"))})
    assert enc([levels[0]]) == enc([default])


def test_flow_summary_over_events():
    ev = random_stream(8, 200)
    out = run_flow(ev)
    s = flow_summary(out)
    flows = [e for e in out if isinstance(e, OptionFlow)]
    assert s["SPX"].trades == sum(f.trades for f in flows if f.underlying == "SPX")
    assert s["SPX"].unusual == sum(1 for e in out if isinstance(e, UnusualTrade) and e.underlying == "SPX")
    assert math.isnan(s["SPX"].flow_zero_gamma)


def test_sierra_levels_draw_the_flow_zero_gamma_when_there_is_one():
    from mia.analytics.levels import build_levels

    ev = [quote(T0 - 9, chain_contract(LATER[0]), 9.9, 10.1), trade(T0 - 8, chain_contract(LATER[0]), 10.1, 5000.0),
          page(T0, 1)]
    lv = [e for e in run_flow(ev, gamma=GammaReducer(parse_chain, GammaConfig())) if isinstance(e, GammaLevels)][-1]
    assert math.isfinite(lv.flow_zero_gamma)
    labels = {x.label: x.value for x in build_levels({"SPX": lv}, date="2025-06-16")}
    assert labels["SPX Flow Zero Gamma"] == lv.flow_zero_gamma
    plain = msgspec.structs.replace(lv, flow_zero_gamma=NAN)
    assert not any("Flow" in x.label for x in build_levels({"SPX": plain}, date="2025-06-16"))


def test_a_trade_with_a_bad_timestamp_is_left_out():
    c = contract(0)
    bad = OptionTrade(0, T0, **c, price=10.0, size=5000.0)  # ts_event 1970: left out, no crash
    ev = [trade(T0, c, 10.0, 1.0), bad, trade(T0 + 1, c, 10.5, 1.0), RecordingEnded(T0 + 2, T0 + 2, "r", "stopped")]
    out = run_flow(ev)
    (bar,) = [e for e in out if isinstance(e, OptionFlow)]
    assert bar.trades == 2 and not any(isinstance(e, UnusualTrade) for e in out)
    lv = [e for e in run_flow([*ev[:3], page(T0 + 5, 1)], gamma=GammaReducer(parse_chain, GammaConfig()))
          if isinstance(e, GammaLevels)]
    assert len(lv) == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("TTTQQIE"), st.integers(0, 2), st.integers(0, 8), st.integers(0, 3),
                          st.integers(0, 90_000), st.sampled_from(([], [219], [201], [209]))),
                min_size=1, max_size=60),
       st.lists(st.integers(1, 59), max_size=5))
def test_flow_equals_the_reference_on_any_sequence(script, cuts):
    """Any interleaving of trades, quotes (crossed, one-sided, zero bid), index values and
    recording ends: the reducer equals the reference, whatever the batch cuts."""
    cs = [contract(i) for i in range(2)] + [contract(0, "NDX")]
    t = T0
    ev = []
    for kind, ci, px, sz, dt_ms, cond in script:
        t += dt_ms * 10**6
        c = cs[ci]
        if kind == "T":
            ev.append(trade(t, c, 9.8 + 0.05 * px, (0.0, 1.0, 10.0, 1000.0)[sz], cond))
        elif kind == "Q":
            bid, ask = ((9.9, 10.1), (10.1, 9.9), (NAN, 10.0), (0.0, 0.05))[sz]
            ev.append(quote(t, c, bid, ask))
        elif kind == "I":
            ev.append(IndexValue(t, t, "I:" + c["underlying"], 6000.0 + px))
        else:
            ev.append(RecordingEnded(t, t, "r", "stopped"))
    want = enc(reference(ev))
    assert enc(run_flow(ev)) == want
    assert enc(run_flow(ev, [c for c in cuts if c < len(ev)])) == want
