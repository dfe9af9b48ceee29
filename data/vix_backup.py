"""The VIX backup switch: Polygon's I:VIX stands in while the DTC VIX index is silent.

The recorder passes every DTC and Polygon event through `VixBackup.tap`. When the DTC VIX index
(`[[dtc]] vix_symbol`) has sent nothing for `after_s` seconds while the last indices snapshot
carried a value for I:VIX, it records

    SourceError(source="dtc", underlying="VIX", error="no VIX from DTC for 30 s",
                fallback="using Polygon I:VIX", fallback_kind=FALLBACK_OTHER_SOURCE)

and when DTC VIX sends again

    SourceError(source="dtc", underlying="VIX", error="DTC VIX back",
                fallback="using DTC VIX", fallback_kind=FALLBACK_NONE).

Reducers decide which VIX to use from these events alone, so a replay makes the same switch.
The silence is measured on the recorder's clock from the later of the start and the last DTC
VIX event, checked every `check_s` and whenever an event passes.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Callable, Final

from mia.engine.clock import NS_PER_S, Clock
from mia.engine.errors import MiaError
from mia.engine.events import (
    FALLBACK_NONE,
    FALLBACK_OTHER_SOURCE,
    Event,
    Instrument,
    PolygonResponse,
    SourceError,
)

from .polygon.models import INDICES_PATH, index_values

log = logging.getLogger(__name__)

POLYGON_VIX: Final = "I:VIX"
VIX_UNDERLYING: Final = "VIX"
DEFAULT_CHECK_S: Final = 1.0


class VixBackup:
    """Watches the DTC VIX index and Polygon's I:VIX; records the switch between them."""

    source = "vix-backup"

    def __init__(self, vix_symbol: str, *, after_s: float = 30.0, emit: Callable[[Event], None], clock: Clock,
                 check_s: float = DEFAULT_CHECK_S) -> None:
        self.vix_symbol = vix_symbol
        self.after_ns = int(after_s * NS_PER_S)
        self.after_s = after_s
        self.emit = emit
        self.clock = clock
        self.check_s = check_s
        self.using_polygon = False
        self.polygon_vix = math.nan  # the last I:VIX value (NaN: none, or its row an error)
        self._ids: set[int] = set()  # instrument ids declared for vix_symbol by a DTC source
        self._last_dtc_ns = clock.now_ns()
        self._stop = asyncio.Event()

    def tap(self, emit: Callable[[Event], None]) -> Callable[[Event], None]:
        """`emit`, also showing each event to the switch (after it is queued)."""
        observe = self.observe

        def tapped(event: Event) -> None:
            emit(event)
            observe(event)

        return tapped

    def observe(self, ev: Event) -> None:
        if isinstance(ev, Instrument):
            if ev.symbol == self.vix_symbol and ev.source.startswith("dtc"):
                self._ids.add(int(ev.instrument))
            return
        if isinstance(ev, PolygonResponse):
            if ev.path == INDICES_PATH and ev.status == 200:
                self._on_indices(ev)
            return
        inst = getattr(ev, "instrument", None)
        if inst is not None and inst in self._ids:
            self._last_dtc_ns = max(self._last_dtc_ns, int(ev.ts_recv))
            if self.using_polygon:
                self._switch(False)

    def _on_indices(self, ev: PolygonResponse) -> None:
        try:
            rows = index_values(ev)
        except MiaError:
            return
        for row in rows:
            if row.ticker == POLYGON_VIX:
                self.polygon_vix = row.value if not row.error else math.nan
                break
        self.check()

    @property
    def polygon_available(self) -> bool:
        return math.isfinite(self.polygon_vix)

    def check(self) -> None:
        """Switch to Polygon when DTC VIX has been silent too long and Polygon has a value."""
        if self.using_polygon or not self.polygon_available:
            return
        if self.clock.now_ns() - self._last_dtc_ns >= self.after_ns:
            self._switch(True)

    def _switch(self, to_polygon: bool) -> None:
        self.using_polygon = to_polygon
        now = self.clock.now_ns()
        if to_polygon:
            error = f"no VIX from DTC for {self.after_s:g} s"
            ev = SourceError(ts_event=now, ts_recv=now, source="dtc", error=error, fallback="using Polygon I:VIX",
                             underlying=VIX_UNDERLYING, fallback_kind=FALLBACK_OTHER_SOURCE)
        else:
            error = "DTC VIX back"
            ev = SourceError(ts_event=now, ts_recv=now, source="dtc", error=error, fallback="using DTC VIX",
                             underlying=VIX_UNDERLYING, fallback_kind=FALLBACK_NONE)
        log.warning("vix source switch symbol=%s error=%s", self.vix_symbol, error)
        self.emit(ev)

    async def run(self) -> None:
        self._stop.clear()
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=self.check_s)
            except asyncio.TimeoutError:
                self.check()

    async def stop(self) -> None:
        self._stop.set()
