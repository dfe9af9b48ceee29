"""The day report: one self-contained HTML file of charts and tables (`mia report`).

Charts are PNGs drawn with matplotlib (Agg, no display) and embedded as base64 data URIs, so the
file has no external resource and opens anywhere. Every figure also states the values it draws
(``Report.figures``, embedded in the page as JSON in ``<script id="mia-figures">`` and as
``data-`` attributes), so a test or a script can check a chart without reading pixels.

Pure of the log: the caller (``mia.replay.outputs``) replays the day and hands the results in.
matplotlib is an optional extra: ``pip install 'mia[report]'``.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
from collections.abc import Callable, Sequence
from typing import Union

import msgspec
import numpy as np

from ..engine.clock import utc_datetime
from ..engine.errors import MiaError
from ..engine.events import GammaLevels, IvSurface, OptionFlow, OrderflowBar, TermStructure
from ..engine.jsonenc import to_json
from .gamma import GammaResult

logger = logging.getLogger(__name__)

__all__ = [
    "FigureValues",
    "FlowGexFigure",
    "FlowInput",
    "GammaInput",
    "GammaProfileFigure",
    "GexFigure",
    "LevelsFigure",
    "MissingExtraError",
    "OptionFlowFigure",
    "PriceFigure",
    "ProfileFigure",
    "Report",
    "SmileFigure",
    "VxCurveFigure",
    "build_report",
    "vwap_bands",
]

NAN = math.nan
MAX_POINTS = 20_000  # price-line points per chart; more are thinned (every k-th trade)
USD_PER_BN = 1e9  # GEX is drawn in $bn per 1% move


class MissingExtraError(MiaError):
    """An optional dependency (an extra of the mia package) is not installed."""


class FlowInput(msgspec.Struct, frozen=True):
    """One futures symbol's day: its trades and its volume profile."""

    symbol: str
    ts: np.ndarray  # int64 ns
    price: np.ndarray
    size: np.ndarray
    side: np.ndarray  # +1 buy, -1 sell, 0 unknown
    profile_prices: np.ndarray
    profile_volume: np.ndarray
    poc: float
    va_low: float
    va_high: float
    bars: Sequence[OrderflowBar] = ()


class GammaInput(msgspec.Struct, frozen=True):
    """One underlying: its last GammaLevels and the by-strike arrays of the chain behind them
    (None when no chain was computed)."""

    levels: GammaLevels
    result: GammaResult | None = None


# --- the values each figure draws (NaN, JSON null, where there is nothing to draw) -------------


class Figure(msgspec.Struct, frozen=True, kw_only=True):
    """Base of the values of one figure; field names are the keys of its JSON."""


class PriceFigure(Figure):
    """``price-SYM``: trade price, VWAP and its bands, cumulative delta (of the trades drawn)."""

    symbol: str
    trades: int
    last: float
    vwap: float
    vwap_sd: float
    cum_delta: float
    bars: int


class ProfileFigure(Figure):
    """``profile-SYM``: the volume profile with POC and value area."""

    symbol: str
    poc: float
    va_low: float
    va_high: float
    volume: float


class GexFigure(Figure):
    """``gex-U``: GEX by strike and the marked levels; `strikes` drawn (0 without a chain)."""

    underlying: str
    ts: int
    spot: float
    zero_gamma: float
    call_wall: float
    put_wall: float
    max_pain: float
    total_gex: float
    dealer_bias: float
    stale: bool
    strikes: int = 0
    net_gex_sum: float = NAN


class GammaProfileFigure(Figure):
    """``gamma-profile-U``: total GEX over the spot grid and the zero-gamma crossings."""

    underlying: str
    spot: float
    zero_gamma: float
    grid_low: float = NAN
    grid_high: float = NAN
    crossings: list[float] = []


class LevelsFigure(Figure):
    """``levels-U``: the key levels and dealer bias of each chain snapshot of the day."""

    underlying: str
    points: int
    last_dealer_bias: float


class VxCurveFigure(Figure):
    """``vx-curve``: each VX contract's price, the VIX and the 30-day constant maturity through
    the day, and the last curve against days to expiry."""

    points: int
    contracts: list[str]
    last_vix: float
    last_cm30: float
    last_contango: float


class SmileFigure(Figure):
    """``smile-U``: each expiry's smile (IV by strike) of the last IvSurface, and the ATM term
    structure (ATM IV by days to expiry)."""

    underlying: str
    ts: int
    expiries: int
    smile_points: int
    atm_iv: list[float] = []
    stale: bool = False


class OptionFlowFigure(Figure):
    """``flow-U``: the customers' signed option flow by strike over the day's OptionFlow bars
    (signed premium, calls and puts stacked) and the signed contracts."""

    underlying: str
    bars: int
    trades: int
    premium: float
    signed_premium: float
    signed_contracts: float
    strikes: int
    top_strike: float  # the strike with the largest |signed premium|


class FlowGexFigure(Figure):
    """``flow-gex-U``: GEX by strike with the day's signed customer volume folded into open
    interest, beside the OI-only GEX, from the last GammaLevels that carries both."""

    underlying: str
    ts: int
    spot: float
    zero_gamma: float
    flow_zero_gamma: float
    total_gex: float
    flow_total_gex: float
    call_wall: float
    flow_call_wall: float
    put_wall: float
    flow_put_wall: float
    flow_contracts: float
    strikes: int


FigureValues = Union[PriceFigure, ProfileFigure, GexFigure, GammaProfileFigure, LevelsFigure,
                     VxCurveFigure, SmileFigure, OptionFlowFigure, FlowGexFigure]


class Report(msgspec.Struct, frozen=True):
    """The page and, per figure id, the values that figure draws (JSON: `engine.jsonenc.to_json`)."""

    html: str
    figures: dict[str, FigureValues] = {}


def vwap_bands(price: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Running volume-weighted average price and its volume-weighted standard deviation."""
    v = np.cumsum(size, dtype=np.float64)
    pv = np.cumsum(price * size, dtype=np.float64)
    ppv = np.cumsum(price * price * size, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = pv / v
        var = np.maximum(ppv / v - vwap * vwap, 0.0)
    return vwap, np.sqrt(var)


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError("mia report needs matplotlib: pip install 'mia[report]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(plt, fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _times(ts: np.ndarray) -> np.ndarray:
    return np.asarray(ts, dtype=np.int64).astype("datetime64[ns]")


def _thin(n: int) -> slice:
    return slice(None, None, max(1, math.ceil(n / MAX_POINTS)))


# --- figures ------------------------------------------------------------------------------------


def _last(a: np.ndarray, empty: float = NAN) -> float:
    return float(a[-1]) if a.size else empty


def _flow_figure(plt, f: FlowInput) -> tuple[str, PriceFigure]:
    vwap, sd = vwap_bands(f.price, f.size)
    delta = np.cumsum(f.size * np.sign(f.side), dtype=np.float64)
    values = PriceFigure(symbol=f.symbol, trades=int(f.price.size), last=_last(f.price), vwap=_last(vwap),
                         vwap_sd=_last(sd), cum_delta=_last(delta, 0.0), bars=len(f.bars))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 6), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 1]})
    if f.price.size:
        t = _times(f.ts)
        k = _thin(t.size)
        ax1.plot(t[k], f.price[k], lw=0.7, color="#222222", label="trade price")
        ax1.plot(t[k], vwap[k], lw=1.2, color="#008000", label="VWAP")
        for mult, alpha in ((1, 0.18), (2, 0.08)):
            ax1.fill_between(t[k], (vwap - mult * sd)[k], (vwap + mult * sd)[k], color="#008000",
                             alpha=alpha, lw=0, label=f"VWAP ±{mult} SD")
        ax2.plot(t[k], delta[k], lw=1.0, color="#1f4e9c", label="cumulative delta")
        ax2.axhline(0, color="#999999", lw=0.6)
    # A bar is drawn at its close boundary; the last bar of a recording that stopped mid-bar
    # closes after the last trade and would stretch the time axis, so it is left out.
    bars = [b for b in f.bars if not f.ts.size or b.ts_event <= int(f.ts[-1])]
    if bars:
        bt = _times(np.array([b.ts_event for b in bars]))
        ax1.scatter(bt, [b.close for b in bars], s=12, color="#c00000", zorder=3, label="bar close")
        ax2.scatter(bt, [b.cum_delta for b in bars], s=12, color="#c00000", zorder=3,
                    label="bar cum. delta (trade date)")
    ax1.set_title(f"{f.symbol}: price, VWAP bands")
    ax1.legend(loc="upper left", fontsize=8)
    ax2.set_ylabel("delta")
    ax2.legend(loc="upper left", fontsize=8)
    ax2.set_xlabel("UTC")
    fig.autofmt_xdate()
    return _png(plt, fig), values


def _profile_figure(plt, f: FlowInput) -> tuple[str, ProfileFigure]:
    values = ProfileFigure(symbol=f.symbol, poc=float(f.poc), va_low=float(f.va_low), va_high=float(f.va_high),
                           volume=float(np.sum(f.profile_volume)))
    fig, ax = plt.subplots(figsize=(6, 6))
    if f.profile_prices.size:
        step = float(np.min(np.diff(f.profile_prices))) if f.profile_prices.size > 1 else 1.0
        in_va = (f.profile_prices >= f.va_low) & (f.profile_prices <= f.va_high)
        colors = np.where(in_va, "#5b8fd6", "#b8c7dd")
        ax.barh(f.profile_prices, f.profile_volume, height=step * 0.9, color=colors)
        if math.isfinite(values.poc):
            ax.axhline(f.poc, color="#d000d0", lw=1.5, label=f"POC {f.poc:g}")
        if math.isfinite(values.va_low) and math.isfinite(values.va_high):
            ax.axhspan(f.va_low, f.va_high, color="#5b8fd6", alpha=0.08,
                       label=f"value area {f.va_low:g}-{f.va_high:g}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"{f.symbol}: volume profile")
    ax.set_xlabel("volume")
    return _png(plt, fig), values


_MARKS = (("spot", "#222222", "-"), ("zero_gamma", "#ff8c00", "--"), ("call_wall", "#00a000", "-"),
          ("put_wall", "#a000a0", "-"), ("max_pain", "#808080", ":"))


def _mark(ax, values: Figure, horizontal: bool = False) -> None:
    """A line at each of the marked levels the figure carries (spot, zero gamma, walls, max pain)."""
    for name, color, style in _MARKS:
        v = getattr(values, name, NAN)
        if not math.isfinite(v):
            continue
        label = f"{name.replace('_', ' ')} {v:g}"
        if horizontal:
            ax.axhline(v, color=color, ls=style, lw=1.2, label=label)
        else:
            ax.axvline(v, color=color, ls=style, lw=1.2, label=label)


def _gex_figure(plt, gi: GammaInput) -> tuple[str, GexFigure]:
    g = gi.levels
    n_strikes, net_gex_sum = 0, NAN
    fig, ax = plt.subplots(figsize=(11, 5))
    r = gi.result
    if r is not None and len(r.strikes):
        lo, hi = (float(r.profile_grid[0]), float(r.profile_grid[-1])) if len(r.profile_grid) \
            else (float(r.strikes[0]), float(r.strikes[-1]))
        sel = (r.strikes >= lo) & (r.strikes <= hi)
        strikes = r.strikes[sel]
        width = float(np.min(np.diff(strikes))) * 0.8 if strikes.size > 1 else 1.0
        ax.bar(strikes, r.call_gex_by_strike[sel] / USD_PER_BN, width=width, color="#00a000", alpha=0.6,
               label="call GEX")
        ax.bar(strikes, r.put_gex_by_strike[sel] / USD_PER_BN, width=width, color="#a000a0", alpha=0.6,
               label="put GEX")
        ax.plot(strikes, r.net_gex_by_strike[sel] / USD_PER_BN, color="#1f4e9c", lw=1.0, label="net GEX")
        n_strikes, net_gex_sum = int(strikes.size), float(np.sum(r.net_gex_by_strike))
    values = GexFigure(underlying=g.underlying, ts=g.ts_event, spot=g.spot, zero_gamma=g.zero_gamma,
                       call_wall=g.call_wall, put_wall=g.put_wall, max_pain=g.max_pain, total_gex=g.total_gex,
                       dealer_bias=g.dealer_bias, stale=bool(g.stale), strikes=n_strikes,
                       net_gex_sum=net_gex_sum)
    ax.axhline(0, color="#999999", lw=0.6)
    _mark(ax, values)
    ax.set_title(f"{g.underlying}: gamma exposure by strike ($bn per 1% move)"
                 + (" (stale)" if g.stale else ""))
    ax.set_xlabel("strike")
    ax.legend(loc="upper left", fontsize=8)
    return _png(plt, fig), values


def _gamma_profile_figure(plt, gi: GammaInput) -> tuple[str, GammaProfileFigure]:
    g = gi.levels
    values = GammaProfileFigure(underlying=g.underlying, spot=g.spot, zero_gamma=g.zero_gamma)
    fig, ax = plt.subplots(figsize=(11, 4))
    r = gi.result
    if r is not None and len(r.profile_grid):
        ax.plot(r.profile_grid, r.profile_gex / USD_PER_BN, color="#1f4e9c", lw=1.5, label="total GEX at spot")
        ax.fill_between(r.profile_grid, r.profile_gex / USD_PER_BN, 0, where=r.profile_gex < 0,
                        color="#c00000", alpha=0.12, lw=0)
        values = msgspec.structs.replace(
            values, grid_low=float(r.profile_grid[0]), grid_high=float(r.profile_grid[-1]),
            crossings=[float(x) for x in r.zero_gamma_crossings if math.isfinite(x)])
    ax.axhline(0, color="#999999", lw=0.6)
    _mark(ax, values)
    ax.set_title(f"{g.underlying}: gamma profile (sticky strike) and the zero-gamma flip")
    ax.set_xlabel(f"{g.underlying} level")
    ax.set_ylabel("$bn per 1%")
    ax.legend(loc="upper left", fontsize=8)
    return _png(plt, fig), values


def _history_figure(plt, underlying: str, history: Sequence[GammaLevels]) -> tuple[str, LevelsFigure]:
    rows = [g for g in history if g.underlying == underlying]
    t = _times(np.array([g.ts_recv for g in rows], dtype=np.int64))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 6), sharex=True,
                                   gridspec_kw={"height_ratios": [3, 1]})
    for name, color, style in _MARKS:
        ys = np.array([getattr(g, name) for g in rows], dtype=np.float64)
        ax1.step(t, ys, where="post", color=color, ls=style, lw=1.2, label=name.replace("_", " "),
                 marker="o", ms=3)
    bias = np.array([g.dealer_bias for g in rows], dtype=np.float64)
    ax2.step(t, bias, where="post", color="#1f4e9c", marker="o", ms=3)
    ax2.axhline(0, color="#999999", lw=0.6)
    ax2.set_ylim(-1.05, 1.05)
    ax2.set_ylabel("dealer bias")
    ax1.set_title(f"{underlying}: key levels and dealer bias through the day")
    ax1.legend(loc="upper left", fontsize=8)
    ax2.set_xlabel("UTC")
    fig.autofmt_xdate()
    values = LevelsFigure(underlying=underlying, points=len(rows), last_dealer_bias=_last(bias))
    return _png(plt, fig), values


def _vx_curve_figure(plt, history: Sequence[TermStructure]) -> tuple[str, VxCurveFigure]:
    last = history[-1]
    contracts: list[str] = []
    for ts in history:
        contracts += [s for s in ts.symbols if s not in contracts]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    t = _times(np.array([ts.ts_recv for ts in history], dtype=np.int64))
    for sym in contracts:
        ys = np.array([ts.prices[ts.symbols.index(sym)] if sym in ts.symbols else NAN for ts in history])
        ax1.step(t, ys, where="post", lw=1.0, label=sym)
    ax1.step(t, np.array([ts.vix for ts in history]), where="post", color="#222222", lw=1.6, label="VIX")
    ax1.step(t, np.array([ts.cm30 for ts in history]), where="post", color="#c000c0", lw=1.6, ls="--",
             label="30-day CM")
    ax1.set_title("VIX and the VX futures through the day")
    ax1.set_xlabel("UTC")
    ax1.legend(loc="upper left", fontsize=7, ncol=2)
    ax2.plot(last.days, last.prices, marker="o", color="#1f4e9c", label="VX curve")
    for d, p, sym in zip(last.days, last.prices, last.symbols):
        ax2.annotate(sym, (d, p), fontsize=7, xytext=(2, 4), textcoords="offset points")
    if math.isfinite(last.vix):
        ax2.axhline(last.vix, color="#222222", lw=1.0, label=f"VIX {last.vix:g}")
    if math.isfinite(last.cm30):
        ax2.scatter([30.0], [last.cm30], color="#c000c0", zorder=3, label=f"30-day CM {last.cm30:.2f}")
    ax2.set_title(f"last curve ({_utc(last.ts_recv)} UTC)")
    ax2.set_xlabel("days to settlement")
    ax2.legend(loc="lower right", fontsize=7)
    fig.autofmt_xdate()
    values = VxCurveFigure(points=len(history), contracts=contracts, last_vix=last.vix, last_cm30=last.cm30,
                           last_contango=last.contango)
    return _png(plt, fig), values


def _smile_figure(plt, s: IvSurface) -> tuple[str, SmileFigure]:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    start = 0
    days = (np.asarray(s.expiries, dtype=np.int64) - s.chain_ts) / 86_400e9
    for j, n in enumerate(s.smile_count):
        ks = s.smile_strikes[start:start + n]
        ivs = s.smile_iv[start:start + n]
        start += n
        if n:
            ax1.plot(ks, np.asarray(ivs) * 100, lw=1.0, label=f"{utc_datetime(s.expiries[j]):%Y-%m-%d}")
    ax1.axvline(s.spot, color="#222222", lw=0.8, ls=":", label=f"spot {s.spot:g}")
    ax1.set_title(f"{s.underlying}: smile by expiry (IV %, out-of-the-money side)" + (" (stale)" if s.stale else ""))
    ax1.set_xlabel("strike")
    if s.expiries:
        ax1.legend(loc="upper right", fontsize=6, ncol=2)
    atm = np.asarray(s.atm_iv, dtype=np.float64)
    ax2.plot(days, atm * 100, marker="o", color="#1f4e9c", label="ATM IV")
    ax2.plot(days, np.asarray(s.rr25) * 100, marker=".", color="#a000a0", label="25d risk reversal")
    ax2.plot(days, np.asarray(s.bf25) * 100, marker=".", color="#00a000", label="25d butterfly")
    ax2.axhline(0, color="#999999", lw=0.6)
    ax2.set_xscale("symlog", linthresh=1.0)
    ax2.set_title("ATM term structure and 25-delta skew (vol points)")
    ax2.set_xlabel("days to expiry")
    ax2.legend(loc="upper right", fontsize=7)
    values = SmileFigure(underlying=s.underlying, ts=s.ts_event, expiries=len(s.expiries),
                         smile_points=len(s.smile_iv), atm_iv=[float(x) for x in s.atm_iv], stale=s.stale)
    return _png(plt, fig), values


# --- page ---------------------------------------------------------------------------------------


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
figure{margin:12px 0}img{max-width:100%}figcaption{font-size:12px;color:#555}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ddd;padding:3px 6px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.muted{color:#777;font-size:12px}
"""


def _option_flow_figure(plt, underlying: str, bars: Sequence[OptionFlow],
                        spot: float = NAN) -> tuple[str, OptionFlowFigure]:
    by: dict[tuple[float, int], list[float]] = {}
    for b in bars:
        for k, r, c, p in zip(b.strikes, b.rights, b.by_signed_contracts, b.by_signed_premium):
            acc = by.setdefault((float(k), int(r)), [0.0, 0.0])
            acc[0] += c
            acc[1] += p
    strikes = np.array(sorted({k for k, _ in by}), dtype=np.float64)
    call_p = np.array([by.get((k, 1), [0.0, 0.0])[1] for k in strikes])
    put_p = np.array([by.get((k, -1), [0.0, 0.0])[1] for k in strikes])
    contracts = np.array([by.get((k, 1), [0.0, 0.0])[0] + by.get((k, -1), [0.0, 0.0])[0] for k in strikes])
    net = call_p + put_p
    top = float(strikes[int(np.argmax(np.abs(net)))]) if strikes.size and np.abs(net).max() > 0 else NAN
    values = OptionFlowFigure(
        underlying=underlying, bars=len(bars), trades=sum(b.trades for b in bars),
        premium=float(sum(b.premium for b in bars)), signed_premium=float(sum(b.signed_premium for b in bars)),
        signed_contracts=float(sum(b.signed_contracts for b in bars)), strikes=int(strikes.size),
        top_strike=top)
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(11, 6), sharex=True, height_ratios=(2, 1))
    if strikes.size:
        width = float(np.min(np.diff(strikes))) * 0.8 if strikes.size > 1 else 1.0
        ax.bar(strikes, call_p / 1e6, width=width, color="#00a000", alpha=0.7, label="calls")
        ax.bar(strikes, put_p / 1e6, width=width, bottom=np.where(np.sign(put_p) == np.sign(call_p), call_p, 0) / 1e6,
               color="#a000a0", alpha=0.7, label="puts")
        ax2.bar(strikes, contracts, width=width, color="#1f4e9c", alpha=0.7, label="signed contracts")
    for a in (ax, ax2):
        a.axhline(0, color="#999999", lw=0.6)
    if math.isfinite(spot) and strikes.size and np.any(np.abs(strikes - spot) <= 0.1 * spot):
        ax.set_xlim(spot * 0.9, spot * 1.1)  # the strikes that matter; every strike is in the values
        ax.axvline(spot, color="#222222", lw=1.0, label=f"spot {spot:g}")
    ax.set_title(f"{underlying}: customer option flow by strike (signed premium, $m; + bought, - sold)")
    ax.legend(loc="upper left", fontsize=8)
    ax2.set_xlabel("strike")
    ax2.set_ylabel("contracts")
    return _png(plt, fig), values


def _flow_gex_figure(plt, g: GammaLevels) -> tuple[str, FlowGexFigure]:
    strikes = np.asarray(g.gex_strikes, dtype=np.float64)
    oi = np.asarray(g.gex_oi, dtype=np.float64)
    flow = np.asarray(g.gex_flow, dtype=np.float64)
    values = FlowGexFigure(
        underlying=g.underlying, ts=g.ts_event, spot=g.spot, zero_gamma=g.zero_gamma,
        flow_zero_gamma=g.flow_zero_gamma, total_gex=g.total_gex, flow_total_gex=g.flow_total_gex,
        call_wall=g.call_wall, flow_call_wall=g.flow_call_wall, put_wall=g.put_wall,
        flow_put_wall=g.flow_put_wall, flow_contracts=g.flow_contracts, strikes=int(strikes.size))
    fig, ax = plt.subplots(figsize=(11, 5))
    if strikes.size:
        lo, hi = g.spot * 0.9, g.spot * 1.1
        sel = (strikes >= lo) & (strikes <= hi) if math.isfinite(g.spot) else np.ones(strikes.size, bool)
        width = float(np.min(np.diff(strikes[sel]))) * 0.4 if sel.sum() > 1 else 1.0
        ax.bar(strikes[sel] - width / 2, oi[sel] / USD_PER_BN, width=width, color="#1f4e9c", alpha=0.6,
               label="OI only")
        ax.bar(strikes[sel] + width / 2, flow[sel] / USD_PER_BN, width=width, color="#ff8c00", alpha=0.7,
               label="OI + signed flow")
    ax.axhline(0, color="#999999", lw=0.6)
    for name, v, color, style in (("spot", g.spot, "#222222", "-"), ("zero gamma", g.zero_gamma, "#1f4e9c", "--"),
                                  ("flow zero gamma", g.flow_zero_gamma, "#ff8c00", "--")):
        if math.isfinite(v):
            ax.axvline(v, color=color, ls=style, lw=1.2, label=f"{name} {v:g}")
    ax.set_title(f"{g.underlying}: net GEX by strike, OI only and flow-adjusted ($bn per 1% move)")
    ax.set_xlabel("strike")
    ax.legend(loc="upper left", fontsize=8)
    return _png(plt, fig), values


def _fmt(x: float, digits: int = 2) -> str:
    v = float(x)
    return f"{v:,.{digits}f}" if math.isfinite(v) else "-"


def _utc(ns: int) -> str:
    return f"{utc_datetime(ns):%H:%M:%S}"


def _figure_html(fig_id: str, png: str, values: Figure, caption: str) -> str:
    scalars = ((k, getattr(values, k)) for k in values.__struct_fields__)
    attrs = " ".join(
        f'data-{k.replace("_", "-")}="{html.escape(to_json(v))}"'
        for k, v in scalars if isinstance(v, (int, float, str, bool)))
    return (f'<figure id="{html.escape(fig_id)}" {attrs}>'
            f'<img alt="{html.escape(caption)}" src="data:image/png;base64,{png}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _history_table(history: Sequence[GammaLevels]) -> str:
    head = ("<tr><th class=l>time UTC</th><th class=l>underlying</th><th>spot</th><th>zero gamma</th>"
            "<th>call wall</th><th>put wall</th><th>max pain</th><th>total GEX $bn</th>"
            "<th>P/C OI</th><th>dealer bias</th><th class=l>stale</th></tr>")
    rows = []
    for g in history:
        rows.append(f"<tr><td class=l>{_utc(g.ts_recv)}</td><td class=l>{html.escape(g.underlying)}</td>"
                    f"<td>{_fmt(g.spot)}</td><td>{_fmt(g.zero_gamma)}</td><td>{_fmt(g.call_wall)}</td>"
                    f"<td>{_fmt(g.put_wall)}</td><td>{_fmt(g.max_pain)}</td>"
                    f"<td>{_fmt(g.total_gex / USD_PER_BN)}</td>"
                    f"<td>{_fmt(g.pcr_oi)}</td><td>{_fmt(g.dealer_bias, 3)}</td>"
                    f"<td class=l>{'stale' if g.stale else ''}</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def build_report(date: str, flows: Sequence[FlowInput], gammas: Sequence[GammaInput],
                 history: Sequence[GammaLevels], *, subtitle: str = "",
                 progress: Callable[[int, int], None] | None = None,
                 term_history: Sequence[TermStructure] = (),
                 surfaces: Sequence[IvSurface] = (),
                 option_flows: Sequence[OptionFlow] = ()) -> Report:
    """The HTML page and, per figure id, the values that figure draws.

    Figure ids: ``price-SYM``, ``profile-SYM`` per futures symbol; ``gex-U``, ``gamma-profile-U``,
    ``levels-U`` per underlying. The gamma figures mark the values of ``GammaInput.levels``.
    Volatility: ``vx-curve`` from `term_history` (the day's TermStructure events) and ``smile-U``
    per IvSurface of `surfaces` (the last of each underlying). Option flow: ``flow-U`` from
    `option_flows` (the day's OptionFlow bars) and ``flow-gex-U`` from the last GammaLevels of
    `history` with a flow-adjusted picture.
    """
    plt = _pyplot()
    underlyings = sorted({g.underlying for g in history} | {gi.levels.underlying for gi in gammas})
    flow_bars: dict[str, list[OptionFlow]] = {}
    for b in option_flows:
        flow_bars.setdefault(b.underlying, []).append(b)
    flow_gex: dict[str, GammaLevels] = {g.underlying: g for g in history if g.gex_strikes}
    total = (2 * len(flows) + 2 * len(gammas) + len(underlyings) + bool(term_history) + len(surfaces)
             + len(flow_bars) + len(flow_gex))
    done = 0
    figures: dict[str, FigureValues] = {}
    parts: list[str] = []

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    if flows:
        parts.append("<h2>Order flow</h2>")
    for f in flows:
        png, vals = _flow_figure(plt, f)
        figures[f"price-{f.symbol}"] = vals
        parts.append(_figure_html(f"price-{f.symbol}", png, vals,
                                  f"{f.symbol}: {vals.trades:,} trades; last {_fmt(vals.last)}, "
                                  f"VWAP {_fmt(vals.vwap)} (SD {_fmt(vals.vwap_sd)}), "
                                  f"cumulative delta {_fmt(vals.cum_delta, 0)}"))
        step()
        png, vals = _profile_figure(plt, f)
        figures[f"profile-{f.symbol}"] = vals
        parts.append(_figure_html(f"profile-{f.symbol}", png, vals,
                                  f"{f.symbol}: POC {_fmt(vals.poc)}, value area "
                                  f"{_fmt(vals.va_low)}-{_fmt(vals.va_high)}"))
        step()
    if gammas:
        parts.append("<h2>Dealer gamma</h2>")
    for gi in gammas:
        u = gi.levels.underlying
        png, vals = _gex_figure(plt, gi)
        figures[f"gex-{u}"] = vals
        parts.append(_figure_html(f"gex-{u}", png, vals,
                                  f"{u} at {_utc(gi.levels.ts_event)} UTC: spot {_fmt(vals.spot)}, "
                                  f"zero gamma {_fmt(vals.zero_gamma)}, call wall {_fmt(vals.call_wall, 0)}, "
                                  f"put wall {_fmt(vals.put_wall, 0)}, max pain {_fmt(vals.max_pain, 0)}"))
        step()
        png, vals = _gamma_profile_figure(plt, gi)
        figures[f"gamma-profile-{u}"] = vals
        parts.append(_figure_html(f"gamma-profile-{u}", png, vals,
                                  f"{u}: total GEX if spot moved, zero gamma {_fmt(vals.zero_gamma)}"))
        step()
    if history:
        parts.append("<h2>Key levels and dealer bias through the day</h2>")
    for u in underlyings:
        if not any(g.underlying == u for g in history):
            step()
            continue
        png, vals = _history_figure(plt, u, history)
        figures[f"levels-{u}"] = vals
        parts.append(_figure_html(f"levels-{u}", png, vals,
                                  f"{u}: {vals.points} chain snapshots"))
        step()
    if history:
        parts.append(_history_table(history))
    if flow_bars or flow_gex:
        parts.append("<h2>Option flow</h2>")
    for u in sorted(set(flow_bars) | set(flow_gex)):
        if u in flow_bars:
            spots = [g.spot for g in history if g.underlying == u]
            png, vals = _option_flow_figure(plt, u, flow_bars[u], spots[-1] if spots else NAN)
            figures[f"flow-{u}"] = vals
            parts.append(_figure_html(f"flow-{u}", png, vals,
                                      f"{u}: {vals.trades:,} option trades in {vals.bars} bars; signed "
                                      f"premium {_fmt(vals.signed_premium / 1e6)} $m of {_fmt(vals.premium / 1e6)}"
                                      f" $m, signed contracts {_fmt(vals.signed_contracts, 0)}"))
            step()
        if u in flow_gex:
            png, vals = _flow_gex_figure(plt, flow_gex[u])
            figures[f"flow-gex-{u}"] = vals
            parts.append(_figure_html(f"flow-gex-{u}", png, vals,
                                      f"{u} at {_utc(vals.ts)} UTC: zero gamma {_fmt(vals.zero_gamma)} (OI) vs "
                                      f"{_fmt(vals.flow_zero_gamma)} (flow-adjusted), total GEX "
                                      f"{_fmt(vals.total_gex / USD_PER_BN)} vs {_fmt(vals.flow_total_gex / USD_PER_BN)}"
                                      f" $bn, {_fmt(vals.flow_contracts, 0)} signed contracts"))
            step()
    if term_history or surfaces:
        parts.append("<h2>Volatility</h2>")
    if term_history:
        png, vals = _vx_curve_figure(plt, term_history)
        figures["vx-curve"] = vals
        parts.append(_figure_html("vx-curve", png, vals,
                                  f"VX curve: {vals.points} updates; last VIX {_fmt(vals.last_vix)}, "
                                  f"30-day CM {_fmt(vals.last_cm30)}, VX2/VX1 - 1 "
                                  f"{_fmt(vals.last_contango * 100)}%"))
        step()
    for surface in surfaces:
        u = surface.underlying
        png, vals = _smile_figure(plt, surface)
        figures[f"smile-{u}"] = vals
        parts.append(_figure_html(f"smile-{u}", png, vals,
                                  f"{u} at {_utc(surface.ts_event)} UTC: {vals.expiries} expiries, "
                                  f"{vals.smile_points} smile points"))
        step()
    if not parts:
        parts.append("<p>No trades and no options chains in this window.</p>")
    title = f"mia report {html.escape(date)}"
    data = to_json(figures).replace("</", "<\\/")
    page = ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<title>{title}</title><style>{_CSS}</style></head><body>"
            f"<h1>{title}</h1><p class=muted>{html.escape(subtitle)}</p>"
            + "".join(parts)
            + f'<script type="application/json" id="mia-figures">{data}</script></body></html>')
    return Report(html=page, figures=figures)
