"""The Sierra Chart Trading Levels file: format, round trip, JSON, and atomic rewrites."""

from __future__ import annotations

import json
import math
import os
import threading
import time

import pytest

from mia.analytics.levels import (
    HEADER,
    Level,
    LevelsFormatError,
    build_levels,
    format_levels_file,
    levels_json,
    parse_levels_file,
    write_levels_file,
)
from mia.analytics.orderflow import InstrumentSummary
from mia.engine.events import GammaLevels, OrderflowBar

TS = 1_750_082_400 * 10**9
NAN = math.nan


def gamma(underlying="SPX", basis=30.0, futures_symbol="ESU5", stale=False, **kw) -> GammaLevels:
    base = dict(
        ts_event=TS, ts_recv=TS, underlying=underlying, spot=6000.0, basis=basis, zero_gamma=5950.5,
        call_wall=6100.0, put_wall=5900.0, max_pain=6000.0, total_gex=1e9, call_gex=2e9, put_gex=-1e9,
        pcr_oi=1.1, pcr_volume=0.9, pin_strikes=[6000.0, 6025.0], dealer_bias=0.3, vanna_exposure=0.0,
        charm_exposure=0.0, iv_skew=0.02, stale=stale, staleness_ns=0, futures_symbol=futures_symbol,
    )
    base.update(kw)
    return GammaLevels(**base)


def bar(**kw) -> OrderflowBar:
    """An OrderflowBar with the session fields the levels read; the rest filler."""
    fields = dict(ts_event=TS, ts_recv=TS, instrument=1, bar_start=TS - 60 * 10**9, interval_ns=60 * 10**9,
                  open=6030.0, high=6041.0, low=6019.0, close=6031.0, volume=100.0, buy_volume=60.0,
                  sell_volume=40.0, delta=20.0, cum_delta=20.0, trades=10, bar_poc=6031.0, poc=6031.25,
                  va_low=6020.0, va_high=6040.5, vwap=6030.75, vwap_sd=4.5, bid_imbalances=0, ask_imbalances=0,
                  stacked_bid=0, stacked_ask=0, book_imbalance=NAN, large_trades=0, large_buy_volume=0.0,
                  large_sell_volume=0.0)
    fields.update(kw)
    return OrderflowBar(**fields)


ORDERFLOW = {"ESU5": bar()}


def test_gamma_levels_in_futures_prices_with_labels():
    levels = build_levels({"SPX": gamma()}, date="2025-06-16")
    by_label = {lv.label: lv for lv in levels}
    assert by_label["ESU5 Call Wall (SPX 6100)"].value == 6130.0
    assert by_label["ESU5 Put Wall (SPX 5900)"].value == 5930.0
    assert by_label["ESU5 Zero Gamma (SPX 5950.5)"].value == 5980.5
    assert by_label["ESU5 Max Pain (SPX 6000)"].value == 6030.0
    assert by_label["ESU5 Spot (SPX 6000)"].value == 6030.0
    assert by_label["ESU5 Pin 2 (SPX 6025)"].value == 6055.0
    assert all(lv.source == "gamma:SPX" for lv in levels)


def test_no_basis_means_index_prices_and_nan_levels_are_left_out():
    levels = build_levels({"NDX": gamma("NDX", basis=NAN, futures_symbol="", zero_gamma=NAN, stale=True)},
                          date="2025-06-16")
    labels = [lv.label for lv in levels]
    assert "NDX Call Wall stale" in labels and not any("Zero Gamma" in lb for lb in labels)
    assert next(lv for lv in levels if lv.label == "NDX Call Wall stale").value == 6100.0


def test_orderflow_levels():
    levels = build_levels({}, ORDERFLOW, date="2025-06-16")
    by_label = {lv.label: lv for lv in levels}
    assert by_label["ESU5 POC"].value == 6031.25
    assert (by_label["ESU5 VA High"].value, by_label["ESU5 VA High"].value2) == (6040.5, 6020.0)
    assert by_label["ESU5 VWAP +2SD"].value == 6030.75 + 9.0
    assert by_label["ESU5 VWAP -1SD"].value == 6030.75 - 4.5


def test_orderflow_levels_of_the_reducer_summary_have_no_bands():
    # Arrange: what OrderflowReducer.summary() gives (no vwap_sd), and a symbol that never traded
    flows = {"ESU5": InstrumentSummary(symbol="ESU5", trades=3, volume=6.0, vwap=6030.75, poc=6031.25,
                                       va_low=6020.0, va_high=6040.5, high=6041.0, low=6019.0, last=6031.0),
             "NQU5": InstrumentSummary(symbol="NQU5")}
    # Act
    levels = build_levels({}, flows, date="2025-06-16")
    # Assert
    assert [(lv.label, lv.value, lv.value2) for lv in levels] == [
        ("ESU5 POC", 6031.25, 6031.25), ("ESU5 VA High", 6040.5, 6020.0), ("ESU5 VA Low", 6020.0, 6040.5),
        ("ESU5 VWAP", 6030.75, 6030.75)]


def test_orderflow_levels_reject_untyped_dicts():
    with pytest.raises(TypeError, match="InstrumentSummary"):
        build_levels({}, {"ESU5": {"poc": 6031.25}}, date="2025-06-16")


def test_file_follows_sierra_header_rule_and_parses_back():
    levels = build_levels({"SPX": gamma(), "NDX": gamma("NDX", basis=45.0, futures_symbol="NQU5")}, ORDERFLOW,
                          date="2025-06-16")
    levels.append(Level("Yesterday, close", 6001.0, date="2025-06-13"))  # comma in a label; earlier date
    text = format_levels_file(levels)
    lines = text.split("\r\n")
    # Sierra: the text starts with exactly "Date, Label, Color, Width, Value"; newest builds need >= 6 fields.
    assert text.startswith("Date, Label, Color, Width, Value")
    assert lines[0] == HEADER == "Date, Label, Color, Width, Value, Value2"
    assert lines[-1] == ""
    body = lines[1:-1]
    assert len(body) == len(levels)
    dates = [ln.split(", ")[0] for ln in body]
    assert dates == sorted(dates)  # Sierra's scan only moves forward by date
    for ln in body:
        fields = ln.split(",")
        assert len(fields) == 6
        color = int(fields[2])
        assert (color >> 16) & 0xFF == color & 0xFF  # R == B: same colour as 0xRRGGBB or COLORREF
    parsed = parse_levels_file(text)
    expected = sorted(levels, key=lambda lv: lv.date)
    assert [(p.date, p.value, p.value2, p.color, p.width) for p in parsed] == [
        (e.date, e.value, e.value if math.isnan(e.value2) else e.value2, e.color, e.width) for e in expected]
    assert parsed[0].label == "Yesterday; close"
    assert [p.label for p in parsed[1:]] == [e.label for e in expected[1:]]


def test_parse_rejects_a_file_without_the_header():
    with pytest.raises(LevelsFormatError):
        parse_levels_file("2025-06-16, x, 0, 1, 1.0, 1.0\n")


def test_levels_json():
    levels = build_levels({"SPX": gamma()}, ORDERFLOW, date="2025-06-16")
    data = json.loads(levels_json(levels))["levels"]
    assert len(data) == len(levels)
    wall = next(d for d in data if d["label"].startswith("ESU5 Call Wall"))
    assert wall == {"date": "2025-06-16", "label": "ESU5 Call Wall (SPX 6100)", "value": 6130.0, "value2": 6130.0,
                    "color": "#00C000", "width": 3, "source": "gamma:SPX"}
    assert all(list(d) == ["date", "label", "value", "value2", "color", "width", "source"] for d in data)


def test_levels_json_writes_nan_as_null():
    levels = [Level("a line", 6000.0, date="2025-06-16"), Level("no value", NAN, date="2025-06-16")]

    def no_nan(token):
        raise AssertionError(f"JSON carries {token}")

    data = json.loads(levels_json(levels), parse_constant=no_nan)["levels"]
    assert (data[0]["value"], data[0]["value2"]) == (6000.0, None)
    assert (data[1]["value"], data[1]["value2"]) == (None, None)


def test_level_is_a_frozen_typed_struct():
    lv = Level("POC", 6000.0, date="2025-06-16")
    assert (lv.value2 != lv.value2, lv.color, lv.width, lv.source) == (True, 0x808080, 1, "")
    with pytest.raises(AttributeError):
        lv.value = 1.0


def test_write_replaces_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "levels.txt"
    write_levels_file(path, build_levels({"SPX": gamma()}, date="2025-06-16"))
    write_levels_file(path, build_levels({"SPX": gamma(call_wall=6200.0)}, date="2025-06-16"))
    assert os.listdir(tmp_path) == ["levels.txt"]
    parsed = parse_levels_file(path.read_text())
    assert any(p.value == 6230.0 for p in parsed)


def test_reader_never_sees_a_half_written_file(tmp_path):
    # Arrange: each generation g writes 400 levels all carrying g; a complete file has all 400.
    path = tmp_path / "levels.txt"
    rows = 400

    def generation(g: int) -> list[Level]:
        return [Level(f"gen {g} row {i}", 1000.0 + g + i / 1000, date="2025-06-16") for i in range(rows)]

    write_levels_file(path, generation(0))
    stop = threading.Event()
    seen: list[int] = []
    bad: list[str] = []

    def reader() -> None:
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            with open(path, "rb") as f:
                text = f.read().decode()
            try:
                parsed = parse_levels_file(text)
            except LevelsFormatError as exc:
                bad.append(str(exc))
                continue
            gens = {int(p.label.split()[1]) for p in parsed}
            if len(parsed) != rows or len(gens) != 1 or not text.endswith("\r\n"):
                bad.append(f"{len(parsed)} rows, generations {sorted(gens)[:3]}")
            else:
                seen.append(gens.pop())

    thread = threading.Thread(target=reader)
    thread.start()
    # Act
    try:
        for g in range(1, 301):
            write_levels_file(path, generation(g))
    finally:
        stop.set()
        thread.join(timeout=30)
    # Assert
    assert not bad, bad[:5]
    assert len(seen) > 10 and len(set(seen)) > 1
    assert seen == sorted(seen)  # never an older file after a newer one
    assert os.listdir(tmp_path) == ["levels.txt"]
