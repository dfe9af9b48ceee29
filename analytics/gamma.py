"""Dealer gamma: GEX by strike and expiry, the gamma profile and zero-gamma flip, walls, max pain,
put/call ratios, pins, vanna/charm exposure, IV skew, unusual activity and a dealer-bias score.

Conventions (see docs/dealer-bias.md and reference/polygon_gamma.md part B):
- Time to expiry T = (expiry_ns - chain.ts_ns) / 365 days, floored at one minute so 0DTE
  contracts count to the last minute; contracts already settled (expiry_ns <= ts_ns) are left out.
- Greeks: Polygon's gamma/delta/vega are used where sent (``prefer_source_greeks``); otherwise
  Black-Scholes from the contract's IV with rate ``r`` and dividend yield ``q`` (both 0 by default,
  as in Perfiliev's method the reference adopts). Vanna and charm are always computed from IV.
  A contract with neither gamma nor IV contributes no gamma (counted in ``contracts_no_gamma``);
  one with a Polygon gamma but no IV counts at spot but cannot be re-priced for the profile.
- GEX per contract = sign * gamma * OI * multiplier * S^2 * 0.01, dollars per 1% move. ``sign``
  by ``convention``: "long_calls_short_puts" (dealers long calls +1, short puts -1; default),
  "short_calls_long_puts", "all_short".
- Vanna exposure = sum sign * vanna * OI * M * S * 0.01: dollars of delta per 1 vol point.
  Charm exposure = sum sign * charm * OI * M * S: dollars of delta per calendar day.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Final, Literal

import msgspec
import numpy as np

from ..engine.clock import NS_PER_DAY, NS_PER_MIN
from ..engine.columns import RIGHT_CALL, RIGHT_PUT, ChainColumns, ColumnBatch, snapshot_chain
from ..engine.config import ConfigBase
from ..engine.errors import ConfigError, MiaError
from ..engine.events import (
    FALLBACK_PREVIOUS,
    K_CHAIN_SNAPSHOT,
    K_INSTRUMENT,
    K_POLYGON_RESPONSE,
    K_QUOTE,
    K_RECORDING_STARTED,
    K_SOURCE_ERROR,
    ChainSnapshot,
    GammaLevels,
    PolygonResponse,
    RecordingStarted,
    SourceError,
)
from ..engine.lazy import lazy_module
from .flow import DaySignedVolume, FlowConfig, FlowGex, with_flow

kern = lazy_module("mia.analytics._gamma_kernels")  # numba: imported at the first kernel call
_kn = lazy_module("mia.analytics._kinds")
_WANTED = np.array([K_INSTRUMENT, K_POLYGON_RESPONSE, K_SOURCE_ERROR, K_CHAIN_SNAPSHOT, K_RECORDING_STARTED])
_NONE = np.empty(0, dtype=np.intp)

NAN = math.nan
NS_PER_YEAR: Final = 365 * NS_PER_DAY  # T in years of 365 days
MIN_T_NS: Final = NS_PER_MIN  # the floor of T: 0DTE contracts count to the last minute

CONVENTIONS: dict[str, tuple[float, float]] = {
    # name: (call sign, put sign)
    "long_calls_short_puts": (1.0, -1.0),
    "short_calls_long_puts": (-1.0, 1.0),
    "all_short": (-1.0, -1.0),
}


class ChainDataError(MiaError):
    """An options chain cannot give a gamma picture (no contracts, no spot)."""


class GammaConfig(ConfigBase):
    """Knobs of the gamma computation; the defaults are what docs/dealer-bias.md describes."""

    dealer_convention: Literal["long_calls_short_puts", "short_calls_long_puts", "all_short"] = (
        "long_calls_short_puts")
    rate: float = 0.0  # r, continuous, annual
    dividend_yield: float = 0.0  # q, continuous, annual
    prefer_source_greeks: bool = True  # use Polygon's gamma/delta/vega where sent
    grid_points: int = 400  # the zero-gamma profile's spot grid ...
    grid_width: float = 0.10  # ... over spot * (1 -/+ this)
    max_pain_expiry: str = "nearest"  # "nearest" live expiry, or "all" expiries pooled
    pin_count: int = 3
    pin_window: float = 0.02  # pins: strikes within this fraction of spot, nearest expiry
    skew_min_days: float = 1.0  # skew/ATM IV: nearest expiry at least this far out
    skew_delta: float = 0.25
    unusual_ratio: float = 2.0  # volume / OI above this ...
    unusual_min_volume: float = 500.0  # ... with at least this much volume
    bias_weights: tuple[float, float, float] = (0.5, 0.3, 0.2)  # gex ratio, flip, pcr
    bias_flip_scale: float = 0.02  # spot-vs-flip distance (fraction of spot) that saturates
    futures_roots: dict[str, str] = msgspec.field(default_factory=lambda: {"SPX": "ES", "NDX": "NQ"})

    def __post_init__(self) -> None:
        if self.dealer_convention not in CONVENTIONS:
            raise ConfigError(f"gamma.dealer_convention {self.dealer_convention!r}: expected one of "
                             f"{sorted(CONVENTIONS)}")
        if self.max_pain_expiry not in ("nearest", "all"):
            raise ConfigError(f"gamma.max_pain_expiry {self.max_pain_expiry!r}: expected 'nearest' or 'all'")
        if self.grid_points < 2 or not 0.0 < self.grid_width < 1.0:
            raise ConfigError("gamma: grid_points >= 2 and 0 < grid_width < 1")


DEFAULT_CONFIG: Final = GammaConfig()


class GammaResult(msgspec.Struct, frozen=True, eq=False):
    """Everything compute_gamma found for one chain. Arrays are numpy; NaN means none."""

    underlying: str
    ts_ns: int
    snapshot_id: int
    spot: float
    futures_mid: float
    basis: float
    contracts: int  # rows in the chain
    contracts_live: int  # not yet settled, with a usable strike
    contracts_no_gamma: int  # live contracts with neither a gamma nor an IV
    # per contract (chain row order)
    t_years: np.ndarray
    sign: np.ndarray
    gamma: np.ndarray
    delta: np.ndarray
    vega: np.ndarray
    vanna: np.ndarray
    charm: np.ndarray
    gex: np.ndarray  # $ per 1% move, 0 where not live or no gamma
    live: np.ndarray
    # by strike (ascending)
    strikes: np.ndarray
    call_gex_by_strike: np.ndarray
    put_gex_by_strike: np.ndarray
    net_gex_by_strike: np.ndarray
    abs_gex_by_strike: np.ndarray
    call_oi_by_strike: np.ndarray
    put_oi_by_strike: np.ndarray
    # by expiry (ascending, ns)
    expiries: np.ndarray
    gex_by_expiry: np.ndarray
    call_gex_by_expiry: np.ndarray
    put_gex_by_expiry: np.ndarray
    # profile
    profile_grid: np.ndarray
    profile_gex: np.ndarray
    zero_gamma_crossings: np.ndarray
    # scalars
    zero_gamma: float
    call_wall: float
    put_wall: float
    max_pain: float
    max_pain_expiry_ns: int
    total_gex: float
    call_gex: float
    put_gex: float
    abs_gex: float
    pcr_oi: float
    pcr_volume: float
    pin_strikes: tuple[float, ...]
    vanna_exposure: float
    charm_exposure: float
    delta_exposure: float
    iv_skew: float
    atm_iv: float
    skew_expiry_ns: int
    unusual_strikes: tuple[float, ...]
    dealer_bias: float

    def fut(self, level: float) -> float:
        """An index level in futures prices (level + basis); NaN when no basis is known."""
        return level + self.basis


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else NAN


def _strike_at_max(strikes: np.ndarray, values: np.ndarray) -> float:
    """The strike with the largest |value|; the lowest such strike on ties; NaN when all are 0."""
    if strikes.size == 0:
        return NAN
    mag = np.abs(values)
    j = int(np.argmax(mag))
    return float(strikes[j]) if mag[j] > 0 else NAN


def parity_spot(chain: ChainColumns, live: np.ndarray) -> float:
    """Spot from put-call parity (r = q = 0) at the strike where call and put mids are closest."""
    mid = 0.5 * (chain.bid + chain.ask)
    ok = live & np.isfinite(mid)
    if not ok.any():
        return NAN
    first = int(chain.expiry_ns[ok].min())
    sel = ok & (chain.expiry_ns == first)
    calls = {float(k): float(m) for k, m, r in zip(chain.strike[sel], mid[sel], chain.right[sel]) if r == RIGHT_CALL}
    best = (math.inf, NAN)
    for k, m, r in zip(chain.strike[sel], mid[sel], chain.right[sel]):
        if r == RIGHT_PUT and float(k) in calls:
            gap = abs(calls[float(k)] - float(m))
            if gap < best[0]:
                best = (gap, float(k) + calls[float(k)] - float(m))
    return best[1]


def dealer_bias_score(
    total_gex: float, abs_gex: float, spot: float, zero_gamma: float, profile_at_spot: float,
    pcr_oi: float, weights: tuple[float, float, float] = (0.5, 0.3, 0.2), flip_scale: float = 0.02,
) -> float:
    """The dealer-bias score in [-1, 1] (docs/dealer-bias.md): a weighted mean of three terms,
    each in [-1, 1] and increasing with how long-gamma / supportive the dealer book looks.

    g = total GEX / sum |GEX|; f = clip((spot - flip) / (flip_scale * spot), -1, 1), or the sign
    of the profile at spot when there is no flip; p = (1 - PCR_oi) / (1 + PCR_oi). Missing terms
    drop out and the remaining weights are renormalised; NaN when all are missing.
    """
    terms = []
    if abs_gex > 0 and math.isfinite(total_gex):
        terms.append((weights[0], total_gex / abs_gex))
    if math.isfinite(zero_gamma) and spot > 0:
        terms.append((weights[1], min(1.0, max(-1.0, (spot - zero_gamma) / (flip_scale * spot)))))
    elif math.isfinite(profile_at_spot) and profile_at_spot != 0:
        terms.append((weights[1], math.copysign(1.0, profile_at_spot)))
    if math.isfinite(pcr_oi) and pcr_oi >= 0:
        terms.append((weights[2], (1.0 - pcr_oi) / (1.0 + pcr_oi)))
    wsum = sum(w for w, _ in terms)
    if not terms or wsum <= 0:
        return NAN
    return min(1.0, max(-1.0, sum(w * v for w, v in terms) / wsum))


def chain_inputs(chain: ChainColumns, live: np.ndarray) -> tuple[np.ndarray, ...]:
    """(OI, volume, multiplier, IV) of a chain's rows, cleaned: 0 OI / volume where missing or
    negative, multiplier 100 where missing, IV NaN where missing or not live."""
    oi = np.where(np.isfinite(chain.open_interest) & (chain.open_interest > 0), chain.open_interest, 0.0)
    volume = np.where(np.isfinite(chain.volume) & (chain.volume > 0), chain.volume, 0.0)
    mult = np.where(np.isfinite(chain.multiplier) & (chain.multiplier > 0), chain.multiplier, 100.0)
    iv = np.where(live & np.isfinite(chain.iv) & (chain.iv > 0), chain.iv, NAN)
    return oi, volume, mult, iv


def contract_gex(weight: np.ndarray, gamma: np.ndarray, has_gamma: np.ndarray, spot: float) -> np.ndarray:
    """GEX per contract, dollars per 1% move: weight (dealer contracts x multiplier) x gamma x
    S^2 x 0.01; 0 where the contract has no gamma."""
    return np.where(has_gamma, weight * np.where(has_gamma, gamma, 0.0) * spot * spot * 0.01, 0.0)


def compute_gamma(chain: ChainColumns, config: GammaConfig = DEFAULT_CONFIG, futures_mid: float = NAN) -> GammaResult:
    """The gamma picture of one chain snapshot. Raises ChainDataError when it has none."""
    n = len(chain)
    if n == 0:
        raise ChainDataError(f"{chain.underlying} snapshot {chain.snapshot_id}: empty chain")
    strike = np.asarray(chain.strike, dtype=np.float64)
    expiry = np.asarray(chain.expiry_ns, dtype=np.int64)
    right = np.asarray(chain.right, dtype=np.int8)
    live = (expiry > chain.ts_ns) & np.isfinite(strike) & (strike > 0) & ((right == RIGHT_CALL) | (right == RIGHT_PUT))
    if not live.any():
        raise ChainDataError(f"{chain.underlying} snapshot {chain.snapshot_id}: no live contracts in {n} rows")
    spot = float(chain.spot)
    if not (spot > 0 and math.isfinite(spot)):
        spot = parity_spot(chain, live)
    if not (spot > 0 and math.isfinite(spot)):
        raise ChainDataError(f"{chain.underlying} snapshot {chain.snapshot_id}: no underlying value and no quotes to infer it")

    t_years = np.maximum(expiry - chain.ts_ns, MIN_T_NS) / NS_PER_YEAR
    call_sign, put_sign = CONVENTIONS[config.dealer_convention]
    sign = np.where(right == RIGHT_CALL, call_sign, put_sign)
    oi, volume, mult, iv = chain_inputs(chain, live)
    r, q = float(config.rate), float(config.dividend_yield)

    bs_delta, bs_gamma, bs_vega, vanna, charm = kern.chain_greeks(spot, strike, t_years, iv, right, r, q)
    if config.prefer_source_greeks:
        gamma = np.where(np.isfinite(chain.gamma), chain.gamma, bs_gamma)
        delta = np.where(np.isfinite(chain.delta), chain.delta, bs_delta)
        vega = np.where(np.isfinite(chain.vega), chain.vega, bs_vega)
    else:
        gamma, delta, vega = bs_gamma, bs_delta, bs_vega
    gamma = np.where(live, gamma, NAN)
    has_gamma = live & np.isfinite(gamma)
    weight = sign * oi * mult  # shares-of-hedge scale per unit greek
    gex = contract_gex(weight, gamma, has_gamma, spot)
    is_call = live & (right == RIGHT_CALL)
    is_put = live & (right == RIGHT_PUT)

    # by strike / by expiry
    strikes = np.unique(strike[live])
    s_idx = np.searchsorted(strikes, np.where(live, strike, strikes[0])).astype(np.int64)
    s_idx[~live] = 0
    ns = strikes.size
    call_gex_k = kern.group_sum(s_idx, np.where(is_call, gex, 0.0), ns)
    put_gex_k = kern.group_sum(s_idx, np.where(is_put, gex, 0.0), ns)
    abs_gex_k = kern.group_sum(s_idx, np.abs(gex), ns)
    call_oi_k = kern.group_sum(s_idx, np.where(is_call, oi, 0.0), ns)
    put_oi_k = kern.group_sum(s_idx, np.where(is_put, oi, 0.0), ns)
    expiries = np.unique(expiry[live])
    e_idx = np.searchsorted(expiries, np.where(live, expiry, expiries[0])).astype(np.int64)
    ne = expiries.size
    gex_e = kern.group_sum(e_idx, gex, ne)
    call_gex_e = kern.group_sum(e_idx, np.where(is_call, gex, 0.0), ne)
    put_gex_e = kern.group_sum(e_idx, np.where(is_put, gex, 0.0), ne)

    # profile and flip (sticky strike: each contract keeps its IV; no IV, no re-pricing)
    _, log_start, log_step = kern.profile_grid(spot, config.grid_width, config.grid_points)
    grid, curve = kern.gamma_profile(log_start, log_step, config.grid_points, strike, t_years, iv,
                                     np.where(live, weight, 0.0), r, q)
    crossings = kern.zero_crossings(grid, curve)
    zero_gamma = float(crossings[np.argmin(np.abs(crossings - spot))]) if crossings.size else NAN
    profile_at_spot = float(np.interp(spot, grid, curve))

    # max pain
    if config.max_pain_expiry == "nearest":
        mp_expiry = int(expiries[0])
        mp_rows = live & (expiry == mp_expiry)
    else:
        mp_expiry = 0
        mp_rows = live
    candidates = np.unique(strike[mp_rows])
    pain = kern.max_pain_curve(candidates, strike, right, np.where(mp_rows, oi * mult, 0.0))
    max_pain = float(candidates[int(np.argmin(pain))]) if pain.size and pain.max() > 0 else NAN

    # pins: top strikes by total OI within the window around spot, nearest expiry
    near = live & (expiry == expiries[0]) & (np.abs(strike - spot) <= config.pin_window * spot)
    pins: tuple[float, ...] = ()
    if near.any():
        pk = np.unique(strike[near])
        pin_oi = kern.group_sum(np.searchsorted(pk, strike[near]).astype(np.int64), oi[near], pk.size)
        order = np.lexsort((np.abs(pk - spot), -pin_oi))  # most OI first, then nearest spot
        pins = tuple(float(pk[j]) for j in order[: config.pin_count] if pin_oi[j] > 0)

    # skew and ATM IV: nearest expiry at least skew_min_days out
    far = expiries[expiries - chain.ts_ns >= config.skew_min_days * NS_PER_DAY]
    iv_skew = atm_iv = NAN
    skew_expiry = 0
    if far.size:
        skew_expiry = int(far[0])
        rows = live & (expiry == skew_expiry) & np.isfinite(iv)
        c_rows = rows & (right == RIGHT_CALL) & np.isfinite(delta)
        p_rows = rows & (right == RIGHT_PUT) & np.isfinite(delta)
        if c_rows.any() and p_rows.any():
            ci = np.flatnonzero(c_rows)[np.argmin(np.abs(delta[c_rows] - config.skew_delta))]
            pi = np.flatnonzero(p_rows)[np.argmin(np.abs(delta[p_rows] + config.skew_delta))]
            iv_skew = float(iv[pi] - iv[ci])
        if rows.any():
            k_atm = strike[rows][np.argmin(np.abs(strike[rows] - spot))]
            atm_iv = float(np.mean(iv[rows & (strike == k_atm)]))

    unusual = live & (volume >= config.unusual_min_volume) & (volume > config.unusual_ratio * oi)
    unusual_strikes = tuple(float(k) for k in np.unique(strike[unusual]))

    total_gex = float(np.sum(gex))
    abs_gex = float(np.sum(np.abs(gex)))
    pcr_oi = _ratio(float(np.sum(oi[is_put])), float(np.sum(oi[is_call])))
    pcr_volume = _ratio(float(np.sum(volume[is_put])), float(np.sum(volume[is_call])))
    exposure_rows = live & np.isfinite(vanna) & np.isfinite(charm)
    vanna_exp = float(np.sum(np.where(exposure_rows, weight * np.where(exposure_rows, vanna, 0.0), 0.0)) * spot * 0.01)
    charm_exp = float(np.sum(np.where(exposure_rows, weight * np.where(exposure_rows, charm, 0.0), 0.0)) * spot)
    delta_rows = live & np.isfinite(delta)
    delta_exp = float(np.sum(np.where(delta_rows, weight * np.where(delta_rows, delta, 0.0), 0.0)) * spot)
    basis = float(futures_mid) - spot if math.isfinite(futures_mid) else NAN
    bias = dealer_bias_score(total_gex, abs_gex, spot, zero_gamma, profile_at_spot, pcr_oi,
                             config.bias_weights, config.bias_flip_scale)

    return GammaResult(
        underlying=chain.underlying, ts_ns=int(chain.ts_ns), snapshot_id=int(chain.snapshot_id), spot=spot,
        futures_mid=float(futures_mid), basis=basis, contracts=n, contracts_live=int(live.sum()),
        contracts_no_gamma=int((live & ~has_gamma).sum()),
        t_years=t_years, sign=sign, gamma=gamma, delta=delta, vega=vega, vanna=vanna, charm=charm, gex=gex,
        live=live, strikes=strikes, call_gex_by_strike=call_gex_k, put_gex_by_strike=put_gex_k,
        net_gex_by_strike=call_gex_k + put_gex_k, abs_gex_by_strike=abs_gex_k,
        call_oi_by_strike=call_oi_k, put_oi_by_strike=put_oi_k,
        expiries=expiries, gex_by_expiry=gex_e, call_gex_by_expiry=call_gex_e, put_gex_by_expiry=put_gex_e,
        profile_grid=grid, profile_gex=curve, zero_gamma_crossings=crossings, zero_gamma=zero_gamma,
        call_wall=_strike_at_max(strikes, call_gex_k), put_wall=_strike_at_max(strikes, put_gex_k),
        max_pain=max_pain, max_pain_expiry_ns=mp_expiry, total_gex=total_gex,
        call_gex=float(np.sum(gex[is_call])), put_gex=float(np.sum(gex[is_put])), abs_gex=abs_gex,
        pcr_oi=pcr_oi, pcr_volume=pcr_volume, pin_strikes=pins, vanna_exposure=vanna_exp,
        charm_exposure=charm_exp, delta_exposure=delta_exp, iv_skew=iv_skew, atm_iv=atm_iv,
        skew_expiry_ns=skew_expiry, unusual_strikes=unusual_strikes, dealer_bias=bias,
    )


def gamma_levels(result: GammaResult, *, ts_recv: int, stale: bool = False, staleness_ns: int = 0,
                 futures_symbol: str = "") -> GammaLevels:
    """The GammaLevels event of a result; ts_event is the chain's time."""
    return GammaLevels(
        ts_event=result.ts_ns, ts_recv=int(ts_recv), underlying=result.underlying, spot=result.spot,
        basis=result.basis, zero_gamma=result.zero_gamma, call_wall=result.call_wall, put_wall=result.put_wall,
        max_pain=result.max_pain, total_gex=result.total_gex, call_gex=result.call_gex, put_gex=result.put_gex,
        pcr_oi=result.pcr_oi, pcr_volume=result.pcr_volume, pin_strikes=list(result.pin_strikes),
        dealer_bias=result.dealer_bias, vanna_exposure=result.vanna_exposure,
        charm_exposure=result.charm_exposure, iv_skew=result.iv_skew, stale=bool(stale),
        staleness_ns=int(staleness_ns), snapshot_id=result.snapshot_id, contracts=result.contracts,
        chain_ts=result.ts_ns, futures_symbol=futures_symbol if math.isfinite(result.basis) else "",
        zero_gamma_fut=result.fut(result.zero_gamma), call_wall_fut=result.fut(result.call_wall),
        put_wall_fut=result.fut(result.put_wall), max_pain_fut=result.fut(result.max_pain),
        unusual_strikes=list(result.unusual_strikes), atm_iv=result.atm_iv,
    )


def flow_gex(result: GammaResult, chain: ChainColumns, signed: np.ndarray,
             config: GammaConfig = DEFAULT_CONFIG) -> FlowGex:
    """The flow-adjusted gamma picture of a chain (mia.analytics.flow, README "Option flow").

    Dealers hold sign x OI of each contract (the convention) and take the other side of the
    customers' signed volume `signed` (per chain row, contracts today): GEX per contract with
    weight (sign x OI - signed) x multiplier, by strike, its walls, total and the zero-gamma
    flip of its profile (same grid, same kernels as compute_gamma: the OI profile plus the
    profile of the flow's weights). With `signed` all zero it is the OI picture bit for bit.
    """
    live = result.live
    strike = np.asarray(chain.strike, dtype=np.float64)
    right = np.asarray(chain.right, dtype=np.int8)
    oi, _, mult, iv = chain_inputs(chain, live)
    has_gamma = live & np.isfinite(result.gamma)
    v = np.where(has_gamma, np.asarray(signed, dtype=np.float64), 0.0)
    weight = (result.sign * oi - v) * mult
    gex = contract_gex(weight, result.gamma, has_gamma, result.spot)
    strikes = result.strikes
    s_idx = np.searchsorted(strikes, np.where(live, strike, strikes[0])).astype(np.int64)
    s_idx[~live] = 0
    call_k = kern.group_sum(s_idx, np.where(live & (right == RIGHT_CALL), gex, 0.0), strikes.size)
    put_k = kern.group_sum(s_idx, np.where(live & (right == RIGHT_PUT), gex, 0.0), strikes.size)
    # the profile is linear in the weights: the OI profile plus that of the flow's (-v x
    # multiplier, nonzero on the contracts traded today only, so the kernel skips the rest)
    _, log_start, log_step = kern.profile_grid(result.spot, config.grid_width, config.grid_points)
    _, flow_curve = kern.gamma_profile(log_start, log_step, config.grid_points, strike, result.t_years, iv,
                                       np.where(live, -v * mult, 0.0), float(config.rate),
                                       float(config.dividend_yield))
    curve = result.profile_gex + flow_curve
    crossings = kern.zero_crossings(result.profile_grid, curve)
    zero = float(crossings[np.argmin(np.abs(crossings - result.spot))]) if crossings.size else NAN
    return FlowGex(zero_gamma=zero, total_gex=float(np.sum(gex)), call_wall=_strike_at_max(strikes, call_k),
                   put_wall=_strike_at_max(strikes, put_k), contracts=float(np.sum(v)), strikes=strikes,
                   gex_oi=result.net_gex_by_strike, gex_flow=call_k + put_k, profile_gex=curve)


INDICES_PATH: Final = "/v3/snapshot/indices"  # Polygon's indices snapshot (index spot values)
INDEX_SPOT_MAX_AGE_NS: Final = 5 * NS_PER_MIN  # an index value older than this at the chain's time is not used


class IndexSpots:
    """Index values from recorded indices snapshots (``/v3/snapshot/indices``), for chains.

    `parse` is ``mia.data.polygon.models.index_values`` (None: indices snapshots are ignored).
    A row's value counts for the plain underlying ("I:SPX" -> "SPX") from the response's
    ts_recv; a chain whose time is at most INDEX_SPOT_MAX_AGE_NS after it gets that value as its
    spot (the true index, rather than the chain's own or a parity spot). With no indices
    snapshot in the log, chains are left as they are: the results are those of before.
    """

    def __init__(self, parse: Callable[[PolygonResponse], list] | None) -> None:
        self._parse = parse
        self._values: dict[str, tuple[float, int]] = {}

    def on_response(self, ev: PolygonResponse) -> bool:
        """Fold a response if it is an indices snapshot (True), else leave it (False)."""
        if ev.path != INDICES_PATH:
            return False
        if ev.status != 200 or self._parse is None:
            return True
        try:
            rows = self._parse(ev)
        except MiaError:
            return True
        for row in rows:
            if not row.error and math.isfinite(row.value) and row.value > 0:
                self._values[row.ticker.removeprefix("I:")] = (float(row.value), int(ev.ts_recv))
        return True

    def spot(self, underlying: str, at_ns: int) -> float:
        value, ts = self._values.get(underlying.removeprefix("I:"), (NAN, 0))
        return value if 0 <= at_ns - ts <= INDEX_SPOT_MAX_AGE_NS else NAN

    def apply(self, chain: ChainColumns) -> ChainColumns:
        """The chain with the index's value as its spot, when a recent one is known."""
        value = self.spot(chain.underlying, int(chain.ts_ns))
        return dataclasses.replace(chain, spot=value) if math.isfinite(value) else chain


def stale_again(last_good: dict, ev: SourceError):
    """The last good output of `ev.underlying` (GammaLevels, IvSurface) re-emitted as stale at
    `ev`, or None.

    Only a fallback to an older chain re-emits (FALLBACK_PREVIOUS, stale_age_ns > 0): with
    FALLBACK_NONE there is no chain to fall back on, and a partial chain (FALLBACK_PARTIAL)
    produced an output of its own. Old logs carry the kind mapped from their prose on decode.
    """
    if not ev.underlying or ev.stale_age_ns <= 0 or ev.fallback_kind != FALLBACK_PREVIOUS:
        return None
    good = last_good.get(ev.underlying)
    if good is None:
        return None
    return msgspec.structs.replace(good, ts_recv=int(ev.ts_recv), stale=True,
                                   staleness_ns=int(ev.stale_age_ns))


class ChainPages:
    """Pages of each underlying's chain snapshot, gathered until its final page.

    A new snapshot of an underlying drops the unfinished one before it (its pages will not
    come). `add(page)`: None while the snapshot is incomplete; its pages when the final one
    arrives; [] when it arrived but some page failed (not HTTP 200).
    """

    def __init__(self) -> None:
        self._pending: dict[tuple[str, int], list[PolygonResponse]] = {}

    def add(self, ev: PolygonResponse) -> list[PolygonResponse] | None:
        key = (ev.underlying, int(ev.snapshot_id))
        for other in [k for k in self._pending if k[0] == ev.underlying and k != key]:
            del self._pending[other]
        pages = self._pending.setdefault(key, [])
        pages.append(ev)
        if not ev.final:
            return None
        del self._pending[key]
        return pages if all(p.status == 200 for p in pages) else []


class ChainFeed:
    """Where a reducer's chains come from: each snapshot's raw pages, or its ChainSnapshot row.

    A recording whose poller logs ChainSnapshots says so in its live RecordingStarted
    (``chain_snapshots``); a day `mia migrate` gave ChainSnapshots has a `chains` stream whose
    RecordingStarted says so. From there on chain pages are not gathered (and never parsed) and
    each ChainSnapshot row gives the chain; it carries the ts_recv of its final page and follows
    it, so the outputs are those the pages would have given. Days recorded before compute from
    the pages (``parse_chain``, mia.data.polygon.models.chain_columns), as before. Indices
    snapshots feed ``spots`` in both modes.
    """

    def __init__(self, parse_chain: Callable[[list[PolygonResponse]], ChainColumns],
                 index_values: Callable[[PolygonResponse], list] | None) -> None:
        self.spots = IndexSpots(index_values)
        self._parse = parse_chain
        self._pages = ChainPages()
        self._live = False  # the live recording's poller logs ChainSnapshots
        self._migrated = False  # a `chains` stream holds them (for every snapshot of the day)

    @property
    def snapshots(self) -> bool:
        """Chains come from ChainSnapshot rows (pages are ignored)."""
        return self._live or self._migrated

    def on_started(self, ev: RecordingStarted) -> None:
        if ev.stream == "live":
            self._live = bool(ev.chain_snapshots)
        elif ev.chain_snapshots:
            self._migrated = True

    def on_page(self, ev: PolygonResponse) -> list[PolygonResponse] | None:
        """The pages of a snapshot `ev` completes ([] when one failed), else None: also for an
        indices snapshot (folded into `spots`) and for every page in snapshot mode."""
        if self.spots.on_response(ev) or self.snapshots:
            return None
        return self._pages.add(ev)

    def chain(self, pages: list[PolygonResponse]) -> ChainColumns:
        return self.spots.apply(self._parse(pages))

    def chain_of(self, ev: ChainSnapshot) -> ChainColumns | None:
        """The chain of a ChainSnapshot row (with the index spot), None when not in snapshot mode."""
        return self.spots.apply(snapshot_chain(ev)) if self.snapshots else None


class GammaReducer:
    """Pure fold: event rows in log order -> GammaLevels, one per complete chain snapshot.

    - Instrument rows map futures symbols to ids by root prefix (config.futures_roots: SPX -> ES);
      a later declaration with the same root replaces the earlier one.
    - Quote rows keep every instrument's last mid ((bid + ask) / 2, both finite).
    - Indices snapshots (``/v3/snapshot/indices``) give the chains their true index spot
      (``IndexSpots``); without one a chain's own spot is used, as before.
    - PolygonResponse pages are collected per (underlying, snapshot_id); the final page, with every
      page HTTP 200, calls ``parse_chain`` and emits GammaLevels (ts_recv of that row). A MiaError
      from parsing or computing skips that snapshot. A new snapshot of an underlying drops the
      unfinished pages of its older ones. When the recording logs ChainSnapshots (``ChainFeed``),
      the ChainSnapshot row following the final page emits them instead, from its columns.
    - A SourceError row naming an underlying, with fallback_kind FALLBACK_PREVIOUS and
      stale_age_ns > 0, re-emits that underlying's last good levels with stale=True, staleness_ns = stale_age_ns,
      ts_recv of that row.
    Row by row in order, so the output does not depend on where batches are cut.
    """

    def __init__(self, parse_chain: Callable[[list[PolygonResponse]], ChainColumns],
                 config: GammaConfig = DEFAULT_CONFIG, *,
                 index_values: Callable[[PolygonResponse], list] | None = None,
                 flow: FlowConfig | None = None) -> None:
        self._parse_chain = parse_chain
        self._config = config
        self._feed = ChainFeed(parse_chain, index_values)
        self._mids: dict[int, float] = {}
        self._futures: dict[str, tuple[int, str]] = {}  # root -> (instrument id, symbol)
        self._last: dict[str, GammaLevels] = {}
        self._last_good: dict[str, GammaLevels] = {}
        self._results: dict[str, GammaResult] = {}
        self.skipped = 0  # snapshots dropped: a non-200 page or a MiaError
        # option flow (Polygon streams): the day's signed customer volume per contract, folded
        # in the row walk below; the chains of each batch, at their rows, for the flow reducer
        self._flow = DaySignedVolume(flow or FlowConfig())  # its cancel conditions
        self._pos = 0
        self.batch_chains: list[tuple] = []  # (row, underlying, tickers, delta, gamma, spot)

    def last(self) -> dict[str, GammaLevels]:
        return dict(self._last)

    def last_result(self, underlying: str) -> GammaResult | None:
        return self._results.get(underlying)

    @property
    def flow_volume(self) -> DaySignedVolume:
        """The day's signed option volume this reducer folds (its rows and contract registry
        serve the flow reducer that runs next on the same batch)."""
        return self._flow

    def on_batch(self, batch: ColumnBatch) -> list[GammaLevels]:
        kind = batch.kind
        has = _kn.kinds_of(kind)  # masks only for kinds the batch holds (most: market rows alone)
        wanted = (np.flatnonzero((kind == K_INSTRUMENT) | (kind == K_POLYGON_RESPONSE) | (kind == K_SOURCE_ERROR)
                                 | (kind == K_CHAIN_SNAPSHOT) | (kind == K_RECORDING_STARTED))
                  if has[_WANTED].any() else _NONE)
        quotes = _NONE
        if has[K_QUOTE]:
            quotes = np.flatnonzero(kind == K_QUOTE)
            quotes = quotes[np.isfinite(batch.bid[quotes]) & np.isfinite(batch.ask[quotes])]
        out: list[GammaLevels] = []
        done = 0  # quotes[:done] already folded into self._mids
        self.batch_chains = []
        self._flow.begin(batch)  # option trades and quotes: folded up to each row below
        for pos in wanted:
            self._pos = int(pos)
            self._flow.advance(self._pos)
            upto = int(np.searchsorted(quotes, pos))
            self._fold_quotes(batch, quotes[done:upto])
            done = upto
            ev = batch.events_at(int(pos))
            k = int(kind[pos])
            if k == K_INSTRUMENT:
                self._on_instrument(ev)
            elif k == K_POLYGON_RESPONSE:
                levels = self._on_page(ev)
                if levels is not None:
                    out.append(levels)
            elif k == K_CHAIN_SNAPSHOT:
                levels = self._on_snapshot(ev)
                if levels is not None:
                    out.append(levels)
            elif k == K_RECORDING_STARTED:
                self._feed.on_started(ev)
            else:
                levels = self._on_source_error(ev)
                if levels is not None:
                    out.append(levels)
        self._fold_quotes(batch, quotes[done:])
        self._flow.finish()
        return out

    def _fold_quotes(self, batch: ColumnBatch, rows: np.ndarray) -> None:
        if rows.size == 0:
            return
        inst = batch.instrument[rows]
        # last row of each instrument in this span
        rev_inst = inst[::-1]
        ids, first_in_rev = np.unique(rev_inst, return_index=True)
        last_rows = rows[rows.size - 1 - first_in_rev]
        mids = 0.5 * (batch.bid[last_rows] + batch.ask[last_rows])
        for i, m in zip(ids.tolist(), mids.tolist()):
            self._mids[i] = m

    def _on_instrument(self, ev) -> None:
        if ev.kind not in ("future", ""):
            return
        for root in self._config.futures_roots.values():
            if ev.symbol.startswith(root):
                self._futures[root] = (int(ev.instrument), ev.symbol)
                self._mids.pop(int(ev.instrument), None)  # an id re-declared is a new instrument

    def _on_page(self, ev: PolygonResponse) -> GammaLevels | None:
        pages = self._feed.on_page(ev)
        if pages is None:
            return None
        if not pages:
            self.skipped += 1
            return None
        return self._levels(ev, pages)

    def _on_snapshot(self, ev: ChainSnapshot) -> GammaLevels | None:
        return self._levels(ev, None) if self._feed.snapshots else None

    def _levels(self, ev: PolygonResponse | ChainSnapshot,
                pages: list[PolygonResponse] | None) -> GammaLevels | None:
        """The levels of a chain: its pages, or (None) the ChainSnapshot row `ev`."""
        root = self._config.futures_roots.get(ev.underlying.removeprefix("I:"), "")
        fut_id, fut_symbol = self._futures.get(root, (-1, ""))
        mid = self._mids.get(fut_id, NAN) if root else NAN
        try:
            chain = self._feed.chain(pages) if pages is not None else self._feed.chain_of(ev)
            result = compute_gamma(chain, self._config, mid)
        except MiaError:
            self.skipped += 1
            return None
        levels = gamma_levels(result, ts_recv=ev.ts_recv, futures_symbol=fut_symbol)
        signed = self._flow.signed_for(chain.tickers, result.ts_ns) if len(chain.tickers) == len(chain) else None
        if signed is not None:  # option trades seen this trade date: the flow-adjusted picture
            levels = with_flow(levels, flow_gex(result, chain, signed, self._config))
        self.batch_chains.append((self._pos, ev.underlying, chain.tickers, result.delta, result.gamma,
                                  result.spot))
        self._results[ev.underlying] = result
        self._last[ev.underlying] = levels
        self._last_good[ev.underlying] = levels
        return levels

    def _on_source_error(self, ev: SourceError) -> GammaLevels | None:
        levels = stale_again(self._last_good, ev)
        if levels is not None:
            self._last[ev.underlying] = levels
        return levels
