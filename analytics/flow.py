"""Customer option flow from Polygon's streams: trades signed against the NBBO, OptionFlow bars,
UnusualTrade events, and the day's signed volume per contract behind the flow-adjusted GEX.

Definitions (README "Option flow"):
- Signing (`_flow_kernels.sign_trade`), per contract, in log order: the NBBO is the contract's
  last OptionQuote (usable when bid and ask are finite, 0 <= bid <= ask and ask > 0). Quote rule:
  price >= ask +1 (customer bought), <= bid -1 (sold), strictly inside: above the midpoint +1,
  below -1. At the midpoint, or with no usable NBBO, the tick rule against the contract's
  previous trade price: up +1, down -1, unchanged the sign of that previous trade; 0 (unknown)
  for a first trade with neither.
- Premium = price x size x multiplier (config, 100). Signed values are sign x value.
- Greeks: each contract's delta and gamma from the latest chain of its underlying the gamma
  reducer computed (by ticker, `GammaReducer.batch_chains`), folded at that chain's row, so a
  trade sees the chain before it in the log. Spot: the underlying's last IndexValue ("I:SPX"),
  else that chain's spot. signed delta notional = sign x size x delta x spot x multiplier
  (dollars of underlying); signed gamma notional = sign x size x gamma x spot^2 x 0.01 x
  multiplier (dollars of delta per 1% move). A contract without greeks adds 0 to both.
- OptionFlow bars per underlying: [start, end) on trade ts_event aligned to `bar_interval_s`
  since the epoch and clipped to the CME trade date (as OrderflowBar); a later OptionTrade,
  OptionQuote or IndexValue row of the underlying with ts_event >= end closes the bar (its
  ts_recv), a RecordingEnded row closes every open bar. By-contract lists: one entry per
  contract traded in the bar, sorted by strike, expiry, right.
- UnusualTrade: premium >= `unusual_premium`, size >= `unusual_size`, or a condition in
  `sweep_conditions` (Polygon's options condition 219, "Intermarket Sweep Order"); emitted at
  the trade's row (its ts_event and ts_recv), after a bar the same row closed.
- Trades with a condition in `cancel_conditions` (201, 203, 205, 207: canceled prints) are left
  out of everything; trades with size <= 0 or no price too, and trades whose ts_event is more
  than a day from their ts_recv (a bad timestamp).
- Day signed volume (`DaySignedVolume`, folded inside the gamma reducer's ordered row walk): the
  signed contracts of each contract since the start of the CME trade date (17:00 America/Chicago,
  `calendar.session_table`), reset at the first trade of a new trade date.
Row by row in log order, so the output does not depend on where batches are cut.
"""

from __future__ import annotations

import math
from typing import Final

import msgspec
import numpy as np

from ..engine.clock import NS_PER_DAY, NS_PER_S
from ..engine.columns import ColumnBatch
from ..engine.config import ConfigBase
from ..engine.errors import ConfigError, MiaError
from ..engine.events import (
    K_INDEX_VALUE,
    K_OPTION_QUOTE,
    K_OPTION_TRADE,
    K_RECORDING_ENDED,
    GammaLevels,
    OptionFlow,
    UnusualTrade,
)
from ..engine.lazy import lazy_module
from .calendar import session_table

K = lazy_module("mia.analytics._flow_kernels")  # numba: imported at the first kernel call
_kn = lazy_module("mia.analytics._kinds")

NAN: Final = math.nan
MAX_CLOCK_SKEW_NS: Final = NS_PER_DAY  # a trade's ts_event this far from its ts_recv is left out
SWEEP_CONDITION: Final = 219  # Polygon options condition "Intermarket Sweep Order" (OPRA ISOI)
CANCEL_CONDITIONS: Final = (201, 203, 205, 207)  # Canceled, Last and Canceled, Opening and
# Canceled, Only and Canceled (Polygon's options conditions, /v3/reference/conditions)
REASON_NAMES: Final = (("U_PREMIUM", "premium"), ("U_SIZE", "size"), ("U_SWEEP", "sweep"))


def _reasons(bits: int) -> list[str]:
    """The names of an UnusualTrade's reason bits (the kernels' U_* flags)."""
    return [name for flag, name in REASON_NAMES if bits & getattr(K, flag)]


class FlowConfig(ConfigBase):
    """`[flow]` in mia.toml: option flow bars and the unusual-trade thresholds."""

    bar_interval_s: float = 60.0
    multiplier: float = 100.0  # shares per contract (index options: 100)
    unusual_premium: float = 100_000.0  # dollars: premium at or above this is unusual
    unusual_size: float = 1_000.0  # contracts: a trade at or above this is unusual
    sweep_conditions: tuple[int, ...] = (SWEEP_CONDITION,)
    cancel_conditions: tuple[int, ...] = CANCEL_CONDITIONS

    def __post_init__(self) -> None:
        if self.bar_interval_ns <= 0:
            raise ConfigError(f"flow.bar_interval_s must be > 0, got {self.bar_interval_s}")
        if not self.multiplier > 0:
            raise ConfigError(f"flow.multiplier must be > 0, got {self.multiplier}")
        if not (self.unusual_premium > 0 and self.unusual_size > 0):
            raise ConfigError("flow.unusual_premium and flow.unusual_size must be > 0")

    @property
    def bar_interval_ns(self) -> int:
        return round(self.bar_interval_s * NS_PER_S)


DEFAULT_CONFIG: Final = FlowConfig()


def contract_key(ticker: str) -> str:
    """A contract's key: its OCC ticker without Polygon's "O:" prefix (chains and streams agree)."""
    return ticker[2:] if ticker.startswith("O:") else ticker


def index_underlying(ticker: str) -> str:
    """"I:SPX" -> "SPX" (an IndexValue's underlying)."""
    return ticker[2:] if ticker.startswith("I:") else ticker


class Contracts:
    """The option contracts seen, as small ints: static columns and the kernels' state rows."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}  # by contract key (the ticker without "O:")
        self.by_ticker: dict[str, int] = {}  # by the ticker as received (the fast path)
        self.und_of: list[int] = []  # each contract's underlying
        self.tickers: list[str] = []
        self.underlyings: dict[str, int] = {}
        self.und_names: list[str] = []
        self.strike = np.zeros(0)
        self.expiry = np.zeros(0, np.int64)
        self.s = np.zeros((0, K.N_S))  # float state (K.S_*)
        self.k = np.zeros((0, K.N_K), np.int64)  # int state (K.K_*)

    def __len__(self) -> int:
        return len(self.tickers)

    def und(self, name: str) -> int:
        u = self.underlyings.get(name)
        if u is None:
            u = self.underlyings[name] = len(self.und_names)
            self.und_names.append(name)
        return u

    def add(self, ev) -> int:
        """The contract of an OptionTrade / OptionQuote row, registered on first sight."""
        key = contract_key(ev.ticker)
        i = self.index.get(key)
        if i is not None:
            self.by_ticker[ev.ticker] = i
            return i
        i = self.index[key] = self.by_ticker[ev.ticker] = len(self.tickers)
        self.tickers.append(ev.ticker)
        if i >= self.s.shape[0]:
            cap = max(64, 2 * self.s.shape[0])
            s = np.full((cap, K.N_S), NAN)
            s[:, K.S_VOL] = 0.0
            s[:, K.S_BAR_C:K.S_BAR_G + 1] = 0.0
            s[: self.s.shape[0]] = self.s
            k = np.zeros((cap, K.N_K), np.int64)
            k[: self.k.shape[0]] = self.k
            strike = np.full(cap, NAN)
            strike[: self.strike.shape[0]] = self.strike
            expiry = np.zeros(cap, np.int64)
            expiry[: self.expiry.shape[0]] = self.expiry
            self.s, self.k, self.strike, self.expiry = s, k, strike, expiry
        self.k[i, K.K_UND] = self.und(ev.underlying)
        self.und_of.append(int(self.k[i, K.K_UND]))
        self.k[i, K.K_RIGHT] = int(ev.right)
        self.strike[i] = float(ev.strike)
        self.expiry[i] = int(ev.expiry_ns)
        return i


class FlowRows(msgspec.Struct):
    """The option rows of one batch as arrays (the kernels' input), in log order."""

    pos: np.ndarray  # row positions in the batch
    rk: np.ndarray
    cidx: np.ndarray
    und: np.ndarray
    ts: np.ndarray
    ts_recv: np.ndarray
    a: np.ndarray
    b: np.ndarray
    flags: np.ndarray

    def __len__(self) -> int:
        return int(self.pos.shape[0])

    def trade_ts(self) -> np.ndarray:
        """ts_event of the trades the kernels fold (not those left out): the sessions to cover."""
        return self.ts[(self.rk == K.R_TRADE) & ((self.flags & K.F_CANCEL) == 0)]


_TRADE_QUOTE: Final = np.array([K_OPTION_TRADE, K_OPTION_QUOTE], np.uint8)
_FLOW_KINDS: Final = np.array([K_OPTION_TRADE, K_OPTION_QUOTE, K_INDEX_VALUE, K_RECORDING_ENDED], np.uint8)


def _flags(conditions, sweep: frozenset[int], cancel: frozenset[int]) -> int:
    f = 0
    for c in conditions:
        if c in sweep:
            f |= K.F_SWEEP
        if c in cancel:
            f |= K.F_CANCEL
    return f


def extract_rows(batch: ColumnBatch, contracts: Contracts, *, with_index: bool,
                 sweep: frozenset[int] = frozenset(), cancel: frozenset[int] = frozenset()) -> FlowRows:
    """The batch's OptionTrade / OptionQuote rows (and, `with_index`, IndexValue and
    RecordingEnded rows) as FlowRows; contracts and underlyings registered in row order."""
    pos = np.flatnonzero(np.isin(batch.kind, _FLOW_KINDS if with_index else _TRADE_QUOTE))
    n = pos.size
    kinds = batch.kind[pos]
    objects = batch.objects
    evs = [objects[o] for o in batch.obj[pos].tolist()]
    by_ticker = contracts.by_ticker
    # registration in row order (new contracts and underlyings are rare: one membership test a row)
    for e, k in zip(evs, kinds.tolist()):
        if k == K_OPTION_TRADE or k == K_OPTION_QUOTE:
            if e.ticker not in by_ticker:
                contracts.add(e)
        elif k == K_INDEX_VALUE:
            contracts.und(index_underlying(e.ticker))
    rk = np.full(n, K.R_ENDED, np.int8)
    cidx = np.full(n, -1, np.int64)
    und = np.full(n, -1, np.int64)
    a = np.full(n, NAN)
    b = np.full(n, NAN)
    flags = np.zeros(n, np.uint8)
    und_of = np.asarray(contracts.und_of, np.int64)
    t = np.flatnonzero(kinds == K_OPTION_TRADE)
    if t.size:
        te = [evs[j] for j in t.tolist()]
        ids = np.array([by_ticker[e.ticker] for e in te], np.int64)
        rk[t] = K.R_TRADE
        cidx[t] = ids
        und[t] = und_of[ids]
        a[t] = [e.price for e in te]
        b[t] = [e.size for e in te]
        watch = sweep | cancel
        if watch:
            flags[t] = [0 if watch.isdisjoint(c) else _flags(c, sweep, cancel) for c in (e.conditions for e in te)]
        # a trade stamped more than MAX_CLOCK_SKEW_NS away from its receipt is a bad timestamp:
        # left out (it would otherwise stretch the trade-date table back to 1970)
        skew = np.abs(batch.ts_event[pos[t]] - batch.ts_recv[pos[t]]) > MAX_CLOCK_SKEW_NS
        if skew.any():
            flags[t[skew]] |= K.F_CANCEL
    q = np.flatnonzero(kinds == K_OPTION_QUOTE)
    if q.size:
        qe = [evs[j] for j in q.tolist()]
        ids = np.array([by_ticker[e.ticker] for e in qe], np.int64)
        rk[q] = K.R_QUOTE
        cidx[q] = ids
        und[q] = und_of[ids]
        a[q] = [e.bid for e in qe]
        b[q] = [e.ask for e in qe]
    v = np.flatnonzero(kinds == K_INDEX_VALUE)
    if v.size:
        ve = [evs[j] for j in v.tolist()]
        rk[v] = K.R_INDEX
        und[v] = [contracts.underlyings[index_underlying(e.ticker)] for e in ve]
        a[v] = [e.value for e in ve]
    return FlowRows(pos=pos, rk=rk, cidx=cidx, und=und, ts=batch.ts_event[pos], ts_recv=batch.ts_recv[pos],
                    a=a, b=b, flags=flags)


class Sessions:
    """The CME trade-date table the kernels compare integers against, grown to cover the rows."""

    def __init__(self) -> None:
        self.starts = np.zeros(0, np.int64)

    def cover(self, ts: np.ndarray) -> None:
        if ts.size == 0:
            return
        lo, hi = int(ts.min()), int(ts.max())
        s = self.starts
        if len(s) >= 2 and s[0] <= lo and hi < s[-1]:
            return
        if len(s):
            lo, hi = min(lo, int(s[0])), max(hi, int(s[-1]))
        self.starts, _ = session_table(lo, hi + 7 * NS_PER_DAY)


class DaySignedVolume:
    """The day's signed customer contracts per option contract, for the flow-adjusted GEX.

    Folded inside the gamma reducer's row walk: `begin(batch)`, then `advance(pos)` before each
    row the reducer handles (every option row before it is folded), `finish()` at the end. So
    the volume a chain snapshot sees is exactly that of the trades before its row in the log.
    """

    def __init__(self, config: FlowConfig = DEFAULT_CONFIG) -> None:
        self.contracts = Contracts()
        self._sessions = Sessions()
        self._sess = np.zeros(4, np.int64)  # has, start, end, trades this session
        self.conditions = (frozenset(config.sweep_conditions), frozenset(config.cancel_conditions))
        self._rows: FlowRows | None = None
        self._done = 0
        # the last batch's rows, for the flow reducer that runs next on the same batch (it reads
        # them and this registry instead of reading the event objects a second time)
        self.last: tuple[ColumnBatch | None, FlowRows | None] = (None, None)

    def begin(self, batch: ColumnBatch) -> None:
        if not _kn.kinds_of(batch.kind)[_FLOW_KINDS].any():
            self._rows = None
            self.last = (batch, None)
            return
        sweep, cancel = self.conditions
        rows = extract_rows(batch, self.contracts, with_index=True, sweep=sweep, cancel=cancel)
        self._sessions.cover(rows.trade_ts())
        self._rows, self._done = rows, 0
        self.last = (batch, rows)

    def advance(self, pos: int) -> None:
        """Fold the option rows before batch row `pos`."""
        rows = self._rows
        if rows is None:
            return
        upto = int(np.searchsorted(rows.pos, pos))
        if upto > self._done:
            c = self.contracts
            status, row = K.day_volume_run(rows.rk, rows.cidx, rows.ts, rows.a, rows.b, rows.flags,
                                           self._done, upto, c.s, c.k, self._sess, self._sessions.starts)
            if status != K.DONE:
                raise MiaError(f"flow: ts_event {int(rows.ts[row])} outside the trade-date table")
            self._done = upto

    def finish(self) -> None:
        if self._rows is not None:
            self.advance(int(self._rows.pos[-1]) + 1 if len(self._rows) else 0)
        self._rows = None

    def signed_for(self, tickers, ts_ns: int) -> np.ndarray | None:
        """Signed customer contracts of today per chain row (0 for contracts not traded), or
        None when no trade was folded in the trade date holding `ts_ns` (no flow picture)."""
        sess = self._sess
        if sess[0] == 0 or sess[3] == 0 or not (sess[1] <= ts_ns < sess[2]):
            return None
        index, vol = self.contracts.index, self.contracts.s[:, K.S_VOL]
        idx = np.fromiter((index.get(contract_key(t), -1) for t in tickers), np.int64, len(tickers))
        return np.where(idx >= 0, vol[idx], 0.0)


class FlowGex(msgspec.Struct, frozen=True, eq=False):
    """The flow-adjusted gamma picture of one chain (NaN means none)."""

    zero_gamma: float
    total_gex: float
    call_wall: float
    put_wall: float
    contracts: float  # signed customer contracts folded in (chain contracts with gamma)
    strikes: np.ndarray
    gex_oi: np.ndarray  # OI-only net GEX by strike (compute_gamma's)
    gex_flow: np.ndarray  # flow-adjusted net GEX by strike
    profile_gex: np.ndarray  # flow-adjusted gamma profile over the OI profile's grid


def with_flow(levels: GammaLevels, f: FlowGex | None) -> GammaLevels:
    """The GammaLevels with its flow_* / gex_* fields set (unchanged without a flow picture)."""
    if f is None:
        return levels
    return msgspec.structs.replace(
        levels, flow_zero_gamma=f.zero_gamma, flow_total_gex=f.total_gex, flow_call_wall=f.call_wall,
        flow_put_wall=f.put_wall, flow_contracts=f.contracts, gex_strikes=f.strikes.tolist(),
        gex_oi=f.gex_oi.tolist(), gex_flow=f.gex_flow.tolist())


# --- the flow reducer --------------------------------------------------------------------------


class UnderlyingFlow(msgspec.Struct, kw_only=True):
    """Totals of one underlying over the flow bars it closed (the `flow` entry of --json)."""

    trades: int = 0
    signed_premium: float = 0.0
    unusual: int = 0
    flow_zero_gamma: float = NAN


def _chain_index(chain: list) -> dict[str, int]:
    if chain[3] is None:
        chain[3] = {contract_key(t): j for j, t in enumerate(chain[0])}
    return chain[3]


class FlowReducer:
    """Pure fold: option rows in log order -> OptionFlow bars and UnusualTrade events.

    `greeks` is the fold's GammaReducer (run before this reducer on the same batch): its
    `batch_chains` are folded at their rows, so each trade takes the greeks of the chain
    before it in the log whatever the batch cuts.
    """

    def __init__(self, config: FlowConfig = DEFAULT_CONFIG, *, greeks=None) -> None:
        self.config = config
        self._greeks = greeks
        self._sweep = frozenset(config.sweep_conditions)
        self._cancel = frozenset(config.cancel_conditions)
        # with the gamma reducer's day signed volume (same conditions), its rows and contract
        # registry are shared; this reducer keeps its own state rows (_s, _k)
        shared = getattr(greeks, "flow_volume", None)
        self._shared = shared if shared is not None and shared.conditions == (self._sweep, self._cancel) else None
        self.contracts = self._shared.contracts if self._shared is not None else Contracts()
        self._s = np.zeros((0, K.N_S))
        self._k = np.zeros((0, K.N_K), np.int64)
        self._sessions = Sessions()
        self._u_i = np.zeros((0, K.N_UI), np.int64)
        self._u_f = np.zeros((0, K.N_UF))
        # underlying -> [tickers, delta, gamma, index by contract key (built when first needed:
        # a day without streams never pays for it)]
        self._chains: dict[str, list] = {}
        self._greeks_known = 0  # contracts whose greeks were looked up in the chains
        self._static = 0  # contracts whose static columns (underlying, right) are in _k

    def _grow_underlyings(self) -> None:
        n = len(self.contracts.und_names)
        old = self._u_i.shape[0]
        if n <= old:
            return
        u_i = np.zeros((n, K.N_UI), np.int64)
        u_i[:old] = self._u_i
        u_f = np.zeros((n, K.N_UF))
        u_f[:old] = self._u_f
        u_f[old:, K.UF_SPOT] = NAN
        u_f[old:, K.UF_CHAIN_SPOT] = NAN
        self._u_i, self._u_f = u_i, u_f

    def _grow_state(self) -> None:
        """State rows for every registered contract (the registry may be the gamma reducer's)."""
        c = self.contracts
        n = len(c)
        old = self._s.shape[0]
        if n > old:
            cap = max(64, 2 * old, n)
            s = np.full((cap, K.N_S), NAN)
            s[:, K.S_VOL] = 0.0
            s[:, K.S_BAR_C:K.S_BAR_G + 1] = 0.0
            s[:old] = self._s
            k = np.zeros((cap, K.N_K), np.int64)
            k[:old] = self._k
            self._s, self._k = s, k
        if self._static < n:  # the static columns of the contracts registered since
            self._k[self._static:n, K.K_UND] = c.k[self._static:n, K.K_UND]
            self._k[self._static:n, K.K_RIGHT] = c.k[self._static:n, K.K_RIGHT]
            self._static = n

    def _greeks_of_new(self) -> None:
        """Contracts registered since the last call take their greeks from their chain."""
        c = self.contracts
        self._grow_state()
        for i in range(self._greeks_known, len(c)):
            chain = self._chains.get(c.und_names[int(c.k[i, K.K_UND])])
            if chain is not None:
                j = _chain_index(chain).get(contract_key(c.tickers[i]), -1)
                if j >= 0:
                    self._s[i, K.S_DELTA] = chain[1][j]
                    self._s[i, K.S_GAMMA] = chain[2][j]
        self._greeks_known = len(c)

    def _apply_chain(self, underlying: str, tickers, delta: np.ndarray, gamma: np.ndarray,
                     spot: float) -> None:
        delta = np.asarray(delta, np.float64)
        gamma = np.asarray(gamma, np.float64)
        chain = self._chains[underlying] = [tickers, delta, gamma, None]
        c = self.contracts
        u = c.und(underlying)
        self._grow_underlyings()
        self._u_f[u, K.UF_CHAIN_SPOT] = spot
        self._greeks_of_new()
        mine = np.flatnonzero(c.k[: len(c), K.K_UND] == u)
        if mine.size:
            index = _chain_index(chain)
            j = np.fromiter((index.get(contract_key(c.tickers[i]), -1) for i in mine.tolist()),
                            np.int64, mine.size)
            self._s[mine, K.S_DELTA] = np.where(j >= 0, delta[j], NAN)
            self._s[mine, K.S_GAMMA] = np.where(j >= 0, gamma[j], NAN)

    def on_batch(self, batch: ColumnBatch) -> list:
        chains = list(getattr(self._greeks, "batch_chains", ())) if self._greeks is not None else []
        if self._shared is not None and self._shared.last[0] is batch:
            rows = self._shared.last[1]  # read by the gamma reducer from this very batch
        elif _kn.kinds_of(batch.kind)[_FLOW_KINDS].any():
            rows = extract_rows(batch, self.contracts, with_index=True, sweep=self._sweep,
                                cancel=self._cancel)
        else:
            rows = None
        if rows is None:
            for _, u, tickers, delta, gamma, spot in chains:
                self._apply_chain(u, tickers, delta, gamma, spot)
            return []
        cfg = self.config
        n = len(rows)
        self._grow_underlyings()
        self._sessions.cover(rows.trade_ts())
        sign = np.zeros(n, np.int8)
        reason = np.zeros(n, np.uint8)
        cap = n + len(self.contracts.und_names) + 1
        out_i = np.zeros((cap, K.N_O), np.int64)
        out_f = np.zeros((cap, K.N_UF))
        n_out = np.zeros(1, np.int64)
        out_c = np.zeros(n + len(self.contracts) + 1, np.int64)
        out_cf = np.zeros((out_c.size, 4))
        n_c = np.zeros(1, np.int64)
        done = 0
        # the chains the gamma reducer computed in this batch, at their rows
        cuts = [(int(np.searchsorted(rows.pos, p)), ch) for p, *ch in chains] + [(n, None)]
        for upto, chain in cuts:
            if upto > done:
                self._greeks_of_new()
                status, row = K.flow_run(
                    rows.rk, rows.cidx, rows.und, rows.ts, rows.ts_recv, rows.a, rows.b, rows.flags,
                    done, upto, self._s, self._k, self._u_i, self._u_f, self._sessions.starts,
                    cfg.bar_interval_ns, cfg.multiplier, cfg.unusual_premium, cfg.unusual_size,
                    sign, reason, out_i, out_f, n_out, out_c, out_cf, n_c)
                if status != K.DONE:
                    raise MiaError(f"flow: ts_event {int(rows.ts[row])} outside the trade-date table")
                done = upto
            if chain is not None:
                self._apply_chain(*chain)
        return self._events(batch, rows, sign, reason, out_i[: n_out[0]], out_f, out_c, out_cf)

    def _events(self, batch, rows, sign, reason, out_i, out_f, out_c, out_cf) -> list:
        c = self.contracts
        interval = self.config.bar_interval_ns
        mult = self.config.multiplier
        keyed: list[tuple[int, int, object]] = []
        for ints, fl in zip(out_i.tolist(), out_f[: len(out_i)].tolist()):
            c0, cn = ints[K.O_C0], ints[K.O_CN]
            ids = out_c[c0 : c0 + cn]
            vals = out_cf[c0 : c0 + cn]
            order = np.lexsort((c.k[ids, K.K_RIGHT], c.expiry[ids], c.strike[ids]))
            ids, vals = ids[order], vals[order]
            keyed.append((ints[K.O_POS], 0, OptionFlow(
                ts_event=ints[K.O_TS_EVENT], ts_recv=ints[K.O_TS_RECV],
                underlying=c.und_names[ints[K.O_UND]], bar_start=ints[K.O_BAR_START],
                interval_ns=interval, trades=ints[K.O_TRADES],
                contracts=fl[K.UF_CONTRACTS], premium=fl[K.UF_PREMIUM],
                signed_contracts=fl[K.UF_SC], signed_premium=fl[K.UF_SP],
                signed_delta_notional=fl[K.UF_SD], signed_gamma_notional=fl[K.UF_SG],
                call_premium=fl[K.UF_CALL_P], put_premium=fl[K.UF_PUT_P], unusual=ints[K.O_UNUSUAL],
                strikes=c.strike[ids].tolist(), expiries=c.expiry[ids].tolist(),
                rights=c.k[ids, K.K_RIGHT].tolist(), by_signed_contracts=vals[:, 0].tolist(),
                by_signed_premium=vals[:, 1].tolist(), by_signed_delta=vals[:, 2].tolist(),
                by_signed_gamma=vals[:, 3].tolist())))
        hit = np.flatnonzero(reason)
        objects = batch.objects
        for j, o, bits, side in zip(hit.tolist(), batch.obj[rows.pos[hit]].tolist(), reason[hit].tolist(),
                                    sign[hit].tolist()):
            ev = objects[o]
            # positional, in UnusualTrade's field order (the hot path of a busy tape)
            keyed.append((j, 1, UnusualTrade(
                ev.ts_event, ev.ts_recv, ev.underlying, ev.ticker, ev.right, ev.strike, ev.expiry_ns,
                ev.price, ev.size, ev.price * ev.size * mult, side, _reasons(bits),
                list(ev.conditions), ev.sequence)))
        keyed.sort(key=lambda x: (x[0], x[1]))
        return [e for _, _, e in keyed]


def flow_summary(events, gamma: dict[str, GammaLevels] | None = None) -> dict[str, UnderlyingFlow]:
    """Per underlying: trades and signed premium of the OptionFlow bars, UnusualTrade count, and
    the flow-adjusted zero gamma of the last GammaLevels (the `flow` entry of replay --json)."""
    out: dict[str, UnderlyingFlow] = {}
    for ev in events:
        if isinstance(ev, OptionFlow):
            s = out.setdefault(ev.underlying, UnderlyingFlow())
            s.trades += ev.trades
            s.signed_premium += ev.signed_premium
        elif isinstance(ev, UnusualTrade):
            out.setdefault(ev.underlying, UnderlyingFlow()).unusual += 1
    for u, g in (gamma or {}).items():
        if u in out or g.gex_strikes:
            out.setdefault(u, UnderlyingFlow()).flow_zero_gamma = g.flow_zero_gamma
    return out


def _money(x: float) -> str:
    return f"${x / 1e6:+,.2f}m" if math.isfinite(x) else "-"


def flow_line(ev) -> str:
    """One line for people (`mia tail --flow`) of an OptionFlow bar or an UnusualTrade."""
    from ..engine.clock import utc_datetime

    at = f"{utc_datetime(ev.ts_event):%H:%M:%S}"
    if isinstance(ev, OptionFlow):
        top = ""
        if ev.strikes:
            j = max(range(len(ev.strikes)), key=lambda i: abs(ev.by_signed_premium[i]))
            top = (f"  top {ev.strikes[j]:g}{'C' if ev.rights[j] > 0 else 'P'} "
                   f"{ev.by_signed_contracts[j]:+,.0f} ({_money(ev.by_signed_premium[j])})")
        return (f"{at} {ev.underlying:4} flow  trades {ev.trades:,}  contracts {ev.contracts:,.0f}  "
                f"premium {_money(ev.premium).replace('+', '')}  signed {_money(ev.signed_premium)} "
                f"({ev.signed_contracts:+,.0f} contracts)  calls {_money(ev.call_premium).replace('+', '')} "
                f"puts {_money(ev.put_premium).replace('+', '')}  delta {_money(ev.signed_delta_notional)}  "
                f"gamma {_money(ev.signed_gamma_notional)}/1%  unusual {ev.unusual}{top}")
    if isinstance(ev, UnusualTrade):
        side = {1: "bought", -1: "sold"}.get(ev.side, "side unknown")
        return (f"{at} {ev.underlying:4} UNUSUAL {ev.ticker} {ev.size:,.0f} @ {ev.price:g} "
                f"premium {_money(ev.premium).replace('+', '')} {side} [{','.join(ev.reasons)}]")
    return f"{at} {type(ev).__name__}"


def compile_rows(t: int = 1_700_000_000_000_000_000) -> list:
    """A few option rows that reach every flow kernel (quote, trade, index value, a bar closed
    by a recording end), for the fold's start-up compilation (`Fold.compile`)."""
    from ..engine.events import IndexValue, OptionQuote, OptionTrade, RecordingEnded

    c = dict(ticker="O:SPXW231115C04400000", underlying="SPX", right=1, strike=4400.0,
             expiry_ns=t + 86_400 * NS_PER_S)
    return [OptionQuote(t, t, **c, bid=1.0, bid_size=5.0, ask=1.2, ask_size=5.0),
            OptionTrade(t + 1, t + 1, **c, price=1.2, size=1.0, conditions=[SWEEP_CONDITION]),
            IndexValue(t + 2, t + 2, "I:SPX", 4400.0),
            RecordingEnded(t + 61 * NS_PER_S, t + 61 * NS_PER_S, "warm-up", "stopped")]
