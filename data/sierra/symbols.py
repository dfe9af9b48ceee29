"""Instrument specs from a Sierra Chart symbol: root, tick size, point value, exchange.

Sierra names files after its symbol (`ESZ6.scid`, `ESZ25_FUT_CME.scid`, `ESZ6-CME.scid`,
`ESZ6.2026-11-28.depth`). The root is the longest known root followed by a month code and a
year; roots not listed need the tick size given (`SierraConfig.tick_sizes`, `--tick-size`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Final, Mapping

import msgspec

from mia.engine.errors import UsageError
from mia.engine.events import Instrument


class Spec(msgspec.Struct, frozen=True):
    tick_size: float
    point_value: float
    exchange: str


# root -> (tick size, point value per 1.0 of price, exchange)
SPECS: Final[dict[str, Spec]] = {
    "ES": Spec(0.25, 50.0, "CME"),
    "MES": Spec(0.25, 5.0, "CME"),
    "NQ": Spec(0.25, 20.0, "CME"),
    "MNQ": Spec(0.25, 2.0, "CME"),
    "RTY": Spec(0.1, 50.0, "CME"),
    "M2K": Spec(0.1, 5.0, "CME"),
    "YM": Spec(1.0, 5.0, "CBOT"),
    "MYM": Spec(1.0, 0.5, "CBOT"),
    "VX": Spec(0.05, 1000.0, "CFE"),
    "VXM": Spec(0.05, 100.0, "CFE"),
    "CL": Spec(0.01, 1000.0, "NYMEX"),
    "MCL": Spec(0.01, 100.0, "NYMEX"),
    "GC": Spec(0.1, 100.0, "COMEX"),
    "MGC": Spec(0.1, 10.0, "COMEX"),
    "ZN": Spec(1.0 / 64.0, 1000.0, "CBOT"),
    "ZB": Spec(1.0 / 32.0, 1000.0, "CBOT"),
    "6E": Spec(0.00005, 125000.0, "CME"),
}
_ROOTS_LONGEST_FIRST: Final = sorted(SPECS, key=len, reverse=True)
_MONTH_YEAR = re.compile(r"^[FGHJKMNQUVXZ]\d{1,4}(?:$|[-_.# ])")
_DEPTH_NAME = re.compile(r"^(?P<symbol>.+)\.(?P<date>\d{4}-\d{2}-\d{2})\.depth$", re.IGNORECASE)


def root_of(symbol: str) -> str | None:
    """The known root of a futures symbol ("MESZ6" -> "MES", "ESZ25_FUT_CME" -> "ES")."""
    s = symbol.upper()
    for root in _ROOTS_LONGEST_FIRST:
        if s.startswith(root) and _MONTH_YEAR.match(s[len(root):]):
            return root
    return None


def symbol_of_file(path: str | Path) -> str:
    """`ESZ6.scid` -> "ESZ6"; `ESZ6.2026-11-28.depth` -> "ESZ6"."""
    name = Path(path).name
    m = _DEPTH_NAME.match(name)
    if m:
        return m.group("symbol")
    return name.rsplit(".", 1)[0] if "." in name else name


def date_of_depth_file(path: str | Path) -> str | None:
    m = _DEPTH_NAME.match(Path(path).name)
    return m.group("date") if m else None


def instrument_for(symbol: str, iid: int, ts_ns: int, source: str, *,
                   tick_sizes: Mapping[str, float] | None = None,
                   point_values: Mapping[str, float] | None = None) -> Instrument:
    """The `Instrument` declaring `symbol` as `iid`. Given tick sizes (by symbol or root) win
    over the table; an unknown root without one is a UsageError naming the symbol."""
    root = root_of(symbol)
    spec = SPECS.get(root) if root else None
    ticks = dict(tick_sizes or {})
    points = dict(point_values or {})
    tick = ticks.get(symbol, ticks.get(root or "", spec.tick_size if spec else math.nan))
    point = points.get(symbol, points.get(root or "", spec.point_value if spec else math.nan))
    if not tick == tick or tick <= 0:
        raise UsageError(f"unknown Sierra symbol root for {symbol!r}: give its tick size "
                         f"(--tick-size, or tick_sizes = {{ {symbol} = ... }} in [[sierra]])")
    kind = "future" if spec is not None or _MONTH_YEAR.match(symbol[len(root or ""):] or "-") \
        else "other"
    return Instrument(ts_ns, ts_ns, iid, symbol, source, exchange=spec.exchange if spec else "",
                      tick_size=float(tick), point_value=float(point), kind=kind)
