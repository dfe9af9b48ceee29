"""chain_columns (column-at-a-time) is bit-identical to the row-at-a-time implementation it
replaced, kept here as the reference: on the fixtures, on simulator chains, and on simulator
rows mangled into every case it must skip or fill with NaN. chain_row_count accounts for every
row the same selection read: placed, repeated or dropped (and why)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Sequence

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mia.data.polygon import models
from mia.data.polygon.models import (
    DROP_NOT_CALL_PUT,
    DROP_NOT_OCC,
    PolygonDecodeError,
    chain_columns,
    chain_row_count,
)
from mia.data.polygon.server import build_chain, contract_row
from mia.engine.columns import RIGHT_CALL, RIGHT_PUT, ChainColumns
from mia.engine.events import PolygonResponse

DATA = Path(__file__).parent / "data" / "polygon"
NOW = 1_795_183_200 * 1_000_000_000  # 2026-11-20 14:00 UTC
# an OCC option symbol, written independently of models: root (1-6), yymmdd, C/P, strike x 1000
OCC = re.compile(r"(?:O:)?([A-Z0-9]{1,6})[0-9]{6}[CP][0-9]{8}")
ARRAYS = ("strike", "expiry_ns", "right", "open_interest", "volume", "iv", "delta", "gamma",
          "theta", "vega", "bid", "ask", "multiplier", "am_settled")


# --- the reference: chain_columns as it was before it went column-at-a-time ---------------------


def _f(x: float | None) -> float:
    return math.nan if x is None else x


def reference_chain_columns(responses: Sequence[PolygonResponse]) -> ChainColumns:
    """The pages of one snapshot as ChainColumns, one row per distinct contract ticker.

    Rows keep first-seen order (pages in the given order); a ticker seen again is dropped (the
    paging bugs of reference A1 repeat rows). Rows without ticker, strike, expiration date or a
    call/put type cannot be placed and are skipped. Missing greeks, IV, OI, volume and quotes are
    NaN. A page that is not a 200 chain page raises PolygonDecodeError.
    """
    if not responses:
        raise PolygonDecodeError("chain_columns: no pages")
    seen: set[str] = set()
    tickers: list[str] = []
    strike: list[float] = []
    expiry: list[int] = []
    right: list[int] = []
    oi: list[float] = []
    volume: list[float] = []
    iv: list[float] = []
    delta: list[float] = []
    gamma: list[float] = []
    theta: list[float] = []
    vega: list[float] = []
    bid: list[float] = []
    ask: list[float] = []
    mult: list[float] = []
    am: list[bool] = []
    spot_value = math.nan
    spot_price = math.nan
    nan = math.nan
    for resp in responses:
        if resp.status != 200:
            raise PolygonDecodeError(
                f"{resp.underlying} snapshot {resp.snapshot_id} page {resp.page}: HTTP {resp.status} is not a chain page"
            )
        try:
            page = models._lean_decoder.decode(resp.body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise PolygonDecodeError(
                f"{resp.underlying} snapshot {resp.snapshot_id} page {resp.page}: body ({len(resp.body)} bytes) "
                f"does not decode as an options-chain page: {exc}") from None
        for row in page.results or ():
            d = row.details
            if d is None or d.ticker is None or d.strike_price is None or d.expiration_date is None:
                continue
            if d.contract_type == "call":
                r = RIGHT_CALL
            elif d.contract_type == "put":
                r = RIGHT_PUT
            else:
                continue
            t = d.ticker
            if t in seen:
                continue
            occ = OCC.fullmatch(t)
            if occ is None:
                continue  # no root, so no settlement time: cannot be placed
            is_am = occ.group(1) in models.AM_SETTLED_ROOTS
            try:
                exp_ns = models.settlement_ns(d.expiration_date, is_am)
            except ValueError:
                continue
            seen.add(t)
            tickers.append(t)
            strike.append(d.strike_price)
            expiry.append(exp_ns)
            right.append(r)
            am.append(is_am)
            mult.append(100.0 if d.shares_per_contract is None else d.shares_per_contract)
            oi.append(_f(row.open_interest))
            iv.append(_f(row.implied_volatility))
            day = row.day
            volume.append(nan if day is None else _f(day.volume))
            g = row.greeks
            if g is None:
                delta.append(nan)
                gamma.append(nan)
                theta.append(nan)
                vega.append(nan)
            else:
                delta.append(_f(g.delta))
                gamma.append(_f(g.gamma))
                theta.append(_f(g.theta))
                vega.append(_f(g.vega))
            q = row.last_quote
            if q is None:
                bid.append(nan)
                ask.append(nan)
            else:
                bid.append(_f(q.bid))
                ask.append(_f(q.ask))
            u = row.underlying_asset
            if u is not None:
                if u.value is not None:
                    spot_value = u.value
                if u.price is not None:
                    spot_price = u.price
    last = responses[-1]
    f64 = np.float64
    return ChainColumns(
        underlying=models.plain_underlying(last.underlying),
        ts_ns=last.ts_recv,
        spot=spot_value if not math.isnan(spot_value) else spot_price,
        strike=np.array(strike, dtype=f64),
        expiry_ns=np.array(expiry, dtype=np.int64),
        right=np.array(right, dtype=np.int8),
        open_interest=np.array(oi, dtype=f64),
        volume=np.array(volume, dtype=f64),
        iv=np.array(iv, dtype=f64),
        delta=np.array(delta, dtype=f64),
        gamma=np.array(gamma, dtype=f64),
        theta=np.array(theta, dtype=f64),
        vega=np.array(vega, dtype=f64),
        bid=np.array(bid, dtype=f64),
        ask=np.array(ask, dtype=f64),
        multiplier=np.array(mult, dtype=f64),
        am_settled=np.array(am, dtype=bool),
        tickers=tuple(tickers),
        snapshot_id=last.snapshot_id,
    )


# --- comparisons ------------------------------------------------------------------------------


def assert_identical(a: ChainColumns, b: ChainColumns) -> None:
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), name  # bits: NaNs included
    assert a.tickers == b.tickers
    assert (a.underlying, a.ts_ns, a.snapshot_id) == (b.underlying, b.ts_ns, b.snapshot_id)
    assert a.spot == b.spot or (math.isnan(a.spot) and math.isnan(b.spot))


def page_response(body: bytes, page: int, final: bool, status: int = 200) -> PolygonResponse:
    return PolygonResponse(NOW + page, NOW + page, "I:SPX", "/v3/snapshot/options/I:SPX",
                           "limit=250", status, f"r{page}", 1000, body, 3, page, final)


def sim_rows(underlying: str, n: int, greeks: bool = True) -> list[dict]:
    """n rows spread over the simulator's whole chain (every expiry, both rights)."""
    chain = build_chain(1, underlying, NOW)
    picks = np.unique(np.linspace(0, len(chain.strike) - 1, n).astype(int))
    return [contract_row(chain, int(i), underlying, greeks=greeks) for i in picks]


def pages_of(rows: list[dict], per_page: int) -> list[PolygonResponse]:
    chunks = [rows[i:i + per_page] for i in range(0, len(rows), per_page)] or [[]]
    return [page_response(msgspec.json.encode({"status": "OK", "request_id": f"r{k}",
                                               "results": c}), k, k == len(chunks) - 1)
            for k, c in enumerate(chunks)]


def test_fixtures_are_identical_to_the_reference():
    pages = [page_response((DATA / "spx_page1.json").read_bytes(), 0, False),
             page_response((DATA / "spx_page2.json").read_bytes(), 1, True)]
    assert_identical(chain_columns(pages), reference_chain_columns(pages))


@pytest.mark.parametrize("underlying", ["SPX", "NDX"])
def test_simulator_chains_are_identical_to_the_reference(underlying):
    pages = pages_of(sim_rows(underlying, 1200), 250)
    new = chain_columns(pages)
    assert len(new) > 500 and new.am_settled.any() and not new.am_settled.all()
    assert (new.right == RIGHT_CALL).any() and (new.right == RIGHT_PUT).any()
    assert_identical(new, reference_chain_columns(pages))
    bare = pages_of(sim_rows(underlying, 300, greeks=False), 100)
    assert_identical(chain_columns(bare), reference_chain_columns(bare))


def _mangle(row: dict, how: int, k: int) -> dict:
    row = msgspec.json.decode(msgspec.json.encode(row))  # a deep copy
    d = row.setdefault("details", {})
    if how == 1:
        del row["details"]
    elif how == 2:
        d.pop(("ticker", "strike_price", "expiration_date", "contract_type")[k % 4], None)
    elif how == 3:
        d["contract_type"] = "other"
    elif how == 4:
        d["expiration_date"] = "2026-13-45"  # does not parse: skipped
    elif how == 5:
        row.pop(("greeks", "day", "last_quote", "underlying_asset")[k % 4], None)
    elif how == 6:
        for part in ("greeks", "last_quote", "day", "underlying_asset"):
            if isinstance(row.get(part), dict) and row[part]:
                row[part].pop(sorted(row[part])[k % len(row[part])])
    elif how == 7:
        row["open_interest"] = None
        row["implied_volatility"] = None
        d["shares_per_contract"] = None
    elif how == 8:
        d["ticker"] = ("O:SPX", "SPX261218C04500000", "O:X", "", "O:" + "9" * 15, "FOO",
                       "O:SPXW261218C0450000X", "O:spxw261218C04500000", "O:SPXWEEK261218C04500000")[k % 9]
    elif how == 9:
        d["shares_per_contract"] = 10
        d["strike_price"] = 4500  # an int in a float field
    return row


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 59), st.integers(0, 9), st.integers(0, 20)),
                min_size=0, max_size=80), st.integers(1, 30))
def test_mangled_rows_are_identical_to_the_reference(picks, per_page):
    base = SIM_ROWS
    rows = [_mangle(base[i], how, k) for i, how, k in picks]  # repeats: duplicate tickers
    pages = pages_of(rows, per_page)
    ref = reference_chain_columns(pages)
    assert_identical(chain_columns(pages), ref)
    count = chain_row_count(pages)
    assert count.rows == len(rows) and count.placed == len(ref)
    assert count.placed + count.duplicates + count.n_dropped == count.rows


def test_errors_are_the_reference_errors():
    bad = [page_response(b"{not json", 0, True)]
    with pytest.raises(PolygonDecodeError, match="page 0"):
        chain_columns(bad)
    with pytest.raises(PolygonDecodeError, match="HTTP 429"):
        chain_columns([page_response(b"{}", 0, True, status=429)])


SIM_ROWS = sim_rows("SPX", 60)


def test_rows_that_cannot_be_placed_are_counted_with_their_reason():
    # Arrange: 40 rows whose tickers are not OCC option symbols, then a chain with some of each
    rows = SIM_ROWS[:40]
    foo = [{**r, "details": {**r["details"], "ticker": f"FOO{i}"}} for i, r in enumerate(rows)]
    mixed = ([{**r, "details": {**r["details"], "contract_type": "other"}} for r in rows[:3]]
             + foo[3:5] + rows[5:40] + rows[10:12])

    # Act
    none_placed = pages_of(foo, 25)
    some_placed = pages_of(mixed, 25)

    # Assert: chain_columns keeps nothing of the first, and the count says so in one line
    assert len(chain_columns(none_placed)) == 0
    count = chain_row_count(none_placed)
    assert (count.rows, count.placed, count.duplicates, count.dropped) == (40, 0, 0, {DROP_NOT_OCC: 40})
    assert count.describe() == "SPX chain: 40 of 40 rows dropped: ticker not an OCC option symbol (e.g. 'FOO0')"
    count = chain_row_count(some_placed)
    assert (count.rows, count.placed, count.duplicates) == (42, 35, 2) == (len(mixed), len(chain_columns(some_placed)), 2)
    assert count.dropped == {DROP_NOT_CALL_PUT: 3, DROP_NOT_OCC: 2}
    assert count.describe() == ("SPX chain: 5 of 42 rows dropped: 3 contract type not call or put (e.g. 'other'); "
                                "2 ticker not an OCC option symbol (e.g. 'FOO3')")
