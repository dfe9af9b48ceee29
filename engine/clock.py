"""Clocks are injected: sources stamp `ts_recv` from one, reducers never read one."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int:
        """Nanoseconds since the Unix epoch, UTC."""
        ...


class SystemClock:
    """The wall clock, in integer nanoseconds."""

    def now_ns(self) -> int:
        return time.time_ns()


class ManualClock:
    """A clock tests move by hand."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns

    def now_ns(self) -> int:
        return self._now

    def advance(self, ns: int) -> None:
        self._now += ns

    def set(self, ns: int) -> None:
        self._now = ns
