"""The writer's on_write hook sees exactly the rows a reader reads back, seqs included."""

from mia.engine.clock import ManualClock
from mia.engine.events import EventCodec, Instrument, Trade
from mia.engine.log import EventLog

DAY = 86_400 * 10**9
T0 = 20_000 * DAY + 23 * 3600 * 10**9  # 23:00 UTC, so the stream rolls over at midnight


def test_on_write_matches_the_log_across_a_rollover(tmp_path):
    clock = ManualClock(T0)
    seen = []
    log = EventLog(tmp_path)
    w = log.writer("live", clock=clock, on_write=lambda seq, ev, encoded: seen.append((seq, ev, encoded)))
    w.append(Instrument(T0, T0, 1, "ESZ6", "test"))
    for i in range(100):
        ts = T0 + i * 60 * 10**9  # crosses UTC midnight after 60 trades
        clock.set(ts)
        w.append(Trade(ts, ts, 1, 5000.0 + i, 1.0, 1))
    w.close()
    read = [(seq, ev) for d in log.dates() for seq, ev in log.read(d, streams=["live"])]
    assert len(log.dates()) == 2
    assert [type(e).__name__ for _, e, _ in seen] == [type(e).__name__ for _, e in read]
    codec = EventCodec()  # encodings compare NaN fields bit for bit
    assert [(s, enc) for s, _, enc in seen] == [(s, codec.encode(e)) for s, e in read]
