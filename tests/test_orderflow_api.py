"""OrderflowReducer accessors and bar-closing rules, by hand."""

from __future__ import annotations

import json
import math

import pytest

from mia.analytics.orderflow import InstrumentSummary, OrderflowConfig, OrderflowReducer
from mia.engine.columns import ColumnBatch
from mia.engine.errors import MiaError
from mia.engine.events import (
    BATCH_BEGIN,
    BATCH_END,
    BOOK_SNAPSHOT,
    BookLevel,
    Instrument,
    Quote,
    RecordingEnded,
    Trade,
)
from mia.engine.jsonenc import to_json

S = 1_000_000_000
T0 = 1_717_599_600 * S  # 2024-06-05 15:00 UTC, mid-session


def test_footprint_profile_and_summary_by_hand():
    events = [
        Instrument(T0, T0, 40, "NQM4", "test", tick_size=0.25),
        Trade(T0, T0, 40, 100.0, 3.0, -1),
        Trade(T0 + 1, T0, 40, 100.25, 5.0, 1),
        Trade(T0 + 2, T0, 40, 100.25, 2.0, -1),
        Trade(T0 + 3, T0, 40, 100.75, 1.0, 1),
    ]
    reducer = OrderflowReducer(OrderflowConfig())
    assert reducer.on_batch(ColumnBatch.from_events(events)) == []
    fp = reducer.footprint(40)
    assert list(fp.prices) == [100.0, 100.25, 100.5, 100.75]
    assert list(fp.bid_volume) == [3.0, 2.0, 0.0, 0.0]
    assert list(fp.ask_volume) == [0.0, 5.0, 0.0, 1.0]
    prof = reducer.profile(40, session=False)
    assert list(prof.volume) == [3.0, 7.0, 0.0, 1.0] and prof.poc == 100.25
    s = reducer.summary()[40]
    assert s.symbol == "NQM4" and s.trades == 4 and s.cum_delta == 1.0
    assert s.vwap == pytest.approx((300 + 100.25 * 7 + 100.75) / 11)
    assert reducer.trading_date(40) == 20240605
    assert reducer.footprint(3).prices.size == 0 and math.isnan(reducer.profile(3).poc)


def test_bars_close_on_later_rows_and_recording_end():
    events = [
        Trade(T0 + 1 * S, T0 + 1 * S, 1, 100.0, 1.0, 1),
        Trade(T0 + 2 * S, T0 + 2 * S, 2, 200.0, 1.0, 1),
        BookLevel(T0 + 3 * S, T0 + 3 * S, 1, 1, 99.75, 30.0, BOOK_SNAPSHOT, 0, 0, BATCH_BEGIN),
        BookLevel(T0 + 3 * S, T0 + 3 * S, 1, -1, 100.0, 10.0, BOOK_SNAPSHOT, 0, 0, BATCH_END),
        # a quote of instrument 1 past the bar's end closes its bar, not instrument 2's
        Quote(T0 + 61 * S, T0 + 61 * S + 5, 1, 99.75, 1.0, 100.0, 1.0),
        Trade(T0 + 62 * S, T0 + 62 * S, 1, 100.25, 2.0, 0),  # at or above the ask: a buy
        RecordingEnded(T0 + 70 * S, T0 + 70 * S + 9, "r", "stopped"),
    ]
    bars = OrderflowReducer(OrderflowConfig()).on_batch(ColumnBatch.from_events(events))
    assert [(b.instrument, b.ts_event, b.ts_recv) for b in bars] == [
        (1, T0 + 60 * S, T0 + 61 * S + 5),
        (1, T0 + 120 * S, T0 + 70 * S + 9),
        (2, T0 + 60 * S, T0 + 70 * S + 9),
    ]
    assert bars[0].book_imbalance == pytest.approx(0.5)  # (30 - 10) / 40 at close
    assert math.isnan(bars[2].book_imbalance)  # no depth for instrument 2
    assert bars[1].buy_volume == 2.0 and bars[1].cum_delta == 3.0


def test_config_is_checked():
    with pytest.raises(MiaError, match="value_area"):
        OrderflowConfig(value_area=1.5)
    with pytest.raises(MiaError, match="bar_interval_s"):
        OrderflowConfig(bar_interval_s=0)


# `mia replay --json` "instruments" fields (DESIGN.md, Public contract): a field lost fails here.
REPLAY_FIELDS = ["trades", "volume", "buy_volume", "sell_volume", "cum_delta", "vwap", "poc", "va_low",
                 "va_high", "high", "low", "last"]


def _no_nan(token: str):
    raise AssertionError(f"JSON carries {token}: NaN must be written as null")


def test_summary_is_typed_and_its_json_has_every_field_and_no_nan():
    # Arrange: one instrument that traded, one only declared
    events = [
        Instrument(T0, T0, 1, "ESM4", "test", tick_size=0.25),
        Instrument(T0, T0, 2, "NQM4", "test", tick_size=0.25),
        Trade(T0, T0, 1, 5000.0, 2.0, 1),
        Trade(T0 + 1, T0, 1, 5000.25, 1.0, -1),
    ]
    reducer = OrderflowReducer(OrderflowConfig())
    reducer.on_batch(ColumnBatch.from_events(events))
    # Act
    summary = reducer.summary()
    data = json.loads(to_json({str(k): v for k, v in summary.items()}), parse_constant=_no_nan)
    # Assert
    assert all(isinstance(s, InstrumentSummary) for s in summary.values())
    assert list(InstrumentSummary.__struct_fields__) == ["symbol", *REPLAY_FIELDS]
    with pytest.raises(AttributeError):
        summary[1].trades = 0  # frozen
    assert data["1"] == {"symbol": "ESM4", "trades": 2, "volume": 3.0, "buy_volume": 2.0, "sell_volume": 1.0,
                         "cum_delta": 1.0, "vwap": (10000.0 + 5000.25) / 3, "poc": 5000.0, "va_low": 5000.0,
                         "va_high": 5000.25, "high": 5000.25, "low": 5000.0, "last": 5000.25}
    untraded = summary[2]
    assert untraded.trades == 0 and math.isnan(untraded.vwap) and math.isnan(untraded.last)
    assert data["2"] == {"symbol": "NQM4", "trades": 0, "volume": 0.0, "buy_volume": 0.0, "sell_volume": 0.0,
                         "cum_delta": 0.0, **{k: None for k in REPLAY_FIELDS[5:]}}
