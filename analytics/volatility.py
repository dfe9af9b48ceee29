"""Volatility: VIX and the VX futures curve (TermStructure), and each chain's implied-volatility
surface (IvSurface): ATM IV per expiry, 25-delta wings, risk reversal, butterfly and the smile.

Term structure (``TermStructureReducer``):
- VIX spot from the DTC instrument named in ``vix_symbols`` (last trade, else quote mid), or from
  Polygon's indices snapshot (``I:VIX``). A ``SourceError(source="dtc", underlying="VIX")`` with
  FALLBACK_OTHER_SOURCE switches to Polygon; with FALLBACK_NONE back to DTC. The preferred source
  is used when it has a value, else the other one; ``vix_source`` says which.
- VX contracts are instruments whose symbol is ``vx_root`` + month code + year digit ("VXZ6");
  the expiry comes from the CFE calendar the fold hands in (``vx_expiry(year, month)``), the year
  the first with that last digit whose contract had not expired a year before the declaration.
  Price: quote mid (bid and ask finite, ask >= bid > 0), else last trade.
- Days to expiry: fractional calendar days from the row's ts_event to the final settlement
  (the expiry date, 09:30 America/New_York: the VIX special opening quotation). Contracts at or
  past settlement are left out of the curve.
- basis = VX1 - VIX, contango = VX2 / VX1 - 1, cm30 linear in days between the two contracts
  straddling ``cm_days`` (30).
- Emitted when an input changes, at most once per ``min_interval_s`` of log time (ts_recv): a
  change inside the interval is emitted at the first relevant row (a VIX/VX row, a Polygon
  response, a source error or the recorder's Heartbeat) at or after the interval's end.

IV surface (``IvSurfaceReducer``), one event per chain snapshot and underlying:
- Spot: the indices snapshot's index value when one arrived within INDEX_SPOT_MAX_AGE_NS before
  the chain, else the chain's own (``underlying_asset.value``), else put-call parity.
- Time to expiry, rate and dividend yield as in mia.analytics.gamma (T floored at one minute;
  r and q of the gamma config).
- IV per contract: Polygon's where sent, else inverted from the mid (bid + ask) / 2.
- Per expiry: the forward from put-call parity at the ``forward_strikes`` strikes nearest spot,
  the smile (out-of-the-money side), ATM IV (smile at the forward, linear in strike), the
  ``wing_delta`` call and put IVs (linear in delta), rr25 = call25 - put25, bf25 =
  (call25 + put25) / 2 - ATM. The smile keeps the points whose OTM option has |delta| >=
  ``smile_min_delta``, at most ``smile_max_points`` of them per expiry (evenly thinned).
- A SourceError falling back to the previous chain re-emits the last surface with stale=True
  (as the gamma reducer does with its levels).
Row by row in log order, so the output does not depend on where batches are cut.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from typing import Final
from zoneinfo import ZoneInfo

import msgspec
import numpy as np

from ..engine.clock import NS_PER_DAY, NS_PER_S, utc_datetime
from ..engine.columns import RIGHT_CALL, RIGHT_PUT, ChainColumns, ColumnBatch
from ..engine.config import ConfigBase
from ..engine.errors import ConfigError, MiaError
from ..engine.events import (
    FALLBACK_NONE,
    FALLBACK_OTHER_SOURCE,
    K_CHAIN_SNAPSHOT,
    K_HEARTBEAT,
    K_INSTRUMENT,
    K_POLYGON_RESPONSE,
    K_QUOTE,
    K_RECORDING_STARTED,
    K_SOURCE_ERROR,
    K_TRADE,
    ChainSnapshot,
    IvSurface,
    PolygonResponse,
    SourceError,
    TermStructure,
)
from ..engine.lazy import lazy_module
from .gamma import (
    INDICES_PATH,
    MIN_T_NS,
    NS_PER_YEAR,
    ChainFeed,
    parity_spot,
    stale_again,
)

kern = lazy_module("mia.analytics._vol_kernels")  # numba: imported at the first kernel call
_kn = lazy_module("mia.analytics._kinds")
_TERM_OBJECTS = np.array([K_INSTRUMENT, K_POLYGON_RESPONSE, K_SOURCE_ERROR, K_HEARTBEAT])
_SURFACE_KINDS = np.array([K_POLYGON_RESPONSE, K_SOURCE_ERROR, K_CHAIN_SNAPSHOT, K_RECORDING_STARTED])

__all__ = [
    "VolatilityConfig",
    "TermStructureReducer",
    "IvSurfaceReducer",
    "compute_surface",
    "vx_contract",
    "VolatilitySummary",
    "volatility_summary",
]

NAN = math.nan
NEW_YORK: Final = ZoneInfo("America/New_York")
MONTH_CODES: Final = "FGHJKMNQUVXZ"
SETTLEMENT_TIME: Final = dt.time(9, 30)  # VX final settlement: the VIX special opening quotation

IndexValues = Callable[[PolygonResponse], list]  # mia.data.polygon.models.index_values
VxExpiry = Callable[[int, int], dt.date]  # mia.data.cfe.vx_expiry(year, month)


class VolatilityConfig(ConfigBase):
    """Knobs of the term-structure and IV-surface reducers."""

    vix_symbols: list[str] = msgspec.field(default_factory=lambda: ["VIX", "$VIX"])  # DTC names of the VIX index
    polygon_vix: str = "I:VIX"
    vx_root: str = "VX"
    min_interval_s: float = 1.0  # term structure: at most one event per this much log time
    cm_days: float = 30.0  # the constant maturity, calendar days
    forward_strikes: int = 3  # put-call parity at this many strikes nearest spot
    wing_delta: float = 0.25
    smile_min_delta: float = 0.05  # smile points whose OTM option has |delta| below this are left out
    smile_max_points: int = 50  # per expiry; more are thinned evenly across the band (ends kept)

    def __post_init__(self) -> None:
        if self.min_interval_s < 0 or self.cm_days <= 0:
            raise ConfigError("volatility: min_interval_s >= 0 and cm_days > 0")
        if self.forward_strikes < 1 or not 0.0 < self.wing_delta < 0.5:
            raise ConfigError("volatility: forward_strikes >= 1 and 0 < wing_delta < 0.5")
        if not 0.0 <= self.smile_min_delta < 0.5 or self.smile_max_points < 2:
            raise ConfigError("volatility: 0 <= smile_min_delta < 0.5 and smile_max_points >= 2")


DEFAULT_CONFIG: Final = VolatilityConfig()


# --- term structure ---------------------------------------------------------------------------


def vx_contract(symbol: str, root: str, declared_ns: int,
                vx_expiry: VxExpiry) -> tuple[int, int] | None:
    """(expiry as YYYYMMDD, settlement instant ns UTC) of a monthly VX symbol ("VXZ6"), or None.

    The year is the first with the symbol's last digit whose contract settles no earlier than a
    year before `declared_ns` (so a decade's digit is never ambiguous for a live contract)."""
    m = re.fullmatch(re.escape(root) + r"([FGHJKMNQUVXZ])(\d)", symbol)
    if m is None:
        return None
    month = MONTH_CODES.index(m.group(1)) + 1
    digit = int(m.group(2))
    today = utc_datetime(declared_ns).date()
    year = today.year - 1
    while year % 10 != digit:
        year += 1
    expiry = vx_expiry(year, month)
    if expiry < today - dt.timedelta(days=366):
        year += 10
        expiry = vx_expiry(year, month)
    settle = dt.datetime.combine(expiry, SETTLEMENT_TIME, tzinfo=NEW_YORK)
    settle_ns = int(settle.timestamp()) * NS_PER_S
    return expiry.year * 10000 + expiry.month * 100 + expiry.day, settle_ns


class _Contract:
    __slots__ = ("symbol", "expiry", "settle_ns", "last", "bid", "ask")

    def __init__(self, symbol: str, expiry: int, settle_ns: int) -> None:
        self.symbol = symbol
        self.expiry = expiry
        self.settle_ns = settle_ns
        self.last = NAN
        self.bid = NAN
        self.ask = NAN

    def price(self) -> float:
        if math.isfinite(self.bid) and math.isfinite(self.ask) and self.ask >= self.bid > 0:
            return 0.5 * (self.bid + self.ask)
        return self.last


class TermStructureReducer:
    """Pure fold: VIX and VX rows in log order -> TermStructure events (see the module doc)."""

    def __init__(self, config: VolatilityConfig = DEFAULT_CONFIG, *,
                 index_values: IndexValues | None = None, vx_expiry: VxExpiry | None = None) -> None:
        self._config = config
        self._index_values = index_values
        self._vx_expiry = vx_expiry
        self._vix_names = frozenset(config.vix_symbols)
        self._interval = int(round(config.min_interval_s * NS_PER_S))
        self._contracts: dict[int, _Contract] = {}  # instrument id -> VX contract
        self._vix_id = -1
        self._ids = np.empty(0, dtype=np.int32)  # ids whose trades/quotes matter
        self._dtc_vix = NAN
        self._dtc_vix_last = NAN
        self._dtc_vix_mid = NAN
        self._poly_vix = NAN
        self._prefer_polygon = False
        self._dirty = False
        self._last_emit: int | None = None
        self._last: TermStructure | None = None

    def last(self) -> TermStructure | None:
        return self._last

    def on_batch(self, batch: ColumnBatch) -> list[TermStructure]:
        kind = batch.kind
        has = _kn.kinds_of(kind)  # most batches: market rows of instruments that are not VIX/VX
        if not has[_TERM_OBJECTS].any() and (len(self._ids) == 0 or not (has[K_TRADE] or has[K_QUOTE])):
            return []  # no row to fold: what the masks below would have found
        objects = (kind == K_INSTRUMENT) | (kind == K_POLYGON_RESPONSE) | (kind == K_SOURCE_ERROR) | (
            kind == K_HEARTBEAT)
        ids = self._ids
        declared = [int(batch.objects[batch.obj[i]].instrument) for i in np.flatnonzero(kind == K_INSTRUMENT)]
        if declared:
            ids = np.union1d(ids, np.asarray(declared, dtype=np.int32))
        market = ((kind == K_TRADE) | (kind == K_QUOTE)) & np.isin(batch.instrument, ids)
        rows = np.flatnonzero(objects | market)
        out: list[TermStructure] = []
        for i in rows.tolist():
            k = int(kind[i])
            if k == K_TRADE or k == K_QUOTE:
                if not self._on_market(batch, i, k):
                    continue  # an instrument declared in this batch but not VIX/VX: not a tick
            elif k == K_INSTRUMENT:
                self._on_instrument(batch.events_at(i))
            elif k == K_POLYGON_RESPONSE:
                self._on_response(batch.events_at(i))
            elif k == K_SOURCE_ERROR:
                self._on_source_error(batch.events_at(i))
            ts_recv = int(batch.ts_recv[i])
            if self._dirty and (self._last_emit is None or ts_recv - self._last_emit >= self._interval):
                ev = self._emit(int(batch.ts_event[i]), ts_recv)
                self._dirty = False
                self._last_emit = ts_recv
                if self._last is None or not _same_curve(ev, self._last):
                    self._last = ev
                    out.append(ev)
        return out

    # --- inputs -------------------------------------------------------------------------------

    def _on_instrument(self, ev) -> None:
        inst = int(ev.instrument)
        had = self._contracts.pop(inst, None) is not None or inst == self._vix_id
        if inst == self._vix_id:
            self._vix_id = -1
        if ev.symbol in self._vix_names:
            self._vix_id = inst
            self._dtc_vix = self._dtc_vix_last = self._dtc_vix_mid = NAN
            had = True
        elif self._vx_expiry is not None:
            c = vx_contract(ev.symbol, self._config.vx_root, int(ev.ts_event), self._vx_expiry)
            if c is not None:
                self._contracts[inst] = _Contract(ev.symbol, c[0], c[1])
                had = True
        ids = set(self._contracts)
        if self._vix_id >= 0:
            ids.add(self._vix_id)
        self._ids = np.asarray(sorted(ids), dtype=np.int32)
        self._dirty |= had

    def _on_market(self, batch: ColumnBatch, i: int, k: int) -> bool:
        """Fold a trade or quote row; False when its instrument is not VIX or a VX contract."""
        inst = int(batch.instrument[i])
        if inst == self._vix_id:
            if k == K_TRADE:
                p = float(batch.price[i])
                if math.isfinite(p) and p > 0:
                    self._dtc_vix_last = p
            else:
                b, a = float(batch.bid[i]), float(batch.ask[i])
                self._dtc_vix_mid = 0.5 * (b + a) if (math.isfinite(b) and math.isfinite(a)
                                                        and a >= b > 0) else NAN
            v = self._dtc_vix_last if math.isfinite(self._dtc_vix_last) else self._dtc_vix_mid
            if not _same(v, self._dtc_vix):
                self._dtc_vix = v
                self._dirty = True
            return True
        c = self._contracts.get(inst)
        if c is None:
            return False
        before = c.price()
        if k == K_TRADE:
            p = float(batch.price[i])
            if math.isfinite(p) and p > 0:
                c.last = p
        else:
            c.bid, c.ask = float(batch.bid[i]), float(batch.ask[i])
        if not _same(before, c.price()):
            self._dirty = True
        return True

    def _on_response(self, ev: PolygonResponse) -> None:
        if ev.path != INDICES_PATH or ev.status != 200 or self._index_values is None:
            return
        try:
            rows = self._index_values(ev)
        except MiaError:
            return
        for row in rows:
            if row.ticker == self._config.polygon_vix and not row.error and math.isfinite(row.value):
                if not _same(row.value, self._poly_vix):
                    self._poly_vix = float(row.value)
                    self._dirty = True

    def _on_source_error(self, ev: SourceError) -> None:
        if ev.source != "dtc" or ev.underlying.removeprefix("I:") != "VIX":
            return
        if ev.fallback_kind == FALLBACK_OTHER_SOURCE and not self._prefer_polygon:
            self._prefer_polygon = True
            self._dirty = True
        elif ev.fallback_kind == FALLBACK_NONE and self._prefer_polygon:
            self._prefer_polygon = False
            self._dirty = True

    # --- output -------------------------------------------------------------------------------

    def _vix(self) -> tuple[float, str]:
        first, second = (("polygon", self._poly_vix), ("dtc", self._dtc_vix)) if self._prefer_polygon \
            else (("dtc", self._dtc_vix), ("polygon", self._poly_vix))
        for name, v in (first, second):
            if math.isfinite(v):
                return v, name
        return NAN, ""

    def _emit(self, ts_event: int, ts_recv: int) -> TermStructure:
        vix, source = self._vix()
        live = []
        for c in self._contracts.values():
            p = c.price()
            if c.settle_ns > ts_event and math.isfinite(p):
                live.append((c.settle_ns, c.symbol, c.expiry, p))
        live.sort()
        days = np.array([(s - ts_event) / NS_PER_DAY for s, _, _, _ in live], dtype=np.float64)
        prices = np.array([p for _, _, _, p in live], dtype=np.float64)
        basis, contango, cm = kern.curve_figures(days, prices, vix, float(self._config.cm_days))
        return TermStructure(
            ts_event=ts_event, ts_recv=ts_recv, vix=vix, vix_source=source,
            symbols=[s for _, s, _, _ in live], expiries=[e for _, _, e, _ in live],
            prices=prices.tolist(), days=days.tolist(), basis=float(basis), contango=float(contango),
            cm30=float(cm))


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _same_curve(a: TermStructure, b: TermStructure) -> bool:
    """The same inputs (days move with time alone, and do not make a new event)."""
    return (_same(a.vix, b.vix) and a.vix_source == b.vix_source and a.symbols == b.symbols
            and len(a.prices) == len(b.prices) and all(_same(x, y) for x, y in zip(a.prices, b.prices)))


# --- IV surface -------------------------------------------------------------------------------


def _thin(idx: np.ndarray, most: int) -> np.ndarray:
    """At most `most` of the positions `idx`, evenly spread, the first and last kept."""
    if idx.size <= most:
        return idx
    return idx[np.unique(np.round(np.linspace(0.0, idx.size - 1.0, most)).astype(np.int64))]


def compute_surface(chain: ChainColumns, spot: float, config: VolatilityConfig = DEFAULT_CONFIG,
                    *, rate: float = 0.0, dividend_yield: float = 0.0, ts_recv: int | None = None,
                    stale: bool = False, staleness_ns: int = 0) -> IvSurface:
    """The IvSurface of one chain at `spot` (see the module doc); ts_event is the chain's time."""
    strike = np.asarray(chain.strike, dtype=np.float64)
    expiry = np.asarray(chain.expiry_ns, dtype=np.int64)
    right = np.asarray(chain.right, dtype=np.int8)
    live = (expiry > chain.ts_ns) & np.isfinite(strike) & (strike > 0) & (
        (right == RIGHT_CALL) | (right == RIGHT_PUT))
    r, q = float(rate), float(dividend_yield)
    t_years = np.maximum(expiry - chain.ts_ns, MIN_T_NS) / NS_PER_YEAR
    src_iv = np.where(live, np.asarray(chain.iv, dtype=np.float64), NAN)
    bid = np.asarray(chain.bid, dtype=np.float64)
    ask = np.asarray(chain.ask, dtype=np.float64)
    iv = kern.chain_ivs(float(spot), strike, t_years, src_iv, bid, ask, right, r, q)
    mid = np.where(np.isfinite(bid) & np.isfinite(ask) & (ask >= bid) & (bid >= 0) & (ask > 0),
                   0.5 * (bid + ask), NAN)
    out: dict[str, list] = {n: [] for n in ("expiries", "forwards", "atm_iv", "put25_iv", "call25_iv",
                                             "rr25", "bf25", "smile_count", "smile_strikes", "smile_iv")}
    for e in np.unique(expiry[live]).tolist():
        rows = np.flatnonzero(live & (expiry == e))
        ks = np.unique(strike[rows])
        pos = np.searchsorted(ks, strike[rows])
        civ, piv, cmid, pmid = (np.full(ks.size, NAN) for _ in range(4))
        is_call = right[rows] == RIGHT_CALL
        # the first contract of a (strike, right) in chain order wins: fill in reverse
        for arr, src, sel in ((civ, iv, is_call), (piv, iv, ~is_call), (cmid, mid, is_call), (pmid, mid, ~is_call)):
            p, r_idx = pos[sel][::-1], rows[sel][::-1]
            arr[p] = src[r_idx]
        t = float(t_years[rows[0]])
        fwd, atm, p25, c25, smile, keep = kern.expiry_smile(
            float(spot), t, r, q, ks, civ, piv, cmid, pmid, int(config.forward_strikes),
            float(config.wing_delta), float(config.smile_min_delta))
        out["expiries"].append(int(e))
        out["forwards"].append(float(fwd))
        out["atm_iv"].append(float(atm))
        out["put25_iv"].append(float(p25))
        out["call25_iv"].append(float(c25))
        out["rr25"].append(float(c25 - p25))
        out["bf25"].append(float(0.5 * (c25 + p25) - atm))
        kept = _thin(np.flatnonzero(keep), int(config.smile_max_points))
        out["smile_count"].append(int(kept.size))
        out["smile_strikes"].extend(ks[kept].tolist())
        out["smile_iv"].extend(smile[kept].tolist())
    return IvSurface(
        ts_event=int(chain.ts_ns), ts_recv=int(chain.ts_ns if ts_recv is None else ts_recv),
        underlying=chain.underlying, spot=float(spot), snapshot_id=int(chain.snapshot_id),
        chain_ts=int(chain.ts_ns), stale=bool(stale), staleness_ns=int(staleness_ns), **out)


class IvSurfaceReducer:
    """Pure fold: Polygon chain pages in log order -> IvSurface, one per complete snapshot.

    Pages are collected as the gamma reducer collects them (per underlying and snapshot_id, the
    final page with every page HTTP 200 completes a snapshot; a newer snapshot drops the
    unfinished pages of older ones), or, when the recording logs them, each ChainSnapshot row
    is the chain (``ChainFeed``); indices snapshots feed the spot (``IndexSpots``).
    """

    def __init__(self, parse_chain: Callable[[list[PolygonResponse]], ChainColumns],
                 config: VolatilityConfig = DEFAULT_CONFIG, *, rate: float = 0.0,
                 dividend_yield: float = 0.0, index_values: IndexValues | None = None) -> None:
        self._parse_chain = parse_chain
        self._config = config
        self._rate = float(rate)
        self._q = float(dividend_yield)
        self._feed = ChainFeed(parse_chain, index_values)
        self._last: dict[str, IvSurface] = {}
        self._last_good: dict[str, IvSurface] = {}
        self.skipped = 0

    def last(self) -> dict[str, IvSurface]:
        return dict(self._last)

    def on_batch(self, batch: ColumnBatch) -> list[IvSurface]:
        kind = batch.kind
        out: list[IvSurface] = []
        if not _kn.kinds_of(kind)[_SURFACE_KINDS].any():
            return out
        for i in np.flatnonzero((kind == K_POLYGON_RESPONSE) | (kind == K_SOURCE_ERROR) | (kind == K_CHAIN_SNAPSHOT)
                                | (kind == K_RECORDING_STARTED)).tolist():
            ev = batch.events_at(i)
            k = int(kind[i])
            if k == K_RECORDING_STARTED:
                self._feed.on_started(ev)
                continue
            if k == K_POLYGON_RESPONSE:
                got = self._on_page(ev)
            elif k == K_CHAIN_SNAPSHOT:
                got = self._surface(ev, None) if self._feed.snapshots else None
            else:
                got = self._on_source_error(ev)
            if got is not None:
                out.append(got)
        return out

    def _on_page(self, ev: PolygonResponse) -> IvSurface | None:
        pages = self._feed.on_page(ev)
        if pages is None:
            return None
        if not pages:
            self.skipped += 1
            return None
        return self._surface(ev, pages)

    def _surface(self, ev: PolygonResponse | ChainSnapshot, pages: list[PolygonResponse] | None) -> IvSurface | None:
        """The surface of a chain: its pages, or (None) the ChainSnapshot row `ev`."""
        try:
            chain = self._feed.chain(pages) if pages is not None else self._feed.chain_of(ev)
            spot = _chain_spot(chain)
            surface = compute_surface(chain, spot, self._config, rate=self._rate, dividend_yield=self._q,
                                      ts_recv=int(ev.ts_recv))
        except MiaError:
            self.skipped += 1
            return None
        self._last[ev.underlying] = surface
        self._last_good[ev.underlying] = surface
        return surface

    def _on_source_error(self, ev: SourceError) -> IvSurface | None:
        surface = stale_again(self._last_good, ev)
        if surface is not None:
            self._last[ev.underlying] = surface
        return surface


class SurfaceError(MiaError):
    """A chain gives no spot to compute implied volatilities at."""


def _chain_spot(chain: ChainColumns) -> float:
    spot = float(chain.spot)
    if spot > 0 and math.isfinite(spot):
        return spot
    expiry = np.asarray(chain.expiry_ns)
    live = (expiry > chain.ts_ns) & np.isfinite(chain.strike) & (np.asarray(chain.strike) > 0)
    spot = parity_spot(chain, live) if live.any() else NAN
    if not (spot > 0 and math.isfinite(spot)):
        raise SurfaceError(f"{chain.underlying} snapshot {chain.snapshot_id}: no spot")
    return spot



# --- summaries --------------------------------------------------------------------------------


def _date_of(ns: int) -> str:
    return utc_datetime(int(ns)).date().isoformat()


def _yyyymmdd(n: int) -> str:
    return f"{n // 10000:04d}-{n // 100 % 100:02d}-{n % 100:02d}"


class VixSummary(msgspec.Struct, frozen=True, kw_only=True):
    """The last TermStructure of a window: VIX spot, the VX curve [symbol, expiry, price],
    VX2/VX1 - 1 and the 30-day constant maturity (NaN, JSON null, when unknown)."""

    spot: float = NAN
    vx: list[tuple[str, str, float]] = []
    contango_1_2: float = NAN
    cm30: float = NAN


class IvSummary(msgspec.Struct, frozen=True, kw_only=True):
    """The last IvSurface of an underlying: ATM IV, rr25 and bf25 by expiry date (YYYY-MM-DD,
    UTC; an AM- and a PM-settled expiry of one date share the key: the later, PM one, stays)."""

    atm: dict[str, float] = {}
    rr25: dict[str, float] = {}
    bf25: dict[str, float] = {}


class VolatilitySummary(msgspec.Struct, frozen=True, kw_only=True):
    """The `volatility` entry of `mia replay --json`."""

    vix: VixSummary = VixSummary()
    iv: dict[str, IvSummary] = {}


def volatility_summary(events) -> VolatilitySummary:
    """The last TermStructure and the last IvSurface per underlying of `events`, summarised."""
    term: TermStructure | None = None
    surfaces: dict[str, IvSurface] = {}
    for ev in events:
        if isinstance(ev, TermStructure):
            term = ev
        elif isinstance(ev, IvSurface):
            surfaces[ev.underlying] = ev
    vix = VixSummary()
    if term is not None:
        vix = VixSummary(spot=term.vix, vx=[(s, _yyyymmdd(e), p) for s, e, p in
                                            zip(term.symbols, term.expiries, term.prices)],
                         contango_1_2=term.contango, cm30=term.cm30)
    iv = {}
    for u in sorted(surfaces):
        s = surfaces[u]
        dates = [_date_of(e) for e in s.expiries]
        iv[u] = IvSummary(atm=dict(zip(dates, s.atm_iv)), rr25=dict(zip(dates, s.rr25)),
                          bf25=dict(zip(dates, s.bf25)))
    return VolatilitySummary(vix=vix, iv=iv)
