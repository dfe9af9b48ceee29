"""A Polygon (Massive) options-chain API simulator: a real HTTP server on loopback.

It serves ``GET /v3/snapshot/indices`` (I:SPX, I:NDX, I:VIX on the shared paths; a fault
answers chosen rows NOT_ENTITLED) and ``GET /v3/snapshot/options/I:SPX`` and ``I:NDX`` with the response schema of
reference/polygon_gamma.md A1: SPXW/NDXP dailies (PM-settled) and SPX/NDX third-Friday monthlies
(AM-settled) from today to 45 days out, strikes around spot at listed increments, Black-Scholes
greeks (r = q = 0, intraday time) on an IV surface with put skew and a term structure, open
interest clustered at round strikes and near expiries (constant through the day), and volume
that builds through the session. The index value follows ``mia.data.market_path.price_at`` so it
moves with the DTC simulator's ES/NQ under the same seed.

Paging (limit <= 250, opaque cursors in an absolute ``next_url`` without the key), the key
(``Authorization: Bearer`` or ``apiKey=``; 401 otherwise), a per-minute plan limit (429 with
Retry-After) and switchable faults (``.faults``) behave like the real API. The server runs in a
daemon thread (``ThreadingHTTPServer``), so sync tests and a running asyncio loop can both use it.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import hashlib
import logging
import math
import random
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import msgspec
import numpy as np

from mia.data.market_path import atm_iv_at, price_at, vix_at
from mia.engine.clock import NS_PER_DAY, NS_PER_HOUR, NS_PER_MIN, NS_PER_S, Clock, utc_datetime

from .models import INDICES_PATH, NEW_YORK, settlement_ns

log = logging.getLogger(__name__)

SIM_API_KEY: Final = "sim-key-not-a-secret"  # the simulator's default key: no real one, long enough for a client
YEAR_NS: Final = 365 * NS_PER_DAY
MIN_T_NS: Final = NS_PER_MIN  # time to expiry floor: one minute, so 0DTE keeps its greeks
MAX_LIMIT: Final = 250
DEFAULT_LIMIT: Final = 10
EXPIRY_HORIZON_DAYS: Final = 45
CHAIN_PATH: Final = "/v3/snapshot/options/"


@dataclass(frozen=True)
class IndexSpec:
    """How one index's chain is listed."""

    daily_root: str  # PM-settled dailies/weeklies
    monthly_root: str  # AM-settled third-Friday monthlies
    fine_step: float  # strike increment near the money
    coarse_step: float  # increment in the wings
    atm_iv: float  # 30-day ATM implied volatility
    round_strikes: tuple[float, float, float]  # OI clusters at multiples of these


INDEXES: Final[dict[str, IndexSpec]] = {
    "SPX": IndexSpec("SPXW", "SPX", 5.0, 25.0, 0.15, (100.0, 50.0, 25.0)),
    "NDX": IndexSpec("NDXP", "NDX", 10.0, 50.0, 0.19, (500.0, 250.0, 100.0)),
}


@dataclass
class SimFaults:
    """Switches tests flip while the server runs. Counters count down as faults fire."""

    error_count: int = 0  # the next n chain requests answer `error_status`
    error_status: int = 503
    error_probability: float = 0.0  # each chain request fails with this probability
    delay_s: float = 0.0  # every answer waits this long (slow server, client timeouts)
    malformed_count: int = 0  # the next n chain pages are cut-off JSON with status 200
    missing_greeks: bool = False  # no row carries greeks or implied_volatility
    next_url_loop: bool = False  # every next_url points at the same cursor, forever
    huge_body_bytes: int = 0  # pad every chain page with this many bytes of junk
    not_entitled: bool = False  # 403 NOT_AUTHORIZED, as on a plan without options snapshots
    retry_after_s: int | None = None  # force this Retry-After on 429s (None: computed)
    index_not_entitled: set[str] = field(default_factory=set)  # indices rows answered NOT_ENTITLED ("I:VIX")


@dataclass(frozen=True)
class SimRequest:
    """One request the simulator answered (the key is never kept)."""

    t_ns: int
    path: str
    status: int


@dataclass
class _Chain:
    """One underlying's whole chain at one instant, as columns."""

    spot: float
    t_ns: int
    tickers: np.ndarray  # object (str)
    root_am: np.ndarray  # bool
    expiry: np.ndarray  # object (YYYY-MM-DD)
    strike: np.ndarray
    right: np.ndarray  # int8 +1 call / -1 put
    iv: np.ndarray
    price: np.ndarray
    delta: np.ndarray
    gamma: np.ndarray
    theta: np.ndarray
    vega: np.ndarray
    oi: np.ndarray
    volume: np.ndarray
    u1: np.ndarray  # per-contract stable uniforms for sizes and day bars
    u2: np.ndarray


# --- chain construction (pure functions of seed, underlying and time) ---------------------------


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = (x + np.uint64(0x9E3779B97F4A7C15)).astype(np.uint64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _unit(*keys: np.ndarray) -> np.ndarray:
    """Stable uniforms in [0, 1) from integer keys (the same contract always draws the same)."""
    h = np.zeros(np.broadcast(*keys).shape, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in keys:
            h = _splitmix(h ^ np.asarray(k).astype(np.uint64))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


_erf = np.frompyfunc(math.erf, 1, 1)


def _norm_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def _norm_pdf(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def black_scholes(spot: float, strike: np.ndarray, t_years: np.ndarray, iv: np.ndarray,
                  right: np.ndarray) -> tuple[np.ndarray, ...]:
    """Price, delta, gamma (per $1), theta (per calendar day), vega (per vol point); r = q = 0."""
    sq = np.sqrt(t_years)
    d1 = (np.log(spot / strike) + 0.5 * iv * iv * t_years) / (iv * sq)
    d2 = d1 - iv * sq
    pdf = _norm_pdf(d1)
    nd1, nd2 = _norm_cdf(d1), _norm_cdf(d2)
    call = right > 0
    price = np.where(call, spot * nd1 - strike * nd2, strike * (1.0 - nd2) - spot * (1.0 - nd1))
    delta = np.where(call, nd1, nd1 - 1.0)
    gamma = pdf / (spot * iv * sq)
    theta = -spot * pdf * iv / (2.0 * sq) / 365.0
    vega = spot * pdf * sq * 0.01
    return np.maximum(price, 0.0), delta, gamma, theta, vega


SPX_ATM_IV: Final = 0.15  # INDEXES' atm_iv is relative to this: NDX runs about 1.27x SPX's volatility


def atm_iv(spec: IndexSpec, t_years: np.ndarray, *, seed: int | None = None, now_ns: int = 0) -> np.ndarray:
    """ATM IV by maturity. With a seed: the VIX curve of mia.data.market_path at now_ns (SPX ATM
    tracks VIX, upward sloping while VIX is below its long-run mean, moving inversely with the
    index), scaled per index, plus a little event premium in the shortest dates. Without: a
    fixed upward term structure around spec.atm_iv."""
    t = np.asarray(t_years, dtype=np.float64)
    short = 0.04 * np.exp(-t * 365.0 / 2.0)  # 0DTE/1DTE richness intraday
    if seed is None:
        return spec.atm_iv * (0.92 + 0.10 * np.sqrt(np.minimum(t, 1.0) / 0.25) + 0.06 * np.exp(-t * 365.0 / 2.0))
    return atm_iv_at(seed, now_ns, t) * (spec.atm_iv / SPX_ATM_IV) * (1.0 + short)


def skewed_iv(spec: IndexSpec, spot: float, strike: np.ndarray, t_years: np.ndarray, *, seed: int | None = None,
              now_ns: int = 0) -> np.ndarray:
    """Put skew and smile in standardised moneyness ln(K/S) / (atm * sqrt(T)): puts below the
    money richer than calls above it at every maturity, the smile flattening in moneyness."""
    base = atm_iv(spec, t_years, seed=seed, now_ns=now_ns)
    m = np.log(strike / spot) / (base * np.sqrt(t_years))
    return np.clip(base * (1.0 - 0.11 * m + 0.018 * m * m), 0.04, 2.5)


def third_friday(year: int, month: int) -> dt.date:
    first = dt.date(year, month, 1)
    return first + dt.timedelta(days=(4 - first.weekday()) % 7 + 14)


def listed_expiries(underlying: str, now_ns: int, horizon_days: int = EXPIRY_HORIZON_DAYS) -> list[tuple[dt.date, str, bool]]:
    """(expiration date, OCC root, AM-settled) still trading at now_ns, out to horizon_days."""
    spec = INDEXES[underlying]
    today = utc_datetime(now_ns).astimezone(NEW_YORK).date()
    out = []
    for k in range(horizon_days + 1):
        day = today + dt.timedelta(days=k)
        if day.weekday() >= 5:
            continue
        iso = day.isoformat()
        if day == third_friday(day.year, day.month) and settlement_ns(iso, True) > now_ns:
            out.append((day, spec.monthly_root, True))
        if settlement_ns(iso, False) > now_ns:
            out.append((day, spec.daily_root, False))
    return out


def _strikes(spec: IndexSpec, spot: float, t_years: float, wide: bool) -> np.ndarray:
    """Listed strikes: fine increments within ~1.5 sd, coarse ones out to 4 sd (6 for monthlies)."""
    sd = spot * spec.atm_iv * math.sqrt(t_years)
    fine_half = max(1.5 * sd, 0.015 * spot)
    outer = min(max((6.0 if wide else 4.0) * sd, 0.03 * spot), 0.35 * spot)
    fine = np.arange(math.ceil((spot - fine_half) / spec.fine_step), math.floor((spot + fine_half) / spec.fine_step) + 1) * spec.fine_step
    coarse = np.arange(math.ceil((spot - outer) / spec.coarse_step), math.floor((spot + outer) / spec.coarse_step) + 1) * spec.coarse_step
    return np.union1d(fine, coarse)


def build_chain(seed: int, underlying: str, now_ns: int) -> _Chain:
    """The whole chain of `underlying` ("SPX" | "NDX") as it stands at now_ns."""
    spec = INDEXES[underlying]
    spot = price_at(seed, underlying, now_ns)
    day_start = now_ns - now_ns % NS_PER_DAY
    ref_spot = price_at(seed, underlying, day_start)  # OI is set overnight: keyed to the day's open level
    today = utc_datetime(now_ns).astimezone(NEW_YORK).date()
    session_open = int(dt.datetime.combine(today, dt.time(9, 30), NEW_YORK).timestamp()) * NS_PER_S
    session_frac = min(max((now_ns - session_open) / (6.5 * NS_PER_HOUR), 0.0), 1.0)
    parts: dict[str, list[np.ndarray]] = collections.defaultdict(list)
    for day, root, am in listed_expiries(underlying, now_ns):
        iso = day.isoformat()
        settle = settlement_ns(iso, am)
        t = max(settle - now_ns, MIN_T_NS) / YEAR_NS
        ks = _strikes(spec, ref_spot, max(t, 1.0 / 365.0), wide=am)
        n = ks.shape[0]
        for right in (1, -1):
            parts["strike"].append(ks)
            parts["right"].append(np.full(n, right, dtype=np.int8))
            parts["t"].append(np.full(n, t))
            parts["dte"].append(np.full(n, (day - today).days, dtype=np.int64))
            parts["ord"].append(np.full(n, day.toordinal(), dtype=np.int64))
            parts["am"].append(np.full(n, am))
            parts["expiry"].append(np.full(n, iso, dtype=object))
            yymmdd = day.strftime("%y%m%d")
            cp = "C" if right > 0 else "P"
            parts["ticker"].append(np.array([f"O:{root}{yymmdd}{cp}{int(round(k * 1000)):08d}" for k in ks], dtype=object))
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    strike, right, t = cat["strike"], cat["right"], cat["t"]
    iv = skewed_iv(spec, spot, strike, t, seed=seed, now_ns=now_ns)
    price, delta, gamma, theta, vega = black_scholes(spot, strike, t, iv, right)
    key_strike = np.round(strike * 100).astype(np.int64)
    u0 = _unit(np.full(strike.shape, seed), key_strike, cat["ord"], right + 2, cat["am"].astype(np.int64))
    u1 = _unit(u0 * 2**52)
    u2 = _unit(u1 * 2**52)
    # Open interest: a hump around the day's level, heavier puts below and calls above, round
    # strikes and monthlies collecting more, near expiries more than far ones.
    z = np.log(strike / ref_spot) / (spec.atm_iv * np.sqrt((cat["dte"] + 1) / 365.0))
    oi = 3000.0 * np.exp(-0.5 * (z / 1.8) ** 2)
    oi *= np.where((right < 0) & (strike < ref_spot), 1.4, 1.0) * np.where((right > 0) & (strike > ref_spot), 1.15, 1.0)
    r1, r2, r3 = spec.round_strikes
    oi *= np.where(strike % r1 == 0, 3.0, np.where(strike % r2 == 0, 1.8, np.where(strike % r3 == 0, 1.3, 1.0)))
    oi *= np.where(cat["am"], 3.0, 1.0) * (0.5 + 1.3 * np.exp(-cat["dte"] / 12.0))
    oi = np.floor(oi * (0.4 + 1.2 * u0))
    # Volume builds through the session, concentrated near the money and in the front expiry.
    z_now = np.log(strike / spot) / (iv * np.sqrt(t))
    turnover = 0.6 * np.exp(-0.5 * (z_now / 1.5) ** 2) * np.where(cat["dte"] == 0, 4.0, 1.0) + 0.01
    volume = np.floor((oi + 200.0) * turnover * session_frac * (0.3 + 1.4 * u1))
    return _Chain(spot=spot, t_ns=now_ns, tickers=cat["ticker"], root_am=cat["am"], expiry=cat["expiry"],
                  strike=strike, right=right, iv=iv, price=price, delta=delta, gamma=gamma, theta=theta,
                  vega=vega, oi=oi, volume=volume, u1=u1, u2=u2)


def _r(x: float, nd: int = 4) -> float:
    return float(round(x, nd))


def nbbo(px: float) -> tuple[float, float]:
    """The simulated bid and ask around a model price: listed ticks (0.05 below $3, else 0.10),
    about 1.2 % each side, at least a tick (the chain's last_quote and the stream's quotes)."""
    tick = 0.05 if px < 3.0 else 0.10
    half = max(tick, 0.012 * px)
    return max(0.0, math.floor((px - half) / tick) * tick), math.ceil((px + half) / tick) * tick


def contract_row(chain: _Chain, i: int, underlying: str, *, greeks: bool = True, fmv: bool = True) -> dict[str, Any]:
    """Row i of the chain in Polygon's `results[]` shape."""
    now = chain.t_ns
    k = float(chain.strike[i])
    call = chain.right[i] > 0
    px = float(chain.price[i])
    bid, ask = nbbo(px)
    u1, u2 = float(chain.u1[i]), float(chain.u2[i])
    last = max(0.05, round(bid + (ask - bid) * u1, 2))
    prev_close = max(0.05, round(px * (0.85 + 0.3 * u2), 2))
    day_open = max(0.05, round(prev_close * (0.9 + 0.2 * u1), 2))
    vol = float(chain.volume[i])
    row: dict[str, Any] = {
        "break_even_price": _r(k + px if call else k - px),
        "day": {
            "change": _r(last - prev_close),
            "change_percent": _r((last / prev_close - 1.0) * 100.0),
            "close": last,
            "high": _r(max(day_open, last) * (1.0 + 0.05 * u2)),
            "last_updated": now - int(u1 * 60 * NS_PER_S),
            "low": _r(min(day_open, last) * (1.0 - 0.05 * u1)),
            "open": day_open,
            "previous_close": prev_close,
            "volume": vol,
            "vwap": _r((day_open + last) / 2.0),
        },
        "details": {
            "contract_type": "call" if call else "put",
            "exercise_style": "european",
            "expiration_date": chain.expiry[i],
            "shares_per_contract": 100,
            "strike_price": k,
            "ticker": chain.tickers[i],
        },
        "last_quote": {
            "ask": _r(ask, 2),
            "ask_exchange": 302,
            "ask_size": int(1 + 40 * u2),
            "bid": _r(bid, 2),
            "bid_exchange": 302,
            "bid_size": int(1 + 40 * u1),
            "last_updated": now - int(u2 * 5 * NS_PER_S),
            "midpoint": _r((bid + ask) / 2.0),
            "timeframe": "REAL-TIME",
        },
        "last_trade": {
            "conditions": [232],
            "exchange": 302,
            "price": last,
            "sip_timestamp": now - int(u1 * 300 * NS_PER_S),
            "size": int(1 + 19 * u2),
            "timeframe": "REAL-TIME",
        },
        "open_interest": float(chain.oi[i]),
        "underlying_asset": {
            "last_updated": now,
            "ticker": f"I:{underlying}",
            "timeframe": "REAL-TIME",
            "value": _r(chain.spot, 2),
        },
    }
    # Polygon leaves greeks out for deep in-the-money contracts (reference A1).
    if greeks and abs(float(chain.delta[i])) < 0.995:
        row["greeks"] = {
            "delta": _r(float(chain.delta[i]), 6),
            "gamma": float(f"{chain.gamma[i]:.6g}"),
            "theta": _r(float(chain.theta[i]), 6),
            "vega": _r(float(chain.vega[i]), 6),
        }
        row["implied_volatility"] = _r(float(chain.iv[i]), 6)
    if fmv:
        row["fmv"] = _r(px)
    return row


# --- query filtering ------------------------------------------------------------------------


class _BadRequest(Exception):
    pass


_OPS = {"": np.equal, "gte": np.greater_equal, "gt": np.greater, "lte": np.less_equal, "lt": np.less}


def select(chain: _Chain, filters: dict[str, str], sort: str, order: str) -> np.ndarray:
    """Row positions matching Polygon's filters, in the requested order."""
    mask = np.ones(chain.strike.shape, dtype=bool)
    for key, value in filters.items():
        name, _, op = key.partition(".")
        if op not in _OPS:
            raise _BadRequest(f"unknown filter {key}")
        if name == "strike_price":
            try:
                mask &= _OPS[op](chain.strike, float(value))
            except ValueError:
                raise _BadRequest(f"{key} is not a number") from None
        elif name == "expiration_date":
            try:
                dt.date.fromisoformat(value)
            except ValueError:
                raise _BadRequest(f"{key} is not a date") from None
            mask &= _OPS[op](chain.expiry.astype(str), value)  # ISO dates order as strings
        elif name == "contract_type" and op == "":
            if value not in ("call", "put"):
                raise _BadRequest("contract_type must be call or put")
            mask &= chain.right == (1 if value == "call" else -1)
        else:
            raise _BadRequest(f"unknown filter {key}")
    idx = np.flatnonzero(mask)
    if sort == "ticker":
        keys: np.ndarray = chain.tickers[idx].astype(str)
    elif sort == "expiration_date":
        keys = chain.expiry[idx].astype(str)
    elif sort == "strike_price":
        keys = chain.strike[idx]
    else:
        raise _BadRequest("sort must be ticker, expiration_date or strike_price")
    idx = idx[np.argsort(keys, kind="stable")]
    return idx[::-1] if order == "desc" else idx


# --- the server --------------------------------------------------------------------------------


_FILTER_FIELDS = ("strike_price", "expiration_date", "contract_type")


class PolygonSimulator:
    """The simulated API. `start()` binds and serves in a thread; `.url` is its base URL."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, seed: int = 0, api_key: str = SIM_API_KEY,
                 calls_per_minute: float | None = None, clock: Clock | None = None, fmv: bool = True) -> None:
        self.host = host
        self.port = port
        self.seed = seed
        self.calls_per_minute = calls_per_minute
        self.faults = SimFaults()
        self.fmv = fmv
        self._api_key = api_key
        self._clock = clock
        self._lock = threading.Lock()
        self._requests: list[SimRequest] = []
        self._served: collections.deque[int] = collections.deque()
        self._chains: collections.OrderedDict[tuple[str, int], _Chain] = collections.OrderedDict()
        self._counter = 0
        self._rng = random.Random(seed)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._encoder = msgspec.json.Encoder()

    # lifecycle

    def start(self) -> "PolygonSimulator":
        sim = self

        class Handler(_Handler):
            simulator = sim

        server = ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        server.block_on_close = False  # a slow-answer fault must not hold up stop()
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"polygon-sim:{self.port}", daemon=True)
        self._thread.start()
        log.info("polygon simulator listening url=%s seed=%d", self.url, self.seed)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def __enter__(self) -> "PolygonSimulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def requests(self) -> list[SimRequest]:
        """Every answered request so far, in order (timestamps from the simulator's clock)."""
        with self._lock:
            return list(self._requests)

    def now_ns(self) -> int:
        return self._clock.now_ns() if self._clock is not None else time.time_ns()

    # request handling (called from handler threads)

    def chain_at(self, underlying: str, t_s: int) -> _Chain:
        key = (underlying, t_s)
        with self._lock:
            chain = self._chains.get(key)
        if chain is None:
            chain = build_chain(self.seed, underlying, t_s * NS_PER_S)
            with self._lock:
                self._chains[key] = chain
                while len(self._chains) > 8:
                    self._chains.popitem(last=False)
        return chain

    def _request_id(self) -> str:
        with self._lock:
            self._counter += 1
            n = self._counter
        return hashlib.md5(f"{self.seed}:{self.port}:{n}".encode()).hexdigest()

    def handle(self, path: str, query: str, auth_header: str | None) -> tuple[int, dict[str, str], bytes]:
        """Answer one GET: (status, extra headers, body)."""
        faults = self.faults
        if faults.delay_s > 0:
            time.sleep(faults.delay_s)
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        rid = self._request_id()
        key = params.pop("apiKey", None)
        if auth_header is not None and auth_header.startswith("Bearer "):
            key = auth_header[len("Bearer "):]
        if key is None:
            return 401, {}, self._json({"status": "ERROR", "request_id": rid, "error": "API Key was not provided"})
        if key != self._api_key:
            return 401, {}, self._json({"status": "ERROR", "request_id": rid, "error": "Unknown API Key"})
        if faults.not_entitled:
            return 403, {}, self._json({"status": "NOT_AUTHORIZED", "request_id": rid, "message": (
                "You are not entitled to this data. Please upgrade your plan at https://massive.com/pricing")})
        now = self.now_ns()
        if self.calls_per_minute is not None:
            retry_after = self._rate_check(now)
            if retry_after is not None:
                return 429, {"Retry-After": str(retry_after)}, self._json({"status": "ERROR", "request_id": rid, "error": (
                    "You've exceeded the maximum requests per minute, please wait or upgrade your "
                    "subscription to continue. https://massive.com/pricing")})
        if path == INDICES_PATH:
            return 200, {}, self._indices(params, now, rid)
        if not path.startswith(CHAIN_PATH):
            return 404, {}, self._json({"status": "NOT_FOUND", "request_id": rid, "message": "Not found"})
        with self._lock:
            fail = faults.error_count > 0 or (faults.error_probability > 0 and self._rng.random() < faults.error_probability)
            if faults.error_count > 0:
                faults.error_count -= 1
            malformed = faults.malformed_count > 0
            if malformed:
                faults.malformed_count -= 1
        if fail:
            return faults.error_status, {}, self._json({"status": "ERROR", "request_id": rid, "error": "Internal server error"})
        try:
            body = self._chain_page(path[len(CHAIN_PATH):], params, now, rid)
        except _BadRequest as exc:
            return 400, {}, self._json({"status": "ERROR", "request_id": rid, "error": str(exc)})
        if malformed:
            body = body[: max(1, len(body) // 2)]
        return 200, {}, body

    def _rate_check(self, now: int) -> int | None:
        """None if the request may be served (and counts it), else the Retry-After in seconds."""
        assert self.calls_per_minute is not None
        window = NS_PER_MIN
        with self._lock:
            while self._served and self._served[0] <= now - window:
                self._served.popleft()
            if len(self._served) >= max(self.calls_per_minute, 1.0):
                if self.faults.retry_after_s is not None:
                    return self.faults.retry_after_s
                return max(1, math.ceil((self._served[0] + window - now) / NS_PER_S))
            self._served.append(now)
            return None

    def _chain_page(self, underlying_path: str, params: dict[str, str], now: int, rid: str) -> bytes:
        cursor = params.get("cursor")
        if cursor is not None:
            try:
                state = msgspec.json.decode(base64.urlsafe_b64decode(cursor.encode()))
                snap_s, offset, filters, sort, order, limit = (state["t"], state["o"], state["f"], state["s"],
                                                                state["d"], state["l"])
            except Exception:
                raise _BadRequest("invalid cursor") from None
        else:
            snap_s, offset = now // NS_PER_S, 0
            filters = {k: v for k, v in params.items() if k.partition(".")[0] in _FILTER_FIELDS}
            sort = params.get("sort", "ticker")
            order = params.get("order", "asc")
            try:
                limit = int(params.get("limit", DEFAULT_LIMIT))
            except ValueError:
                raise _BadRequest("limit is not an integer") from None
            if limit < 1:
                raise _BadRequest("limit must be at least 1")
            limit = min(limit, MAX_LIMIT)
        underlying = underlying_path[2:] if underlying_path.startswith("I:") else None
        page: dict[str, Any] = {"request_id": rid, "status": "OK"}
        if underlying not in INDEXES:  # a bare "SPX" or an unknown ticker: no contracts, like the real API
            page["results"] = []
            return self._json(page)
        chain = self.chain_at(underlying, snap_s)
        idx = select(chain, filters, sort, order)
        rows = idx[offset: offset + limit]
        greeks = not self.faults.missing_greeks
        page["results"] = [contract_row(chain, int(i), underlying, greeks=greeks, fmv=self.fmv) for i in rows]
        next_offset = limit if self.faults.next_url_loop else offset + limit
        if next_offset < idx.shape[0]:
            token = base64.urlsafe_b64encode(self._encoder.encode(
                {"t": snap_s, "o": next_offset, "f": filters, "s": sort, "d": order, "l": limit})).decode()
            page["next_url"] = f"{self.url}{CHAIN_PATH}{underlying_path}?cursor={token}"
        if self.faults.huge_body_bytes > 0:
            page["padding"] = "x" * self.faults.huge_body_bytes
        return self._json(page)

    def index_value(self, ticker: str, now: int) -> float | None:
        """I:SPX and I:NDX from the index paths, I:VIX from the VIX path; None: unknown ticker."""
        name = ticker[2:] if ticker.startswith("I:") else None
        if name == "VIX":
            return vix_at(self.seed, now)
        if name in INDEXES:
            return price_at(self.seed, name, now)
        return None

    def _indices(self, params: dict[str, str], now: int, rid: str) -> bytes:
        """`/v3/snapshot/indices`: the asked tickers (ticker.any_of, else all three), a per-row
        NOT_FOUND or NOT_ENTITLED (faults.index_not_entitled) with HTTP 200, as the real API."""
        asked = [t for t in params.get("ticker.any_of", "").split(",") if t] or ["I:NDX", "I:SPX", "I:VIX"]
        today = utc_datetime(now).astimezone(NEW_YORK).date()
        open_ns = int(dt.datetime.combine(today, dt.time(9, 30), NEW_YORK).timestamp()) * NS_PER_S
        close_ns = int(dt.datetime.combine(today, dt.time(16, 0), NEW_YORK).timestamp()) * NS_PER_S
        rows: list[dict[str, Any]] = []
        for ticker in asked[:MAX_LIMIT]:
            value = self.index_value(ticker, now)
            if value is None:
                rows.append({"ticker": ticker, "error": "NOT_FOUND", "message": "Ticker not found."})
                continue
            if ticker in self.faults.index_not_entitled:
                rows.append({"ticker": ticker, "error": "NOT_ENTITLED",
                             "message": "Not entitled to this ticker."})
                continue
            o = self.index_value(ticker, open_ns if now >= open_ns else now - NS_PER_DAY)
            prev = self.index_value(ticker, close_ns - NS_PER_DAY)
            hi, lo = max(o, value), min(o, value)
            rows.append({
                "value": _r(value, 2), "name": ticker[2:], "ticker": ticker, "type": "indices",
                "market_status": "open" if open_ns <= now < close_ns else "closed",
                "timeframe": "REAL-TIME", "last_updated": now - now % NS_PER_S,
                "session": {"open": _r(o, 2), "high": _r(hi, 2), "low": _r(lo, 2), "close": _r(value, 2),
                            "previous_close": _r(prev, 2), "change": _r(value - prev, 2),
                            "change_percent": _r((value / prev - 1.0) * 100.0, 3)},
            })
        return self._json({"request_id": rid, "status": "OK", "results": rows})

    def _json(self, obj: dict[str, Any]) -> bytes:
        return msgspec.json.encode(obj)

    def record(self, path: str, status: int) -> None:
        with self._lock:
            self._requests.append(SimRequest(self.now_ns(), path, status))


class _Handler(BaseHTTPRequestHandler):
    simulator: PolygonSimulator
    protocol_version = "HTTP/1.1"
    server_version = "mia-polygon-sim"

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        parts = urlsplit(self.path)
        status, headers, body = self.simulator.handle(parts.path, parts.query, self.headers.get("Authorization"))
        self.simulator.record(parts.path, status)
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout); nothing to answer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server signature)
        pass  # request lines carry an apiKey when clients put it in the URL: never log them
