"""Instrument ids: small ints shared by every source of one recording."""

from __future__ import annotations

import threading


class InstrumentRegistry:
    """Hands out one stable small int per symbol for the life of a recording.

    Several DTC connections (ES on one Sierra Chart instance, NQ on another) share one registry
    so their ids never collide. DTC clients also use the id as the DTC SymbolID, so a
    resubscription after reconnect reuses it.
    """

    def __init__(self, first_id: int = 1) -> None:
        self._ids: dict[str, int] = {}
        self._next = first_id
        self._lock = threading.Lock()

    def id_for(self, symbol: str) -> int:
        with self._lock:
            found = self._ids.get(symbol)
            if found is None:
                found = self._ids[symbol] = self._next
                self._next += 1
            return found

    def known(self) -> dict[str, int]:
        with self._lock:
            return dict(self._ids)
