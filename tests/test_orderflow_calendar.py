"""CME trade date and trade-date boundaries, hand-checked against the calendar rules."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mia.analytics.calendar import (
    cme_holidays,
    cme_trade_date,
    session_table,
    trade_date_boundaries,
    trade_date_start_ns,
)

S = 1_000_000_000


def utc_ns(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp()) * S


@pytest.mark.parametrize("when,date", [
    ("2024-03-07T22:59:59", 20240307),  # Thu 16:59:59 CST
    ("2024-03-07T23:00:00", 20240308),  # Thu 17:00 CST opens Friday
    ("2024-03-08T23:00:00", 20240311),  # Fri 17:00: the weekend belongs to Monday
    ("2024-03-10T22:00:00", 20240311),  # Sun 17:00 CDT (DST began that morning)
    ("2024-03-11T21:59:59", 20240311),  # Mon 16:59:59 CDT
    ("2024-03-11T22:00:00", 20240312),  # Mon 17:00 CDT = 22:00 UTC in summer
    ("2024-11-04T22:00:00", 20241104),  # Mon 16:00 CST (DST ended Sunday): still Monday
    ("2024-11-04T23:00:00", 20241105),  # Mon 17:00 CST = 23:00 UTC in winter
    ("2024-01-14T23:00:00", 20240116),  # Sunday open before MLK Day -> Tuesday
    ("2024-01-15T18:00:00", 20240116),  # trading on MLK Day belongs to Tuesday
    ("2024-03-28T22:00:00", 20240401),  # Thu 17:00 before Good Friday -> Monday
    ("2024-11-28T15:00:00", 20241129),  # Thanksgiving -> Friday
    ("2024-12-24T23:00:00", 20241226),  # Christmas Eve 17:00 -> Dec 26
    ("2021-12-31T18:00:00", 20211231),  # New Year's Day 2022 is a Saturday: no Friday holiday
])
def test_trade_date_by_hand(when, date):
    assert cme_trade_date(utc_ns(when)) == date


def test_holiday_rules():
    assert dt.date(2025, 4, 18) in cme_holidays(2025)  # Good Friday 2025
    assert dt.date(2027, 6, 18) in cme_holidays(2027)  # Juneteenth on a Saturday -> Friday
    assert dt.date(2021, 6, 18) not in cme_holidays(2021)  # before Juneteenth was a holiday
    assert dt.date(2026, 7, 3) in cme_holidays(2026)  # July 4th 2026 is a Saturday
    assert dt.date(2024, 1, 12) not in cme_holidays(2024)
    extra = [dt.date(2024, 3, 12)]
    assert cme_trade_date(utc_ns("2024-03-11T22:00:00"), extra) == 20240313


def test_boundaries_of_one_week():
    got = trade_date_boundaries(utc_ns("2024-03-07T00:00:00"), utc_ns("2024-03-14T00:00:00"))
    want = [utc_ns(x) for x in ("2024-03-07T23:00:00", "2024-03-08T23:00:00",
                                "2024-03-11T22:00:00", "2024-03-12T22:00:00",
                                "2024-03-13T22:00:00")]
    assert got.dtype == np.int64 and list(got) == want  # no boundary on Sunday


@settings(max_examples=60, deadline=None)
@given(st.integers(utc_ns("2020-01-01T00:00:00"), utc_ns("2030-01-01T00:00:00")))
def test_session_table_agrees_with_trade_date(ts):
    starts, dates = session_table(ts, ts + 3 * 86400 * S)
    k = int(np.searchsorted(starts, ts, side="right")) - 1
    assert k >= 0 and starts[-1] > ts + 3 * 86400 * S
    assert dates[k] == cme_trade_date(ts)
    assert cme_trade_date(int(starts[k]) - 1) != dates[k]
    assert trade_date_start_ns(ts) == starts[k]
    # dates increase strictly, one per boundary
    assert np.all(np.diff(dates) > 0)
