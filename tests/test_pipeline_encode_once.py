"""Live, each event is encoded once: by the log writer. The frame on disk, the bus payload and
the reducers' columns are all built from those bytes."""

from __future__ import annotations

import pytest

from mia.engine.clock import ManualClock
from mia.engine.columns import ColumnBatch
from mia.engine.events import EventCodec, Instrument, Quote, Trade
from mia.engine.log import EventLog, frame2
from mia.engine.log.format import frame_payload, open_segment
from mia.engine.pipeline import Pipeline

T0 = 20_000 * 86_400 * 10**9 + 3600 * 10**9


def _events(n: int) -> list:
    out: list = [Instrument(T0, T0, 1, "ESZ6", "test")]
    for i in range(n):
        ts = T0 + 1000 * (i + 1)
        out.append(Trade(ts, ts, 1, 5000.25, 1.0, 1) if i % 2 else
                   Quote(ts, ts, 1, 5000.0, float("nan"), 5000.25, 4.0))
    return out


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 65535, 65536])
def test_a_frame_payload_is_byte_for_byte_what_encode_many_writes(n):
    codec = EventCodec()
    events = [Trade(i, i, 1, 1.0 + i, 1.0, 1) for i in range(n)]
    assert frame_payload([codec.encode(e) for e in events]) == codec.encode_many(events)


class _Capture:
    def __init__(self):
        self.batches: list[ColumnBatch] = []

    def on_batch(self, batch):
        self.batches.append(batch)
        return []


class _EncodedPublisher:
    def __init__(self):
        self.rows: list[tuple] = []

    def publish(self, stream, seq, event):  # derived events only, here none
        raise AssertionError("inputs go through publish_encoded")

    def publish_encoded(self, stream, rows):
        self.rows.extend(rows)


def test_the_live_path_encodes_each_event_once_and_reuses_the_bytes(tmp_path, monkeypatch):
    # Arrange: count every encode any EventCodec does from here on, whichever method it goes
    # through (the writer calls its codec's msgspec encoder directly)
    counts = {"events": 0, "lists": 0}

    class CountingEncoder:
        def __init__(self, inner):
            self._inner = inner

        def encode(self, obj):
            counts["lists" if isinstance(obj, list) else "events"] += 1
            return self._inner.encode(obj)

        def encode_into(self, obj, buf, *args):
            counts["lists" if isinstance(obj, list) else "events"] += 1
            return self._inner.encode_into(obj, buf, *args)

    init = EventCodec.__init__

    def counting_init(self):
        init(self)
        self._encoder = CountingEncoder(self._encoder)
        self.encode_fast = self._encoder.encode  # the hot-path encoder, counted too

    monkeypatch.setattr(EventCodec, "__init__", counting_init)
    handed: list[tuple] = []
    reducer, publisher = _Capture(), _EncodedPublisher()
    pipe = Pipeline([reducer], publisher=publisher)

    def on_write(seq, event, encoded):
        handed.append((seq, event, encoded))
        pipe.on_input_written(seq, event, encoded)

    writer = EventLog(tmp_path).writer("live", clock=ManualClock(T0), on_write=on_write)
    pipe.input_writer = writer
    events = _events(40)

    # Act
    pipe.process_written()  # RecordingStarted
    for i in range(0, len(events), 7):
        pipe.ingest(events[i:i + 7])
    writer.close()
    pipe.process_written()  # RecordingEnded
    monkeypatch.undo()

    # Assert: one encode per row written, none of a whole batch
    assert counts == {"events": len(events) + 2, "lists": 0}
    # the bus got the writer's very bytes objects
    assert [(s, e) for s, e, _ in publisher.rows] == [(s, e) for s, e, _ in handed]
    assert all(a[2] is b[2] for a, b in zip(publisher.rows, handed))
    # the reducers' columns equal the reference conversion of what was written
    got = ColumnBatch.concat(reducer.batches)
    want = ColumnBatch.from_events([e for _, e, _ in handed], [s for s, _, _ in handed])
    for name in got.column_names():
        assert getattr(got, name).tobytes() == getattr(want, name).tobytes(), name
    # the frames on disk are built from exactly those bytes (format 2: their columns, and the
    # object rows' very bytes)
    encoded_by_seq = {seq: enc for seq, _, enc in handed}
    with open_segment(writer.path) as seg:
        dec = seg.decoder()
        frames = list(seg.scan())
        for f in frames:
            seqs = range(f.first_seq, f.first_seq + f.count)
            assert dec.payload(f) == frame2.encode(
                frame_payload([encoded_by_seq[s] for s in seqs]), f.count)
    assert sum(f.count for f in frames) == len(handed)
