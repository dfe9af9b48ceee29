"""Pipeline: writer rows reach reducers as written; derived events are written, published, sunk."""

from mia.engine.columns import ColumnBatch
from mia.engine.events import (
    K_TRADE,
    EventCodec,
    OrderflowBar,
    Quote,
    RecordingEnded,
    Trade,
)
from mia.engine.pipeline import Pipeline


class FakeWriter:
    """Writes into a list and, like the log writer, reports every row through on_write."""

    def __init__(self, on_write=None):
        self.rows = []
        self.on_write = on_write

    def append(self, ev):
        seq = len(self.rows)
        self.rows.append(ev)
        if self.on_write:
            self.on_write(seq, ev, EventCodec().encode(ev))
        return seq


class CountingReducer:
    """Emits one bar per RecordingEnded and one per 3rd trade; remembers the rows it saw."""

    def __init__(self):
        self.seen = []
        self.trades = 0

    def on_batch(self, batch: ColumnBatch):
        out = []
        for i in range(len(batch)):
            self.seen.append((int(batch.seq[i]), int(batch.kind[i])))
            if batch.kind[i] == K_TRADE:
                self.trades += 1
                if self.trades % 3 == 0:
                    out.append(_bar(int(batch.ts_recv[i])))
            elif isinstance(batch.events_at(i), RecordingEnded):
                out.append(_bar(int(batch.ts_recv[i])))
        return out


def _bar(ts):
    return OrderflowBar(ts, ts, 1, ts, 60, *[1.0] * 9, 1, *[1.0] * 6, 0, 0, 0, 0, 0.0, 0, 0.0, 0.0)


class Recorder:
    def __init__(self):
        self.sent = []

    def publish(self, stream, seq, ev):
        self.sent.append((stream, seq, type(ev).__name__))


def test_live_rows_reach_reducers_with_their_seqs_and_derived_are_written():
    red = CountingReducer()
    bus = Recorder()
    sunk = []
    pipe = Pipeline([red], publisher=bus, sinks=[sunk.extend])
    writer = FakeWriter(on_write=pipe.on_input_written)
    derived = FakeWriter()
    pipe.input_writer, pipe.derived_writer = writer, derived
    events = [Trade(i, 100 + i, 1, 5000.0 + i, 1.0, 1) for i in range(6)]
    events.insert(2, Quote(0, 101, 1, 4999.0, 1.0, 5001.0, 1.0))
    out = pipe.ingest(events)
    assert [s for s, _ in red.seen] == list(range(7))
    assert len(out) == 2 and derived.rows == out and sunk == out
    assert [x for x in bus.sent if x[0] == "live"] == [("live", i, type(e).__name__) for i, e in enumerate(events)]
    assert [x[1] for x in bus.sent if x[0] == "derived"] == [0, 1]
    # a row the writer adds itself (its end marker) reaches the reducers too
    writer.append(RecordingEnded(500, 500, "r", "stopped"))
    out = pipe.process_written()
    assert len(out) == 1 and red.seen[-1] == (7, 2)


def test_replay_reduce_matches_live_whatever_the_batch_cut():
    events = [Trade(i, i, 1, 100.0 + i % 5, 1.0, 1) for i in range(50)]
    live = CountingReducer()
    pipe = Pipeline([live])
    pipe.input_writer = FakeWriter(on_write=pipe.on_input_written)
    got_live = pipe.ingest(events)
    for cut in (1, 7, 50):
        rep = Pipeline([CountingReducer()])
        got = []
        for i in range(0, 50, cut):
            got += rep.reduce(ColumnBatch.from_events(events[i:i + cut], range(i, min(i + cut, 50))))
        assert got == got_live


def test_a_failing_sink_does_not_stop_the_pipeline(caplog):
    def broken(_):
        raise OSError("disk full")

    pipe = Pipeline([CountingReducer()], sinks=[broken])
    out = pipe.reduce(ColumnBatch.from_events([Trade(i, i, 1, 1.0, 1.0, 1) for i in range(3)], range(3)))
    assert len(out) == 1
    assert "sink failed" in caplog.text
