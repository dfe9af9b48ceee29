"""Price levels for Sierra Chart: the "Trading Levels" text file, and the same levels as JSON.

File format (reference/orderflow.md section 2.2, Sierra's Trading Levels parser): the first line
is exactly ``Date, Label, Color, Width, Value, Value2``; Sierra sees that it starts with
``Date, Label, Color, Width, Value`` (its per-line label/colour/width format, which newer builds
only accept with at least six fields); then one line per level, ``YYYY-MM-DD, label, color,
width, value, value2``, sorted ascending by date. Fields are split on "," with no quoting, so
labels never contain commas. Colour is the decimal of 0xRRGGBB; every colour here has R == B, so
it draws the same whether a Sierra build reads it as 0xRRGGBB or as a Windows COLORREF
(0x00BBGGRR). Value2 is the second edge of a band (value area) and repeats Value for a line.

The file is written to a temporary file in the same directory and moved into place with
os.replace, so a reader (Sierra) sees either the old file or the new one, never half of one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping

import msgspec

from ..engine.errors import MiaError
from ..engine.events import GammaLevels, OrderflowBar, TermStructure
from ..engine.files import write_atomically
from ..engine.jsonenc import to_json
from .orderflow import InstrumentSummary

HEADER = "Date, Label, Color, Width, Value, Value2"
NEWLINE = "\r\n"  # Sierra runs on Windows; the parser reads numbers with atof, so "\r" is harmless

# R == B in every colour (see the module docstring).
GREY = 0x808080
LIGHT_GREY = 0xC0C0C0
WHITE = 0xFFFFFF
GREEN = 0x00C000
PURPLE = 0xC000C0
PINK = 0xFF80FF
LIGHT_GREEN = 0x80FF80
DARK_GREEN = 0x008000
TEAL_GREY = 0x60A060
LIGHT_PURPLE = 0xE0A0E0
ORCHID = 0xC060C0


class LevelsFormatError(MiaError):
    """A levels file line does not follow the Trading Levels format."""


class Level(msgspec.Struct, frozen=True):
    """One price level. `value2` is the other edge of a band; NaN (written as `value`) for a line."""

    label: str
    value: float
    value2: float = math.nan
    color: int = GREY
    width: int = 1
    source: str = ""  # "gamma:SPX", "orderflow:ESU5"
    date: str = ""  # YYYY-MM-DD


def _clean_label(label: str) -> str:
    # The parser splits on commas with no quoting; newlines would split the line.
    return " ".join(label.replace(",", ";").split())


class LevelRow(msgspec.Struct, frozen=True):
    """One level in `levels_json`: colour as "#RRGGBB"; a NaN value is written as null."""

    date: str
    label: str
    value: float
    value2: float
    color: str
    width: int
    source: str


class LevelsDocument(msgspec.Struct, frozen=True):
    """The JSON of `mia levels --json`."""

    levels: list[LevelRow]


def _gamma_levels(underlying: str, g: GammaLevels, date: str) -> list[Level]:
    out: list[Level] = []
    basis = g.basis if math.isfinite(g.basis) else 0.0
    in_futures = math.isfinite(g.basis)
    prefix = (g.futures_symbol or underlying) if in_futures else underlying
    stale = " stale" if g.stale else ""
    source = f"gamma:{underlying}"

    def add(name: str, index_level: float, color: int, width: int) -> None:
        if not math.isfinite(index_level):
            return
        value = index_level + basis
        label = f"{prefix} {name}{stale}"
        if in_futures:
            label += f" ({underlying} {index_level:g})"
        out.append(Level(_clean_label(label), value, value, color, width, source, date))

    add("Spot", g.spot, GREY, 1)
    add("Zero Gamma", g.zero_gamma, WHITE, 2)
    add("Flow Zero Gamma", g.flow_zero_gamma, PINK, 2)  # NaN (not drawn) without option streams
    add("Call Wall", g.call_wall, GREEN, 3)
    add("Put Wall", g.put_wall, PURPLE, 3)
    add("Max Pain", g.max_pain, LIGHT_GREY, 1)
    for n, pin in enumerate(g.pin_strikes, start=1):
        add(f"Pin {n}", pin, TEAL_GREY, 1)
    return out


def _term_levels(term: TermStructure, date: str) -> list[Level]:
    out: list[Level] = []
    if math.isfinite(term.vix):
        label = "VIX" + (f" ({term.vix_source})" if term.vix_source == "polygon" else "")
        out.append(Level(label, term.vix, term.vix, LIGHT_PURPLE, 2, "volatility:VIX", date))
    if math.isfinite(term.cm30):
        out.append(Level("VX 30d", term.cm30, term.cm30, ORCHID, 2, "volatility:VX", date))
    return out


def build_levels(gamma: Mapping[str, GammaLevels],
                 orderflow: Mapping[str, InstrumentSummary | OrderflowBar] | None = None, *,
                 date: str, term: TermStructure | None = None) -> list[Level]:
    """The levels to draw for one trading date.

    Gamma (per underlying): spot, zero gamma, the flow-adjusted zero gamma (with the option
    streams: OI plus the day's signed customer volume), call wall, put wall, max pain and pins. When a
    futures basis is known they are drawn in futures prices (level + basis) and labelled with the
    futures symbol and the index level, e.g. ``ESU5 Call Wall (SPX 6000)``; otherwise in index
    prices, ``SPX Call Wall``. Stale levels say so in the label.
    Order flow (per symbol, an `InstrumentSummary` of `OrderflowReducer.summary()` or an
    OrderflowBar): POC, value area (a band), VWAP, and with a bar its 1 and 2 standard-deviation
    bands (``vwap_sd``).
    Volatility (a TermStructure): the VIX (labelled ``VIX (polygon)`` on the backup source) and
    the 30-day constant-maturity VX (``VX 30d``), for a VIX or VX chart.
    NaN levels are left out.
    """
    out: list[Level] = []
    for underlying in sorted(gamma):
        out += _gamma_levels(underlying, gamma[underlying], date)
    if term is not None:
        out += _term_levels(term, date)
    for symbol in sorted(orderflow or {}):
        of = (orderflow or {})[symbol]
        source = f"orderflow:{symbol}"
        if not isinstance(of, (InstrumentSummary, OrderflowBar)):
            raise TypeError(f"orderflow[{symbol!r}]: expected an InstrumentSummary or an OrderflowBar, "
                            f"got {type(of).__name__}")
        poc, va_low, va_high, vwap = of.poc, of.va_low, of.va_high, of.vwap
        sd = of.vwap_sd if isinstance(of, OrderflowBar) else math.nan
        if math.isfinite(poc):
            out.append(Level(_clean_label(f"{symbol} POC"), poc, poc, PINK, 2, source, date))
        if math.isfinite(va_high):
            out.append(Level(_clean_label(f"{symbol} VA High"), va_high, va_low, LIGHT_GREEN, 1, source, date))
        if math.isfinite(va_low):
            out.append(Level(_clean_label(f"{symbol} VA Low"), va_low, va_high, LIGHT_GREEN, 1, source, date))
        if math.isfinite(vwap):
            out.append(Level(_clean_label(f"{symbol} VWAP"), vwap, vwap, DARK_GREEN, 2, source, date))
            if math.isfinite(sd) and sd > 0:
                for k in (1, 2):
                    for sign, side in ((1, "+"), (-1, "-")):
                        v = vwap + sign * k * sd
                        out.append(Level(_clean_label(f"{symbol} VWAP {side}{k}SD"), v, v, DARK_GREEN, 1, source, date))
    return out


def _num(value: float) -> str:
    return repr(float(value))  # shortest text that reads back to the same float


def format_levels_file(levels: Iterable[Level]) -> str:
    """The Trading Levels text: the header, then one line per level, sorted ascending by date."""
    lines = [HEADER]
    ordered = sorted(levels, key=lambda lv: lv.date)  # stable: keeps the given order within a date
    for lv in ordered:
        if not lv.date:
            raise LevelsFormatError(f"level {lv.label!r}: no date (Sierra matches lines by trading date)")
        if not math.isfinite(lv.value):
            continue
        value2 = lv.value2 if math.isfinite(lv.value2) else lv.value
        lines.append(f"{lv.date}, {_clean_label(lv.label)}, {int(lv.color)}, {int(lv.width)}, "
                     f"{_num(lv.value)}, {_num(value2)}")
    return NEWLINE.join(lines) + NEWLINE


def write_levels_file(path: str | os.PathLike, levels: Iterable[Level]) -> None:
    """Write the levels file atomically: temporary file in the same directory, fsync, os.replace."""
    text = format_levels_file(levels).encode("utf-8")

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(text)

    write_atomically(path, write)


def parse_levels_file(text: str) -> list[Level]:
    """Read a levels file back (the header is required, as Sierra's format detection needs it).

    `source` is not stored in the file and comes back empty.
    """
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("Date, Label, Color, Width, Value"):
        raise LevelsFormatError("levels file: first line must start with 'Date, Label, Color, Width, Value'")
    out = []
    for n, line in enumerate(lines[1:], start=2):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5:
            raise LevelsFormatError(f"levels file line {n}: {len(parts)} fields, expected 6")
        try:
            value = float(parts[4])
            value2 = float(parts[5]) if len(parts) > 5 else value
            out.append(Level(parts[1], value, value2, int(parts[2]), int(parts[3]), "", parts[0]))
        except ValueError as exc:
            raise LevelsFormatError(f"levels file line {n}: {exc}") from None
    return out


def levels_json(levels: Iterable[Level]) -> str:
    """The levels as JSON: {"levels": [{date, label, value, value2, color: "#RRGGBB", width, source}]}."""
    return to_json(LevelsDocument([
        LevelRow(lv.date, lv.label, lv.value, lv.value2, f"#{int(lv.color):06X}", int(lv.width), lv.source)
        for lv in levels]))
