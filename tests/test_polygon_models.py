"""Chain models and chain_columns on recorded JSON fixtures."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mia.data.polygon.models import (
    PolygonDecodeError,
    api_underlying,
    chain_columns,
    occ_root,
    parse_error,
    parse_page,
    settlement_ns,
)
from mia.engine.columns import RIGHT_CALL, RIGHT_PUT
from mia.engine.errors import MiaError
from mia.engine.events import EventCodec, PolygonResponse

DATA = Path(__file__).parent / "data" / "polygon"


def fixture(name: str) -> bytes:
    return (DATA / name).read_bytes()


def response(body: bytes, page: int, *, ts: int, final: bool, status: int = 200, snapshot_id: int = 7,
             underlying: str = "SPX") -> PolygonResponse:
    return PolygonResponse(ts_event=ts, ts_recv=ts, underlying=underlying, path="/v3/snapshot/options/I:SPX",
                           query="limit=250", status=status, request_id=f"r{page}", elapsed_ns=1000, body=body,
                           snapshot_id=snapshot_id, page=page, final=final)


def utc_ns(y: int, mo: int, d: int, h: int, mi: int) -> int:
    return int(dt.datetime(y, mo, d, h, mi, tzinfo=dt.timezone.utc).timestamp()) * 1_000_000_000


@pytest.fixture
def spx_chain():
    pages = [response(fixture("spx_page1.json"), 0, ts=100, final=False),
             response(fixture("spx_page2.json"), 1, ts=250, final=True)]
    return chain_columns(pages)


def test_parse_page_reads_every_documented_field():
    page = parse_page(fixture("spx_page1.json"))
    assert page.status == "OK" and page.request_id == "req-page-1"
    assert page.next_url is not None and "cursor=" in page.next_url
    row = page.results[0]
    assert row.details.ticker == "O:SPX251219C06000000"
    assert row.details.exercise_style == "european" and row.details.shares_per_contract == 100
    assert row.greeks.gamma == pytest.approx(0.0031) and row.implied_volatility == pytest.approx(0.16)
    assert row.last_quote.bid == pytest.approx(12.3) and row.last_quote.timeframe == "REAL-TIME"
    assert row.last_trade.conditions == [232] and row.day.volume == 340.0
    assert row.underlying_asset.value == pytest.approx(5987.65) and row.underlying_asset.price is None
    missing = page.results[2]
    assert missing.greeks is None and missing.implied_volatility is None and missing.last_quote is None


def test_error_bodies_read_error_or_message():
    assert "maximum requests" in parse_error(fixture("error_429.json")).text
    e403 = parse_error(fixture("error_403.json"))
    assert e403.status == "NOT_AUTHORIZED" and "not entitled" in e403.text
    assert parse_error(b"").text == ""  # an empty body is no crash


def test_expiry_instants_am_and_pm_across_daylight_saving(spx_chain):
    by_ticker = dict(zip(spx_chain.tickers, spx_chain.expiry_ns.tolist()))
    # AM-settled monthlies settle at 09:30 New York; PM dailies at 16:00 New York.
    assert by_ticker["O:SPX251219C06000000"] == utc_ns(2025, 12, 19, 14, 30)  # EST, UTC-5
    assert by_ticker["O:SPXW251218P05900000"] == utc_ns(2025, 12, 18, 21, 0)
    assert by_ticker["O:SPX250718P05800000"] == utc_ns(2025, 7, 18, 13, 30)  # EDT, UTC-4
    assert by_ticker["O:SPXW250718C06100000"] == utc_ns(2025, 7, 18, 20, 0)
    am = dict(zip(spx_chain.tickers, spx_chain.am_settled.tolist()))
    assert am["O:SPX251219C06000000"] and not am["O:SPXW251218P05900000"]


def test_dedupe_keeps_first_seen_and_skips_unplaceable_rows(spx_chain):
    assert len(spx_chain) == 5  # 4 + 3 rows, one repeat, one without details
    assert len(set(spx_chain.tickers)) == 5
    i = spx_chain.tickers.index("O:SPXW251218P05900000")
    assert spx_chain.open_interest[i] == 1200.0  # the first copy, not the repeat's 9999


def test_columns_values_rights_and_nans(spx_chain):
    c = spx_chain
    i_call = c.tickers.index("O:SPX251219C06000000")
    i_put = c.tickers.index("O:SPXW251218P05900000")
    assert c.right[i_call] == RIGHT_CALL and c.right[i_put] == RIGHT_PUT
    assert c.strike[i_call] == 6000.0 and c.multiplier[i_call] == 100.0
    assert c.gamma[i_call] == pytest.approx(0.0031) and c.iv[i_call] == pytest.approx(0.16)
    assert c.bid[i_call] == pytest.approx(12.3) and c.ask[i_call] == pytest.approx(12.6)
    i_itm = c.tickers.index("O:SPXW251218C05000000")
    for col in (c.iv, c.delta, c.gamma, c.theta, c.vega, c.bid, c.ask):
        assert math.isnan(col[i_itm])
    i_no_oi = c.tickers.index("O:SPXW250718C06100000")
    assert math.isnan(c.open_interest[i_no_oi]) and math.isnan(c.volume[i_no_oi])
    assert c.strike.dtype == np.float64 and c.expiry_ns.dtype == np.int64 and c.right.dtype == np.int8
    assert c.am_settled.dtype == bool


def test_snapshot_metadata_and_spot_from_value(spx_chain):
    assert spx_chain.underlying == "SPX"
    assert spx_chain.ts_ns == 250  # ts_recv of the last page
    assert spx_chain.snapshot_id == 7
    assert spx_chain.spot == pytest.approx(5990.5)  # the latest underlying value seen


def test_spot_falls_back_to_price_then_nan():
    eq = chain_columns([response(fixture("equity_price.json"), 0, ts=1, final=True, underlying="ACME")])
    assert eq.spot == pytest.approx(161.25) and eq.underlying == "ACME"
    empty = chain_columns([response(b'{"status":"OK","request_id":"x","results":[]}', 0, ts=1, final=True)])
    assert math.isnan(empty.spot) and len(empty) == 0


def test_chain_columns_is_deterministic_over_a_log_round_trip(spx_chain):
    codec = EventCodec()
    pages = [response(fixture("spx_page1.json"), 0, ts=100, final=False),
             response(fixture("spx_page2.json"), 1, ts=250, final=True)]
    replayed = chain_columns([codec.decode(codec.encode(p)) for p in pages])
    for name in ("strike", "expiry_ns", "right", "open_interest", "iv", "gamma", "bid"):
        np.testing.assert_array_equal(getattr(replayed, name), getattr(spx_chain, name))
    assert replayed.tickers == spx_chain.tickers


def test_malformed_page_raises_a_catchable_mia_error():
    with pytest.raises(PolygonDecodeError, match="page 0"):
        chain_columns([response(fixture("malformed.json"), 0, ts=1, final=True)])
    with pytest.raises(PolygonDecodeError, match="HTTP 429"):
        chain_columns([response(fixture("error_429.json"), 0, ts=1, final=True, status=429)])
    with pytest.raises(PolygonDecodeError):
        chain_columns([])
    with pytest.raises(PolygonDecodeError):
        parse_page(b'{"status":"OK","results":{"details":{}}}')  # single-contract shape, not a chain


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_chain_columns_never_raises_anything_but_mia_errors(body):
    try:
        chain_columns([response(body, 0, ts=1, final=True)])
    except MiaError:
        pass


def test_naming_helpers():
    assert occ_root("O:SPXW251218P05900000") == "SPXW"
    assert occ_root("O:NDXP251218C21000000") == "NDXP"
    assert api_underlying("SPX") == "I:SPX" and api_underlying("I:NDX") == "I:NDX"
    assert api_underlying("AAPL") == "AAPL"
    assert settlement_ns("2025-03-21", True) == utc_ns(2025, 3, 21, 13, 30)  # after the March DST switch
    with pytest.raises(ValueError):
        settlement_ns("2025-13-01", False)
