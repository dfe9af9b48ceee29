"""TermStructure from a scripted VIX and VX curve: basis, contango and the 30-day constant
maturity worked out by hand; the once-a-second throttle; the VIX backup switch to Polygon."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from mia.analytics.volatility import TermStructureReducer, VolatilityConfig, vx_contract
from mia.engine.columns import ColumnBatch
from mia.engine.events import (
    FALLBACK_NONE,
    FALLBACK_OTHER_SOURCE,
    Heartbeat,
    Instrument,
    PolygonResponse,
    Quote,
    SourceError,
    TermStructure,
    Trade,
)

S = 10**9
T0 = int(dt.datetime(2026, 11, 20, 15, 0, tzinfo=dt.timezone.utc).timestamp()) * S  # 10:00 New York


def cfe_rule(year: int, month: int) -> dt.date:
    """The fixture's own CFE rule: the Wednesday 30 days before the third Friday of the next month."""
    ny, nm = (year + 1, 1) if month == 12 else (year, month + 1)
    first = dt.date(ny, nm, 1)
    third_friday = first + dt.timedelta(days=(4 - first.weekday()) % 7 + 14)
    return third_friday - dt.timedelta(days=30)


class Row(msgspec.Struct):
    ticker: str
    value: float
    ts_ns: int = 0
    session_close: float | None = None
    error: str = ""


def fake_index_values(resp: PolygonResponse) -> list[Row]:
    return msgspec.json.decode(resp.body, type=list[Row])


def indices(ts: int, vix: float) -> PolygonResponse:
    body = msgspec.json.encode([Row("I:SPX", 6000.0), Row("I:VIX", vix)])
    return PolygonResponse(ts, ts, "", "/v3/snapshot/indices", "ticker.any_of=I:SPX,I:VIX", 200, "r", 1, body)


# settlement instants: 09:30 New York (EST in Dec-Feb) = 14:30 UTC
SETTLE_Z6 = int(dt.datetime(2026, 12, 16, 14, 30, tzinfo=dt.timezone.utc).timestamp()) * S
SETTLE_F7 = int(dt.datetime(2027, 1, 20, 14, 30, tzinfo=dt.timezone.utc).timestamp()) * S
SETTLE_G7 = int(dt.datetime(2027, 2, 17, 14, 30, tzinfo=dt.timezone.utc).timestamp()) * S


def script() -> list:
    return [
        Instrument(T0, T0, 1, "VIX", "dtc", kind="index"),
        Instrument(T0, T0, 2, "VXZ6", "dtc"),
        Instrument(T0, T0, 3, "VXF7", "dtc"),
        Instrument(T0, T0, 4, "VXG7", "dtc"),
        Instrument(T0, T0, 5, "ESZ6", "dtc"),
        Trade(T0 + 1, T0 + 1, 1, 16.5, 0.0, 0),
        Quote(T0 + 2, T0 + 2, 2, 17.9, 10.0, 18.0, 12.0),
        Trade(T0 + 3, T0 + 3, 3, 19.0, 1.0, 1),
        Quote(T0 + 4, T0 + 4, 4, 19.6, 5.0, 19.7, 5.0),
        Trade(T0 + 5, T0 + 5, 5, 6010.0, 1.0, 1),  # not volatility: ignored
        Heartbeat(T0 + S, T0 + S),
    ]


def test_vx_contract_dates_and_settlement():
    assert vx_contract("VXZ6", "VX", T0, cfe_rule) == (20261216, SETTLE_Z6)
    assert vx_contract("VXF7", "VX", T0, cfe_rule) == (20270120, SETTLE_F7)
    assert vx_contract("ESZ6", "VX", T0, cfe_rule) is None
    assert vx_contract("VXZ26", "VX", T0, cfe_rule) is None


def test_curve_figures_by_hand():
    # Arrange
    red = TermStructureReducer(VolatilityConfig(), vx_expiry=cfe_rule)
    # Act
    out = red.on_batch(ColumnBatch.from_events(script()))
    # Assert: the first change emits at once (from the Instrument row); the rest within the
    # second waits for the heartbeat at T0 + 1 s
    assert [type(e) for e in out] == [TermStructure, TermStructure]
    ts = out[-1]
    assert (ts.ts_event, ts.ts_recv) == (T0 + S, T0 + S)
    assert ts.vix == 16.5 and ts.vix_source == "dtc"
    assert ts.symbols == ["VXZ6", "VXF7", "VXG7"]
    assert ts.expiries == [20261216, 20270120, 20270217]
    assert ts.prices == [17.95, 19.0, 19.65]  # mid, last (no quote), mid
    d1 = (SETTLE_Z6 - (T0 + S)) / 86_400e9  # 25 days 23.5 h less a second
    d2 = (SETTLE_F7 - (T0 + S)) / 86_400e9
    assert ts.days == pytest.approx([d1, d2, (SETTLE_G7 - (T0 + S)) / 86_400e9], abs=1e-12)
    assert d1 == pytest.approx(25 + 23.5 / 24 - 1 / 86_400)
    assert ts.basis == pytest.approx(17.95 - 16.5, abs=1e-12)
    assert ts.contango == pytest.approx(19.0 / 17.95 - 1, abs=1e-12)
    assert ts.cm30 == pytest.approx(17.95 + (19.0 - 17.95) * (30 - d1) / (d2 - d1), abs=1e-12)
    assert 17.95 < ts.cm30 < 19.0


def test_at_most_one_event_a_second_and_none_without_change():
    red = TermStructureReducer(VolatilityConfig(), vx_expiry=cfe_rule)
    red.on_batch(ColumnBatch.from_events(script()))
    rows = [Quote(T0 + S + 10, T0 + S + 10, 2, 17.95, 1.0, 18.05, 1.0),  # inside the second: wait
            Quote(T0 + S + 20, T0 + S + 20, 2, 18.0, 1.0, 18.1, 1.0),
            Heartbeat(T0 + 2 * S - 1, T0 + 2 * S - 1),
            Heartbeat(T0 + 2 * S, T0 + 2 * S),  # the second is over: the last state
            Heartbeat(T0 + 3 * S, T0 + 3 * S),  # nothing changed: nothing
            Quote(T0 + 4 * S, T0 + 4 * S, 2, 18.0, 3.0, 18.1, 3.0)]  # sizes only: the same mid
    out = red.on_batch(ColumnBatch.from_events(rows))
    assert [(e.ts_recv, e.prices[0]) for e in out] == [(T0 + 2 * S, 18.05)]


def test_vix_switches_to_polygon_and_back():
    red = TermStructureReducer(VolatilityConfig(), index_values=fake_index_values, vx_expiry=cfe_rule)
    red.on_batch(ColumnBatch.from_events(script()))
    t = T0 + 10 * S
    out = red.on_batch(ColumnBatch.from_events([
        indices(t, 17.25),  # recorded, not used while DTC's VIX is there
        SourceError(t + 2 * S, t + 2 * S, "dtc", "VIX silent 30 s", "using Polygon I:VIX", 0, "VIX", 0,
                    FALLBACK_OTHER_SOURCE),
        SourceError(t + 4 * S, t + 4 * S, "dtc", "VIX back", "", 0, "VIX", 0, FALLBACK_NONE),
    ]))
    assert [(e.vix, e.vix_source) for e in out] == [(17.25, "polygon"), (16.5, "dtc")]
    assert out[0].basis == pytest.approx(17.95 - 17.25)


def test_the_fixture_rule_agrees_with_the_cfe_calendar_on_ordinary_months():
    from mia.data.cfe import vx_expiry

    for year, month in ((2026, 11), (2026, 12), (2027, 1), (2027, 2), (2027, 3)):
        assert vx_expiry(year, month) == cfe_rule(year, month)
