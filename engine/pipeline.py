"""One pipeline for live and replay: events -> log -> bus -> reducers -> derived -> sinks.

Live, `ingest(events)` appends each event to the input segment, publishes it, and hands the
batch *as it was written* (with the writer's own bracketing and rollover events) to the
reducers. Each event is encoded once, by the writer: the bus sends those bytes and the columns
are decoded from them. In replay, `reduce(batch)` receives the same rows decoded from the log. Reducers are
pure and see only rows, so both paths produce the same derived events, bit for bit.

Derived events of one batch are merged across reducers by `ts_recv` (stable, in reducer order)
so their order does not depend on how batches were cut either.

A recorder starts before its reducers' kernels are compiled: `hold()` keeps the written rows
back from the reducers (they are logged and published at once) and `release()` folds them, in
order, when the reducers are ready; since results do not depend on batch cuts, the derived
events are those of a run that never waited.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable, Protocol, Sequence

import msgspec

from .columns import ColumnBatch
from .events import Event
from .log.format import frame_payload

logger = logging.getLogger(__name__)


class Reducer(Protocol):
    """A pure fold: rows in, derived events out. No I/O, clock or logging inside."""

    def on_batch(self, batch: ColumnBatch) -> list[Event]: ...


class Writer(Protocol):
    def append(self, event: Event) -> int: ...


class Publisher(Protocol):
    """`publish` per row; a publisher that also has `publish_encoded(stream, rows)` is handed
    the writer's (seq, event, encoded) rows and sends those bytes."""

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
        self._written: list[tuple[int, Event, bytes]] = []
        self._derived_seq = 0
        self._fast_columns: Callable | None = None
        self._held: list[tuple[int, Event, bytes]] | None = None  # written rows the reducers wait for

    # --- held: the reducers are not ready yet (their kernels still compiling) -----------------

    def hold(self) -> None:
        """Keep written rows back from the reducers (they are still logged and published at
        once) until `release` has folded them: a recorder starts its sources and its log before
        its kernels are compiled, and the fold catches up when they are."""
        if self._held is None:
            self._held = []

    @property
    def holding(self) -> bool:
        """True from `hold` until `release` has folded every held row."""
        return self._held is not None

    @property
    def held_rows(self) -> int:
        return 0 if self._held is None else len(self._held)

    def release(self, max_rows: int | None = None) -> list[Event]:
        """Fold up to `max_rows` held rows (all: None), oldest first, as one batch: reducers are
        indifferent to where batches are cut, so the derived events are those of an unheld
        run. Rows written meanwhile queue behind them; once none is left the pipeline reduces
        as it writes again. Returns the derived events."""
        held = self._held
        if held is None:
            return []
        if max_rows is None or len(held) <= max_rows:
            rows, self._held = held, None
        else:
            rows, self._held = held[:max_rows], held[max_rows:]
        return self.reduce(self._columns(rows)) if rows else []

    # --- live --------------------------------------------------------------------------------

    def on_input_written(self, seq: int, event: Event, encoded: bytes) -> None:
        """The input writer's `on_write` hook: every row it writes, in order, with its seq and
        the bytes it encoded it to."""
        self._written.append((seq, event, encoded))

    def take_written(self) -> list[tuple[int, Event, bytes]]:
        """(seq, event, encoded) rows the input writer wrote since the last call (bracketing and
        rollover included)."""
        written, self._written = self._written, []
        return written

    def ingest(self, events: Iterable[Event]) -> list[Event]:
        """Live: log, publish and reduce a batch of source events; returns derived events."""
        writer = self.input_writer
        if writer is None:
            raise RuntimeError("ingest needs an input writer; use reduce() in replay")
        append = writer.append
        for ev in events:
            append(ev)
        return self.process_written()

    def process_written(self) -> list[Event]:
        """Publish and reduce whatever the input writer wrote (e.g. its RecordingEnded)."""
        written = self.take_written()
        if not written:
            return []
        if self.publisher is not None and self.publish_inputs:
            publish_encoded = getattr(self.publisher, "publish_encoded", None)
            if publish_encoded is not None:
                publish_encoded("live", written)
            else:
                for seq, ev, _ in written:
                    self.publisher.publish("live", seq, ev)
        if self._held is not None:
            self._held.extend(written)
            return []
        return self.reduce(self._columns(written))

    def _columns(self, written: list[tuple[int, Event, bytes]]) -> ColumnBatch:
        """The written rows as columns, decoded from the writer's bytes by the log's own decoder
        (numba, ~3x faster than `ColumnBatch.from_events`, and what replay sees); from_events if
        it fails."""
        seqs, events, encoded = zip(*written)
        n = len(events)
        try:
            if self._fast_columns is None:
                from .fastdecode import decode_columns  # numba: only live ingest pays for it

                self._fast_columns = decode_columns
            # A writer's seqs run contiguously, restarting only at a UTC-day rollover, so
            # last - first == n - 1 means one run: first_seq fills the column.
            contiguous = seqs[-1] - seqs[0] == n - 1
            batch = self._fast_columns(frame_payload(encoded), n, seqs[0] if contiguous else -1)
            if not contiguous:
                batch.seq[:] = seqs
            return batch
        except (ValueError, msgspec.MsgspecError):  # FastDecodeError is a ValueError
            logger.warning("fast column decode failed, using from_events rows=%d", n, exc_info=True)
            return ColumnBatch.from_events(list(events), list(seqs))

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
