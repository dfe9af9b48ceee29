"""The CME trade date of an instant, and the instants where it changes.

Rules (reference/orderflow.md, section 3): Globex opens at 17:00 America/Chicago and that
evening belongs to the *next* trade date, so the trade date of an instant is the Chicago
calendar date of (local time + 7 h), moved forward to the next CME business day when it falls
on a weekend or an exchange holiday. Friday evening and Sunday evening therefore both belong to
Monday (Monday's session opens Sunday 17:00 CT), and after a Monday holiday the Sunday open
belongs to Tuesday. Daylight saving is handled by zoneinfo: 17:00 CT is 22:00 UTC in summer
and 23:00 UTC in winter.

Holidays: the full-day US exchange holidays by rule (`mia.engine.holidays`). Globex often runs an abbreviated session on some of these days; its trades
belong to the next business day, which is what moving the date forward gives. Ad-hoc closures
(national days of mourning) are not in the rules; pass them as `extra_holidays`.

Everything here is plain Python (numba has no time zones); the order-flow kernel receives the
boundaries as an int64 array.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Final
from zoneinfo import ZoneInfo

import numpy as np

from ..engine.clock import NS_PER_DAY, to_ns, utc_datetime
from ..engine.holidays import is_exchange_business_day, us_exchange_holidays

CHICAGO: Final = ZoneInfo("America/Chicago")
SESSION_OPEN_CT: Final = dt.time(17, 0)
_ROLL: Final = dt.timedelta(hours=7)  # 17:00 + 7 h = midnight of the next date


def cme_holidays(year: int) -> frozenset[dt.date]:
    """Full-day exchange holidays of a year, by rule (see the module docstring)."""
    return us_exchange_holidays(year)


def is_cme_business_day(day: dt.date, extra_holidays: Iterable[dt.date] = ()) -> bool:
    return is_exchange_business_day(day, extra_holidays)


def _trade_date(ts_ns: int, extra: frozenset[dt.date]) -> dt.date:
    local = utc_datetime(ts_ns).astimezone(CHICAGO)
    day = (local.replace(tzinfo=None) + _ROLL).date()
    while not is_cme_business_day(day, extra):
        day += dt.timedelta(days=1)
    return day


def _yyyymmdd(day: dt.date) -> int:
    return day.year * 10000 + day.month * 100 + day.day


def cme_trade_date(ts_ns: int, extra_holidays: Iterable[dt.date] = ()) -> int:
    """The CME trade date (YYYYMMDD) of an instant in int ns UTC; 17:00 CT opens the next one."""
    return _yyyymmdd(_trade_date(int(ts_ns), frozenset(extra_holidays)))


def session_open_ns(day: dt.date) -> int:
    """17:00 America/Chicago on a calendar date, as int ns UTC."""
    local = dt.datetime.combine(day, SESSION_OPEN_CT, tzinfo=CHICAGO)
    return to_ns(local)


def trade_date_boundaries(start_ns: int, end_ns: int, extra_holidays: Iterable[dt.date] = ()) -> np.ndarray:
    """Sorted int64 ns of every instant in [start_ns, end_ns) where the CME trade date changes.

    Each is a 17:00 CT at which a new trade date begins: Monday to Thursday evenings, and the
    last business day's evening before a weekend or holiday (Sunday's open continues it).
    """
    extra = frozenset(extra_holidays)
    start_ns, end_ns = int(start_ns), int(end_ns)
    first = utc_datetime(start_ns).astimezone(CHICAGO).date()
    last = utc_datetime(end_ns).astimezone(CHICAGO).date()
    out = []
    day = first - dt.timedelta(days=1)
    while day <= last + dt.timedelta(days=1):
        at = session_open_ns(day)
        if start_ns <= at < end_ns and _trade_date(at, extra) != _trade_date(at - 1, extra):
            out.append(at)
        day += dt.timedelta(days=1)
    return np.asarray(out, dtype=np.int64)


def trade_date_start_ns(ts_ns: int, extra_holidays: Iterable[dt.date] = ()) -> int:
    """The instant the trade date holding `ts_ns` began (the last boundary at or before it)."""
    extra = frozenset(extra_holidays)
    ts_ns = int(ts_ns)
    lookback = 4 * NS_PER_DAY
    while True:
        found = trade_date_boundaries(ts_ns - lookback, ts_ns + 1, extra)
        if len(found):
            return int(found[-1])
        lookback *= 2


def session_table(start_ns: int, end_ns: int, extra_holidays: Iterable[dt.date] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Trade-date starts and their dates covering [start_ns, end_ns], for the order-flow kernel.

    Returns (starts int64, dates int64 YYYYMMDD) with starts[0] <= start_ns and
    starts[-1] > end_ns: every instant in the range falls in exactly one [starts[k], starts[k+1]).
    """
    extra = frozenset(extra_holidays)
    lo = trade_date_start_ns(start_ns, extra)
    span = 8 * NS_PER_DAY
    while True:
        starts = trade_date_boundaries(lo, int(end_ns) + span, extra)
        if len(starts) and starts[-1] > end_ns:
            break
        span *= 2
    dates = np.asarray([_yyyymmdd(_trade_date(int(s), extra)) for s in starts], dtype=np.int64)
    return starts, dates
