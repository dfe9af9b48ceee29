"""One pipeline for live and replay: events -> log -> bus -> reducers -> derived -> sinks.

Live, `ingest(events)` appends each event to the input segment, publishes it, and hands the
batch *as it was written* (with the writer's own bracketing and rollover events) to the
reducers. In replay, `reduce(batch)` receives the same rows decoded from the log. Reducers are
pure and see only rows, so both paths produce the same derived events, bit for bit.

Derived events of one batch are merged across reducers by `ts_recv` (stable, in reducer order)
so their order does not depend on how batches were cut either.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Protocol, Sequence

from .columns import ColumnBatch
from .events import Event

logger = logging.getLogger(__name__)


class Reducer(Protocol):
    """A pure fold: rows in, derived events out. No I/O, clock or logging inside."""

    def on_batch(self, batch: ColumnBatch) -> list[Event]: ...


class Writer(Protocol):
    def append(self, event: Event) -> int: ...


class Publisher(Protocol):
    def publish(self, stream: str, seq: int, event: Event) -> None: ...


Sink = Callable[[list[Event]], None]


class Pipeline:
    """Wires reducers between an input writer, a derived writer, a publisher and sinks.

    Every part is optional: replay without --publish has only reducers.
    """

    def __init__(
        self,
        reducers: Sequence[Reducer],
        *,
        input_writer=None,
        derived_writer=None,
        publisher: Publisher | None = None,
        sinks: Sequence[Sink] = (),
        publish_inputs: bool = True,
    ) -> None:
        self.reducers = list(reducers)
        self.input_writer = input_writer
        self.derived_writer = derived_writer
        self.publisher = publisher
        self.sinks = list(sinks)
        self.publish_inputs = publish_inputs
        self.rows_in = 0
        self.derived_out = 0
        self._written: list[tuple[int, Event]] = []
        self._derived_seq = 0

    # --- live --------------------------------------------------------------------------------

    def on_input_written(self, seq: int, event: Event) -> None:
        """The input writer's `on_write` hook: every row it writes, in order, with its seq."""
        self._written.append((seq, event))

    def take_written(self) -> list[tuple[int, Event]]:
        """Rows the input writer wrote since the last call (bracketing and rollover included)."""
        written, self._written = self._written, []
        return written

    def ingest(self, events: Iterable[Event]) -> list[Event]:
        """Live: log, publish and reduce a batch of source events; returns derived events."""
        writer = self.input_writer
        if writer is None:
            raise RuntimeError("ingest needs an input writer; use reduce() in replay")
        for ev in events:
            writer.append(ev)
        return self.process_written()

    def process_written(self) -> list[Event]:
        """Publish and reduce whatever the input writer wrote (e.g. its RecordingEnded)."""
        written = self.take_written()
        if not written:
            return []
        if self.publisher is not None and self.publish_inputs:
            for seq, ev in written:
                self.publisher.publish("live", seq, ev)
        batch = ColumnBatch.from_events([ev for _, ev in written], [seq for seq, _ in written])
        return self.reduce(batch)

    # --- shared ------------------------------------------------------------------------------

    def reduce(self, batch: ColumnBatch) -> list[Event]:
        """Run every reducer over one batch; write, publish and sink the derived events."""
        self.rows_in += len(batch)
        derived: list[Event] = []
        for reducer in self.reducers:
            derived.extend(reducer.on_batch(batch))
        if not derived:
            return derived
        derived.sort(key=_ts_recv)  # stable: reducer order breaks ties
        self.derived_out += len(derived)
        for ev in derived:
            if self.derived_writer is not None:
                seq = self.derived_writer.append(ev)
            else:
                seq = self._derived_seq
                self._derived_seq += 1
            if self.publisher is not None:
                self.publisher.publish("derived", seq, ev)
        for sink in self.sinks:
            try:
                sink(derived)
            except Exception:  # a sink (levels file on a full disk...) must not stop the pipeline
                logger.exception("sink failed sink=%r", sink)
        return derived


def _ts_recv(ev: Event) -> int:
    return ev.ts_recv
