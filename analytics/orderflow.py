"""Order flow per instrument: aggressor, delta, profile, footprint, VWAP, large trades, bars.

One numba kernel (`_orderflow_kernels.orderflow_run`) folds a ColumnBatch in log order; all
state sits in numpy arrays owned by `OrderflowReducer`, so cutting a stream into batches of any
size gives bit-identical bars (live and replay agree).

Definitions (reference/orderflow.md, section 1):
- Aggressor: the Trade's `side` when nonzero (DTC's AtBidOrAsk); else the quote rule against
  the instrument's last Quote (price >= ask: buy, <= bid: sell, strictly inside: above the mid
  buy, below sell); else (no two-sided quote, or exactly at the mid) the tick rule (uptick buy,
  downtick sell, zero tick: the previous trade's side). The first trade with no information
  stays unknown (0): it counts in volume but in neither buy nor sell volume.
- Sessions: the CME trade date (`calendar.py`: 17:00 America/Chicago opens the next one,
  weekends and holidays roll forward). Cumulative delta, the session volume profile, POC,
  value area, VWAP and its standard deviation reset at each trade-date start. The boundaries
  come from Python (zoneinfo) as an int64 table; the kernel only compares integers.
- Prices are bucketed to the instrument's tick (Instrument.tick_size, else config.default_tick)
  by round(price / tick); the tick is fixed at the instrument's first trade.
- Volume profile, POC and value area: `poc_value_area`. The value area uses the CBOT/
  Steidlmayer two-rows-at-a-time expansion from the POC because it is the rule the Market
  Profile literature and most platforms document (Linnsoft "Method A"), it does not favour
  one-tick spikes the way single-row expansion does, and it is what traders' charts show.
  Ties: a POC tie goes to the row nearest the middle of the profile's range, then the lower
  price; equal pairs above and below are both added. Empty rows inside the range count as
  rows of zero volume.
- VWAP = sum(p v) / sum(v) over the session; `vwap_sd` = sqrt(sum(v (p - vwap)^2) / sum(v)),
  the volume-weighted standard deviation of price around the current VWAP (West's incremental
  update); bands are vwap +/- k * vwap_sd for k in `VWAP_BANDS`.
- Footprint: per price, bid volume (sell aggressors) and ask volume (buy aggressors). A buy
  (ask) imbalance at p: ask(p) >= ratio * bid(p - tick) and ask(p) >= imbalance_min_volume; a
  sell (bid) imbalance at p: bid(p) >= ratio * ask(p + tick) and the same minimum. A zero
  opposite side is an imbalance when the minimum is met; an empty side never is. Stacked:
  the number of maximal runs of >= stacked_min consecutive imbalanced prices on one side.
- Large trades: consecutive fills of an instrument at one price and one known side within
  large_trade_window_ns of the group's first fill are one order. The group counts once, in the
  bar where it reaches large_trade_min_size, with its volume so far; later fills of the group
  add their volume to the bar they fall in.
- Bars: [start, end) on trade ts_event, aligned to bar_interval_ns since the epoch and clipped
  to the trade date. A bar closes when a later Trade, Quote or BookLevel row of its instrument
  has ts_event >= end, or at a RecordingEnded row (every open bar). The OrderflowBar has
  ts_event = end and ts_recv = the ts_recv of the closing row: no wall clock anywhere.
- Book imbalance: top `book_levels` of the depth book (`book.py`) at bar close, NaN without
  depth or while the book needs a resync.
"""

from __future__ import annotations

import math
from typing import Final

import msgspec
import numpy as np

from ..engine.clock import NS_PER_DAY, NS_PER_MS, NS_PER_S
from ..engine.columns import ColumnBatch
from ..engine.config import ConfigBase
from ..engine.errors import ConfigError, MiaError
from ..engine.events import K_INSTRUMENT, K_TRADE, Instrument, OrderflowBar
from ..engine.lazy import lazy_module
from .book import BookSnapshot, BookState
from .calendar import session_table

K = lazy_module("mia.analytics._orderflow_kernels")  # numba: imported at the first kernel call
_kn = lazy_module("mia.analytics._kinds")

VWAP_BANDS: Final = (0.5, 1.0, 1.5, 2.0)
NAN: Final = math.nan


class OrderflowConfig(ConfigBase):
    """`[orderflow]` in mia.toml: the same names from the file to the kernels."""

    bar_interval_s: float = 60.0
    imbalance_ratio: float = 3.0
    imbalance_min_volume: float = 10.0
    stacked_min: int = 3
    large_trade_min_size: float = 20.0  # contracts, after grouping fills into orders
    large_trade_window_ms: float = 5.0
    book_levels: int = 5
    value_area: float = 0.70
    default_tick: float = 0.25
    max_book_levels: int = 10

    def __post_init__(self) -> None:
        if self.bar_interval_ns <= 0:
            raise ConfigError(f"orderflow.bar_interval_s must be > 0, got {self.bar_interval_s}")
        if not 0.0 < self.value_area <= 1.0:
            raise ConfigError(f"orderflow.value_area must be in (0, 1], got {self.value_area}")
        if not self.default_tick > 0.0:
            raise ConfigError(f"orderflow.default_tick must be > 0, got {self.default_tick}")
        if self.stacked_min < 1:
            raise ConfigError(f"orderflow.stacked_min must be >= 1, got {self.stacked_min}")

    @property
    def bar_interval_ns(self) -> int:
        return round(self.bar_interval_s * NS_PER_S)

    @property
    def large_trade_window_ns(self) -> int:
        return round(self.large_trade_window_ms * NS_PER_MS)


DEFAULT_CONFIG: Final = OrderflowConfig()


class VolumeProfile(msgspec.Struct, frozen=True):
    """Volume by price (one row per tick from the lowest to the highest traded price)."""

    instrument: int
    prices: np.ndarray
    volume: np.ndarray
    poc: float
    va_low: float
    va_high: float


class Footprint(msgspec.Struct, frozen=True):
    """Bid volume (sell aggressors) and ask volume (buy aggressors) per price."""

    instrument: int
    prices: np.ndarray
    bid_volume: np.ndarray
    ask_volume: np.ndarray


class InstrumentSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One instrument over everything the reducer has seen: the fields of `mia replay --json`.

    `cum_delta` is buy_volume - sell_volume over everything seen (the bars carry the per-trade-
    date cumulative delta); `poc`, `va_low`, `va_high` are those of the whole profile. Prices
    are NaN (JSON null through `mia.engine.jsonenc`) before the instrument's first trade.
    """

    symbol: str
    trades: int = 0
    volume: float = 0.0
    buy_volume: float = 0.0
    sell_volume: float = 0.0
    cum_delta: float = 0.0
    vwap: float = NAN
    poc: float = NAN
    va_low: float = NAN
    va_high: float = NAN
    high: float = NAN
    low: float = NAN
    last: float = NAN


class OrderflowReducer:
    """Folds ColumnBatches into order-flow state and emits one OrderflowBar per closed bar."""

    def __init__(self, config: OrderflowConfig = DEFAULT_CONFIG) -> None:
        self.config = config
        self.book_state = BookState(config.max_book_levels, capacity=4)
        cap = self.book_state.capacity
        self._istate = np.zeros((cap, K.N_ISTATE), dtype=np.int64)
        self._fstate = np.zeros((cap, K.N_FSTATE), dtype=np.float64)
        self._init_rows(0, cap)
        self._levels = np.zeros((cap, 1024, K.N_LEVELS), dtype=np.float64)
        self._out_i = np.zeros((64, K.N_OUT_I), dtype=np.int64)
        self._out_f = np.zeros((64, K.N_OUT_F), dtype=np.float64)
        self._n_out = np.zeros(1, dtype=np.int64)
        self._sess_starts = np.zeros(0, dtype=np.int64)
        self._sess_dates = np.zeros(0, dtype=np.int64)
        self._symbols: dict[int, str] = {}

    # --- state growth -----------------------------------------------------------------------

    def _init_rows(self, lo: int, hi: int) -> None:
        self._fstate[lo:hi, K.F_TICK] = self.config.default_tick
        self._fstate[lo:hi, K.F_BID] = np.nan
        self._fstate[lo:hi, K.F_ASK] = np.nan

    def _grow_instruments(self, instrument: int) -> None:
        old = self._istate.shape[0]
        self.book_state.ensure(instrument)
        new = self.book_state.capacity
        istate = np.zeros((new, K.N_ISTATE), dtype=np.int64)
        istate[:old] = self._istate
        fstate = np.zeros((new, K.N_FSTATE), dtype=np.float64)
        fstate[:old] = self._fstate
        levels = np.zeros((new,) + self._levels.shape[1:], dtype=np.float64)
        levels[:old] = self._levels
        self._istate, self._fstate, self._levels = istate, fstate, levels
        self._init_rows(old, new)

    def _grow_output(self) -> None:
        n = self._out_i.shape[0]
        need = max(2 * n, n + self._istate.shape[0] + 1)
        out_i = np.zeros((need, K.N_OUT_I), dtype=np.int64)
        out_f = np.zeros((need, K.N_OUT_F), dtype=np.float64)
        out_i[:n] = self._out_i
        out_f[:n] = self._out_f
        self._out_i, self._out_f = out_i, out_f

    def _grow_prices(self, instrument: int, index: int) -> None:
        """Widen the price axis so `index` fits; every instrument is re-centred on its range."""
        width = self._levels.shape[1]
        ist = self._istate
        seen = ist[:, K.I_SEEN] != 0
        lo = np.where(seen, ist[:, K.I_TOT_LO], 0)
        hi = np.where(seen, ist[:, K.I_TOT_HI], 0)
        lo[instrument] = min(lo[instrument], index)
        hi[instrument] = max(hi[instrument], index)
        span = int((hi - lo).max()) + 1
        new_width = width
        while new_width < 2 * span + 64:
            new_width *= 2
        levels = np.zeros((ist.shape[0], new_width, K.N_LEVELS), dtype=np.float64)
        for i in np.flatnonzero(seen):
            old_base = int(ist[i, K.I_BASE])
            new_base = int(lo[i] + hi[i]) // 2 - new_width // 2
            # everything with data lies within [I_TOT_LO, I_TOT_HI]
            a, b = int(ist[i, K.I_TOT_LO]), int(ist[i, K.I_TOT_HI])
            levels[i, a - new_base : b - new_base + 1] = self._levels[i, a - old_base : b - old_base + 1]
            ist[i, K.I_BASE] = new_base
        self._levels = levels

    def _cover_sessions(self, batch: ColumnBatch) -> None:
        n, lo, hi = _kn.ts_range(batch.kind, batch.ts_event, K_TRADE)  # the trades' ts_event range
        if n == 0:
            return
        lo, hi = int(lo), int(hi)
        starts = self._sess_starts
        if len(starts) >= 2 and starts[0] <= lo and hi < starts[-1]:
            return
        if len(starts):
            lo, hi = min(lo, int(starts[0])), max(hi, int(starts[-1]))
        # cover some days beyond so a live stream rebuilds the table rarely
        self._sess_starts, self._sess_dates = session_table(lo, hi + 7 * NS_PER_DAY)

    def _row_ticks(self, batch: ColumnBatch) -> np.ndarray:
        ticks = np.full(len(batch), np.nan)
        for r in np.flatnonzero(batch.kind == K_INSTRUMENT):
            ev = batch.objects[batch.obj[r]]
            if isinstance(ev, Instrument):
                self._symbols[ev.instrument] = ev.symbol
                if ev.tick_size == ev.tick_size and ev.tick_size > 0:
                    ticks[r] = ev.tick_size
        return ticks

    # --- public API -------------------------------------------------------------------------

    def on_batch(self, batch: ColumnBatch) -> list[OrderflowBar]:
        """Fold one batch (events in log order); returns the bars it closed, in close order."""
        if len(batch) == 0:
            return []
        cfg = self.config
        row_tick = self._row_ticks(batch)
        self._cover_sessions(batch)
        self._n_out[0] = 0
        start = 0
        while True:
            bs = self.book_state
            status, row, a, b = K.orderflow_run(
                batch.kind, batch.ts_event, batch.ts_recv, batch.instrument, batch.price,
                batch.size, batch.side, batch.bid, batch.ask, batch.action, batch.flags,
                row_tick, self._sess_starts, self._sess_dates,
                self._istate, self._fstate, self._levels, bs.px, bs.sz, bs.nlev, bs.bstate,
                self._out_i, self._out_f, self._n_out,
                cfg.bar_interval_ns, cfg.imbalance_ratio, cfg.imbalance_min_volume,
                cfg.stacked_min, cfg.large_trade_min_size, cfg.large_trade_window_ns,
                cfg.book_levels, cfg.value_area, start)
            if status == K.DONE:
                break
            if status == K.NEED_INSTRUMENTS:
                self._grow_instruments(int(a))
            elif status == K.NEED_OUTPUT:
                self._grow_output()
            elif status == K.NEED_PRICE_ROOM:
                self._grow_prices(int(a), int(b))
            elif status == K.NEED_SESSIONS:
                raise MiaError(f"orderflow: ts_event {a} at row {row} outside the trade-date table")
            start = int(row)
        return self._bars(int(self._n_out[0]))

    def _bars(self, n: int) -> list[OrderflowBar]:
        out = []
        interval = self.config.bar_interval_ns
        oi = self._out_i[:n].tolist()
        of = self._out_f[:n].tolist()
        for ints, fl in zip(oi, of):
            out.append(OrderflowBar(
                ts_event=ints[K.O_TS_EVENT], ts_recv=ints[K.O_TS_RECV], instrument=ints[K.O_INST],
                bar_start=ints[K.O_BAR_START], interval_ns=interval,
                open=fl[K.OF_OPEN], high=fl[K.OF_HIGH], low=fl[K.OF_LOW], close=fl[K.OF_CLOSE],
                volume=fl[K.OF_VOLUME], buy_volume=fl[K.OF_BUY], sell_volume=fl[K.OF_SELL],
                delta=fl[K.OF_DELTA], cum_delta=fl[K.OF_CUM_DELTA], trades=ints[K.O_TRADES],
                bar_poc=fl[K.OF_BAR_POC], poc=fl[K.OF_POC], va_low=fl[K.OF_VA_LOW],
                va_high=fl[K.OF_VA_HIGH], vwap=fl[K.OF_VWAP], vwap_sd=fl[K.OF_VWAP_SD],
                bid_imbalances=ints[K.O_BID_IMB], ask_imbalances=ints[K.O_ASK_IMB],
                stacked_bid=ints[K.O_STACKED_BID], stacked_ask=ints[K.O_STACKED_ASK],
                book_imbalance=fl[K.OF_BOOK_IMB], large_trades=ints[K.O_LARGE],
                large_buy_volume=fl[K.OF_LARGE_BUY], large_sell_volume=fl[K.OF_LARGE_SELL],
                trading_date=ints[K.O_TDATE],
            ))
        return out

    def _known(self, instrument: int) -> bool:
        return 0 <= instrument < self._istate.shape[0] and self._istate[instrument, K.I_SEEN] != 0

    def _range(self, instrument: int, session: bool) -> tuple[int, int]:
        ist = self._istate[instrument]
        if session:
            return int(ist[K.I_SESS_LO]), int(ist[K.I_SESS_HI])
        return int(ist[K.I_TOT_LO]), int(ist[K.I_TOT_HI])

    def profile(self, instrument: int, session: bool = True) -> VolumeProfile:
        """Volume by price of the current trade date (session=True) or of everything seen."""
        if not self._known(instrument):
            empty = np.zeros(0)
            return VolumeProfile(instrument, empty, empty.copy(), math.nan, math.nan, math.nan)
        lo, hi = self._range(instrument, session)
        base = int(self._istate[instrument, K.I_BASE])
        tick = float(self._fstate[instrument, K.F_TICK])
        col = K.L_SESS_VOL if session else K.L_TOT_VOL
        view = self._levels[instrument, lo - base : hi - base + 1, col]
        poc, va_lo, va_hi = K.poc_value_area(view, self.config.value_area)
        prices = np.arange(lo, hi + 1, dtype=np.float64) * tick
        return VolumeProfile(instrument, prices, view.copy(), (lo + poc) * tick,
                             (lo + va_lo) * tick, (lo + va_hi) * tick)

    def footprint(self, instrument: int, session: bool = True) -> Footprint:
        """Bid x ask volume per price of the current trade date or of everything seen."""
        if not self._known(instrument):
            empty = np.zeros(0)
            return Footprint(instrument, empty, empty.copy(), empty.copy())
        lo, hi = self._range(instrument, session)
        base = int(self._istate[instrument, K.I_BASE])
        tick = float(self._fstate[instrument, K.F_TICK])
        rows = self._levels[instrument, lo - base : hi - base + 1]
        bid_col, ask_col = (K.L_SESS_BID, K.L_SESS_ASK) if session else (K.L_TOT_BID, K.L_TOT_ASK)
        return Footprint(instrument, np.arange(lo, hi + 1, dtype=np.float64) * tick,
                         rows[:, bid_col].copy(), rows[:, ask_col].copy())

    def book(self, instrument: int) -> BookSnapshot:
        return self.book_state.snapshot(instrument)

    def trading_date(self, instrument: int) -> int:
        """The CME trade date of the instrument's current session (0 before its first trade)."""
        return int(self._istate[instrument, K.I_TDATE]) if self._known(instrument) else 0

    def summary(self) -> dict[int, InstrumentSummary]:
        """Per instrument id (declared or traded), over everything seen, in id order."""
        ids = set(self._symbols)
        ids.update(int(i) for i in np.flatnonzero(self._istate[:, K.I_SEEN]))
        out: dict[int, InstrumentSummary] = {}
        for i in sorted(ids):
            symbol = self._symbols.get(i, str(i))
            if not self._known(i):
                out[i] = InstrumentSummary(symbol=symbol)
                continue
            fs = self._fstate[i]
            prof = self.profile(i, session=False)
            out[i] = InstrumentSummary(
                symbol=symbol, trades=int(self._istate[i, K.I_TRADES]), volume=float(fs[K.F_TOT_VOL]),
                buy_volume=float(fs[K.F_TOT_BUY]), sell_volume=float(fs[K.F_TOT_SELL]),
                cum_delta=float(fs[K.F_TOT_BUY] - fs[K.F_TOT_SELL]),
                vwap=float(fs[K.F_TOT_PV] / fs[K.F_TOT_VOL]), poc=prof.poc, va_low=prof.va_low,
                va_high=prof.va_high, high=float(fs[K.F_HIGH]), low=float(fs[K.F_LOW]),
                last=float(fs[K.F_LAST_PRICE]))
        return out

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The whole reducer state as arrays (tests compare them bit for bit)."""
        bs = self.book_state
        return {"istate": self._istate, "fstate": self._fstate, "levels": self._levels,
                "book_px": bs.px, "book_sz": bs.sz, "book_nlev": bs.nlev, "book_state": bs.bstate}
