"""GammaReducer: a pure fold over event rows; batch cuts, stale fallback and bad chains."""

from __future__ import annotations

import json
import math

import msgspec
import numpy as np
import pytest

from mia.analytics.gamma import GammaConfig, GammaReducer, compute_gamma
from mia.engine.columns import ChainColumns, ColumnBatch
from mia.engine.errors import MiaError
from mia.engine.events import (
    FALLBACK_NONE,
    FALLBACK_OTHER_SOURCE,
    FALLBACK_PARTIAL,
    FALLBACK_PREVIOUS,
    EventCodec,
    GammaLevels,
    Instrument,
    PolygonResponse,
    Quote,
    SourceError,
    Trade,
)

TS = 1_750_082_400 * 10**9
SEC = 10**9
NS_PER_YEAR = 365 * 24 * 3600 * SEC


class FakeChainError(MiaError):
    pass


def parse_chain(pages: list[PolygonResponse]) -> ChainColumns:
    """Test parser: each page body is JSON {"spot": S, "rows": [[strike, days, right, oi, vol, iv]]}."""
    rows, spot = [], math.nan
    for p in pages:
        try:
            body = json.loads(p.body)
        except ValueError:
            raise FakeChainError(f"page {p.page}: not JSON") from None
        spot = body.get("spot", spot)
        rows.extend(body["rows"])
    a = np.array(rows, dtype=float).reshape(-1, 6)
    n = a.shape[0]
    nan = np.full(n, np.nan)
    ts = pages[-1].ts_recv
    return ChainColumns(
        underlying=pages[-1].underlying, ts_ns=ts, spot=spot, strike=a[:, 0],
        expiry_ns=(ts + a[:, 1] * 86400 * SEC).astype(np.int64), right=a[:, 2].astype(np.int8),
        open_interest=a[:, 3], volume=a[:, 4], iv=a[:, 5], delta=nan, gamma=nan, theta=nan, vega=nan,
        bid=nan, ask=nan, multiplier=np.full(n, 100.0), am_settled=np.zeros(n, bool),
        snapshot_id=pages[-1].snapshot_id,
    )


def chain_rows(spot: float, seed: int) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    out = []
    for days in (0.2, 1, 7, 30):
        for k in np.arange(round(spot * 0.95, -1), spot * 1.05, 10.0):
            for right in (1, -1):
                out.append([float(k), days, right, float(rng.integers(0, 2000)), float(rng.integers(0, 900)),
                            float(rng.uniform(0.1, 0.3))])
    return out


def pages_for(underlying: str, snapshot_id: int, spot: float, t0: int, seed: int, pages: int = 3,
              status: int = 200, bad: bool = False) -> list[PolygonResponse]:
    rows = chain_rows(spot, seed)
    chunks = np.array_split(np.arange(len(rows)), pages)
    out = []
    for i, idx in enumerate(chunks):
        body = b"{not json" if bad and i == pages - 1 else json.dumps(
            {"spot": spot, "rows": [rows[j] for j in idx]}).encode()
        out.append(PolygonResponse(
            ts_event=t0 + i * SEC, ts_recv=t0 + i * SEC, underlying=underlying,
            path=f"/v3/snapshot/options/I:{underlying}", query="limit=250", status=status if i == 1 else 200,
            request_id=f"r{snapshot_id}-{i}", elapsed_ns=1000, body=body, snapshot_id=snapshot_id, page=i,
            final=i == pages - 1))
    return out


def quote(t: int, inst: int, mid: float) -> Quote:
    return Quote(ts_event=t, ts_recv=t, instrument=inst, bid=mid - 0.125, bid_size=10, ask=mid + 0.125, ask_size=12)


def scenario() -> list:
    ev: list = [
        Instrument(ts_event=TS, ts_recv=TS, instrument=1, symbol="ESU5", source="dtc:test"),
        Instrument(ts_event=TS, ts_recv=TS, instrument=2, symbol="NQU5", source="dtc:test"),
    ]
    t = TS + SEC
    es, nq = 6030.0, 21650.0
    snap = 0
    for step in range(6):
        for k in range(40):  # market data between snapshots
            t += 50_000_000
            es += 0.25 * ((k * 7 + step) % 3 - 1)
            nq += 0.25 * ((k * 5 + step) % 3 - 1)
            ev.append(quote(t, 1, es))
            ev.append(Trade(ts_event=t, ts_recv=t, instrument=1, price=es, size=1, side=1))
            ev.append(quote(t, 2, nq))
        snap += 1
        if step == 2:  # a snapshot with a 502 page: no levels
            ev += pages_for("SPX", snap, 6000.0 + step, t, seed=step, status=502)
        elif step == 3:  # a chain that does not parse: no levels, the reducer keeps going
            ev += pages_for("SPX", snap, 6000.0 + step, t, seed=step, bad=True)
        else:
            ev += pages_for("SPX", snap, 6000.0 + step, t, seed=step)
        snap += 1
        # NDX pages interleaved with quotes of both futures
        nd = pages_for("NDX", snap, 21600.0 + step, t + 10 * SEC, seed=100 + step, pages=2)
        ev.append(nd[0])
        ev.append(quote(t + 10 * SEC, 2, nq + 1.0))
        ev.append(nd[1])
        t += 20 * SEC
        if step == 4:
            ev.append(SourceError(ts_event=t, ts_recv=t, source="polygon", error="HTTPError: 503",
                                  fallback="using chain from 14:01:02 UTC, 95 s old", stale_age_ns=95 * SEC,
                                  underlying="SPX", status=503))
            ev.append(SourceError(ts_event=t, ts_recv=t + 1, source="polygon", error="boom",
                                  fallback="none: no chain yet", underlying="NDX"))
    return ev


def run(events: list, cut: int) -> list[GammaLevels]:
    reducer = GammaReducer(parse_chain)
    out = []
    for i in range(0, len(events), cut):
        out += reducer.on_batch(ColumnBatch.from_events(events[i:i + cut]))
    return out


def encode(levels: list[GammaLevels]) -> bytes:
    return msgspec.msgpack.encode(levels)  # bytes compare NaN fields exactly


def test_same_rows_any_batch_cut_same_events():
    events = scenario()
    by_cut = {cut: run(events, cut) for cut in (1, 7, 4096)}
    assert encode(by_cut[1]) == encode(by_cut[7]) == encode(by_cut[4096])
    levels = by_cut[4096]
    spx = [lv for lv in levels if lv.underlying == "SPX"]
    ndx = [lv for lv in levels if lv.underlying == "NDX"]
    # 6 SPX snapshots minus the 502 one and the bad one, plus one stale re-emission
    assert len(spx) == 5 and len(ndx) == 6
    assert all(lv.futures_symbol == "ESU5" for lv in spx)
    assert all(lv.futures_symbol == "NQU5" for lv in ndx)


def test_basis_is_the_futures_mid_at_the_final_page():
    events = scenario()
    levels = run(events, 4096)
    first_ndx = next(lv for lv in levels if lv.underlying == "NDX")
    # The last NQ quote before NDX snapshot 2's final page is the one inserted between its pages.
    final_at = [i for i, e in enumerate(events) if isinstance(e, PolygonResponse) and e.underlying == "NDX"
                and e.final][0]
    last_nq = [e for e in events[:final_at] if isinstance(e, Quote) and e.instrument == 2][-1]
    mid = (last_nq.bid + last_nq.ask) / 2
    assert first_ndx.basis == pytest.approx(mid - first_ndx.spot, abs=1e-12)
    assert first_ndx.call_wall_fut == first_ndx.call_wall + first_ndx.basis


def test_levels_equal_direct_computation():
    events = scenario()
    levels = run(events, 7)
    pages = [e for e in events if isinstance(e, PolygonResponse) and e.underlying == "SPX" and e.snapshot_id == 1]
    direct = compute_gamma(parse_chain(pages), GammaConfig(), levels[0].spot + levels[0].basis)
    assert levels[0].underlying == "SPX" and levels[0].snapshot_id == 1
    assert levels[0].total_gex == direct.total_gex and levels[0].zero_gamma == direct.zero_gamma
    assert levels[0].ts_recv == pages[-1].ts_recv and levels[0].ts_event == pages[-1].ts_recv


def test_stale_fallback_reemits_last_good_levels():
    events = scenario()
    levels = run(events, 4096)
    stale = [lv for lv in levels if lv.stale]
    assert len(stale) == 1  # the NDX error had no chain to fall back on ("none: ...")
    s = stale[0]
    err = next(e for e in events if isinstance(e, SourceError) and e.underlying == "SPX")
    before = [lv for lv in levels[: levels.index(s)] if lv.underlying == "SPX"][-1]
    assert s.staleness_ns == 95 * SEC and s.ts_recv == err.ts_recv
    assert encode([msgspec.structs.replace(s, stale=False, staleness_ns=0, ts_recv=before.ts_recv)]) == encode([before])


def test_bad_chain_and_failed_page_are_skipped_and_reducer_keeps_going():
    events = scenario()
    reducer = GammaReducer(parse_chain)
    out = reducer.on_batch(ColumnBatch.from_events(events))
    spx_ids = [lv.snapshot_id for lv in out if lv.underlying == "SPX" and not lv.stale]
    # SPX snapshots are the odd ids 1, 3, 5, 7, 9, 11; 5 had a 502 page and 7 did not parse.
    assert spx_ids == [1, 3, 9, 11]
    assert reducer.skipped == 2
    assert reducer.last()["SPX"].snapshot_id == 11
    assert reducer.last_result("SPX").snapshot_id == 11
    assert reducer.last_result("VIX") is None


def test_no_futures_quote_means_no_basis():
    pages = pages_for("SPX", 1, 6000.0, TS, seed=1)
    out = GammaReducer(parse_chain).on_batch(ColumnBatch.from_events(pages))
    assert len(out) == 1 and math.isnan(out[0].basis) and out[0].futures_symbol == ""


def test_with_the_real_polygon_parser():
    # Two Polygon chain pages (the vendor JSON) through mia.data.polygon.models.chain_columns.
    from mia.data.polygon.models import chain_columns

    def row(strike: float, kind: str, oi: float, iv: float) -> dict:
        return {"details": {"ticker": f"O:SPXW250616{kind[0].upper()}{int(strike * 1000):08d}",
                            "contract_type": kind, "exercise_style": "european", "expiration_date": "2025-06-16",
                            "strike_price": strike, "shares_per_contract": 100},
                "open_interest": oi, "implied_volatility": iv, "day": {"volume": 100.0},
                "underlying_asset": {"ticker": "I:SPX", "value": 6000.0}}

    page1 = {"status": "OK", "request_id": "a", "next_url": "https://api.polygon.io/v3/x?cursor=1",
             "results": [row(5990.0, "call", 1000, 0.15), row(5990.0, "put", 3000, 0.16)]}
    page2 = {"status": "OK", "request_id": "b",
             "results": [row(6010.0, "call", 4000, 0.14), row(6010.0, "put", 500, 0.15)]}
    pages = [PolygonResponse(ts_event=TS + i, ts_recv=TS + i, underlying="SPX", path="/v3/snapshot/options/I:SPX",
                             query="limit=250", status=200, request_id=p["request_id"], elapsed_ns=1,
                             body=json.dumps(p).encode(), snapshot_id=1, page=i, final=i == 1)
             for i, p in enumerate((page1, page2))]
    events = [Instrument(ts_event=TS, ts_recv=TS, instrument=1, symbol="ESU5", source="dtc:test"),
              quote(TS, 1, 6031.0)] + pages
    out = GammaReducer(chain_columns).on_batch(ColumnBatch.from_events(events))
    assert len(out) == 1
    lv = out[0]
    # 0DTE at 10:00 ET: six hours to the 16:00 settlement, all four contracts count.
    assert lv.spot == 6000.0 and lv.contracts == 4 and lv.basis == 31.0
    assert lv.call_wall == 6010.0 and lv.put_wall == 5990.0
    assert lv.max_pain == 5990.0  # pain(5990) = 500*100*20 = 1e6 < pain(6010) = 1000*100*20 = 2e6
    assert lv.pcr_oi == 3500 / 5000


def _old_log_source_error(**fields) -> SourceError:
    """A SourceError as a log written before `fallback_kind` existed holds it: the msgpack array
    stops at `status`; decoding maps the prose to the typed kind once."""
    ev = SourceError(**fields)
    raw = msgspec.msgpack.encode([24, ev.ts_event, ev.ts_recv, ev.source, ev.error, ev.fallback,
                                  ev.stale_age_ns, ev.underlying, ev.status])
    return EventCodec().decode(raw)


def _stale_after(error: SourceError) -> list[GammaLevels]:
    pages = pages_for("SPX", 1, 6000.0, TS, seed=1)
    return run(pages + [error], 4096)[1:]


@pytest.mark.parametrize("make", ["old_log", "omitted", "explicit"])
def test_previous_chain_fallback_reemits_from_old_and_new_source_errors(make):
    # Arrange: the same failure as an old log, built with fallback_kind omitted, and typed
    fields = dict(ts_event=TS + 60 * SEC, ts_recv=TS + 60 * SEC, source="polygon", error="HTTPError: 503",
                  fallback="using chain from 14:00:00 UTC, 60 s old", stale_age_ns=60 * SEC,
                  underlying="SPX", status=503)
    if make == "old_log":
        err = _old_log_source_error(**fields)
    elif make == "omitted":
        err = SourceError(**fields)
    else:
        err = SourceError(**fields, fallback_kind=FALLBACK_PREVIOUS)
    # Act
    stale = _stale_after(err)
    # Assert
    assert err.fallback_kind == FALLBACK_PREVIOUS
    assert [(lv.stale, lv.staleness_ns, lv.ts_recv) for lv in stale] == [(True, 60 * SEC, TS + 60 * SEC)]


@pytest.mark.parametrize("make", ["old_log", "omitted"])
def test_old_none_fallback_prose_still_emits_nothing(make):
    fields = dict(ts_event=TS + 60 * SEC, ts_recv=TS + 60 * SEC, source="polygon", error="boom",
                  fallback="none: no chain yet", stale_age_ns=60 * SEC, underlying="SPX")
    err = _old_log_source_error(**fields) if make == "old_log" else SourceError(**fields)
    assert err.fallback_kind == FALLBACK_NONE
    assert _stale_after(err) == []


@pytest.mark.parametrize("kind,reemits", [(FALLBACK_PREVIOUS, True), (FALLBACK_NONE, False),
                                          (FALLBACK_PARTIAL, False), (FALLBACK_OTHER_SOURCE, False)])
def test_the_typed_kind_decides_not_the_prose(kind, reemits):
    # Prose that says the opposite of the kind: the reducer reads only the kind.
    prose = "none: whatever the text says" if kind == FALLBACK_PREVIOUS else "using chain from 14:00:00 UTC"
    err = SourceError(ts_event=TS + 60 * SEC, ts_recv=TS + 60 * SEC, source="polygon", error="e",
                      fallback=prose, stale_age_ns=60 * SEC, underlying="SPX", fallback_kind=kind)
    assert bool(_stale_after(err)) is reemits
    no_age = msgspec.structs.replace(err, stale_age_ns=0)
    assert _stale_after(no_age) == []  # a previous chain of no age is not a stale re-emission
