"""The researcher's API: open_day(root, date) -> iterate, filter, columns, to_pandas, run."""

import msgspec
import numpy as np
import pytest
from helpers import write_events

from mia.engine.errors import NoDataError, UsageError
from mia.engine.events import Instrument, Quote, SourceError, Trade
from mia.replay import open_day

NS = 1_000_000_000
T0 = 1795183200 * NS  # 2026-11-20 14:00:00 UTC
DATE = "2026-11-20"


@pytest.fixture(scope="module")
def day_events(tmp_path_factory):
    """Two instruments, trades and quotes every 100 ms for a minute, a source error, written
    as two recordings (two segments) so reads merge segments."""
    root = tmp_path_factory.mktemp("api")
    events = [Instrument(T0, T0, 1, "ESZ6", "dtc:sim", tick_size=0.25),
              Instrument(T0, T0, 2, "NQZ6", "dtc:sim", tick_size=0.25)]
    for k in range(600):
        ts = T0 + k * NS // 10 + 7
        for inst, px in ((1, 6000.0), (2, 21000.0)):
            p = px + 0.25 * (k % 11)
            events.append(Trade(ts - 3, ts, inst, p, float(1 + k % 4), (-1, 1)[k % 2]))
            events.append(Quote(ts - 2, ts + 1, inst, p - 0.25, 3.0, p, 4.0))
        if k == 300:
            events.append(SourceError(ts, ts + 2, "polygon", "HTTP 503", "using chain from 14:00"))
    half = len(events) // 2
    write_events(root, events[:half])
    # a new segment declares its instruments again
    t = events[half].ts_recv
    again = [msgspec.structs.replace(ev, ts_event=t, ts_recv=t) for ev in events[:2]]
    write_events(root, again + events[half:])
    return root, events


def test_iteration_in_log_order_with_every_event(day_events):
    root, events = day_events
    got = [ev for ev in open_day(root, DATE) if not type(ev).__name__.startswith("Recording")]
    market = [ev for ev in got if not isinstance(ev, Instrument)]
    assert market == [ev for ev in events if not isinstance(ev, Instrument)]


def test_filters_by_kind_symbol_and_window(day_events):
    root, events = day_events
    day = open_day(root, DATE)
    lo, hi = T0 + 10 * NS, T0 + 20 * NS
    got = list(day.events(kinds=["Trade"], symbols=["NQZ6"], start=lo, end=hi))
    want = [e for e in events if isinstance(e, Trade) and e.instrument == 2 and lo <= e.ts_recv < hi]
    assert got == want and len(want) == 100
    # kinds as classes, several of them
    got = list(day.events(kinds=[Quote, SourceError], symbols=None, start=lo + 20 * NS))
    assert {type(e) for e in got} == {Quote, SourceError}
    assert sum(isinstance(e, SourceError) for e in got) == 1


def test_columns_equal_the_events(day_events):
    root, events = day_events
    day = open_day(root, DATE)
    cols = day.columns("Trade")
    trades = [e for e in events if isinstance(e, Trade)]
    assert len(cols["price"]) == len(trades)
    for name in ("ts_event", "ts_recv", "instrument", "price", "size", "side"):
        assert np.array_equal(cols[name], np.array([getattr(t, name) for t in trades])), name
    assert np.all(np.diff(cols["seq"][: len(trades) // 2]) > 0)
    es = day.columns(Trade, symbols=["ESZ6"])
    assert set(es["instrument"].tolist()) == {1} and len(es["price"]) == 600
    errs = day.columns("SourceError")
    assert errs["error"].tolist() == ["HTTP 503"]


def test_to_pandas_has_utc_times_and_symbols(day_events):
    root, events = day_events
    df = open_day(root, DATE).to_pandas("Quote", symbols=["ESZ6"])
    quotes = [e for e in events if isinstance(e, Quote) and e.instrument == 1]
    assert len(df) == len(quotes)
    assert str(df["ts_recv"].dt.tz) == "UTC"
    assert df["ts_recv"].iloc[0].value == quotes[0].ts_recv
    assert set(df["symbol"]) == {"ESZ6"}
    assert df["bid"].tolist() == [q.bid for q in quotes]


def test_run_my_reducer_sees_every_row_once_in_order(day_events):
    root, events = day_events

    class VolumeByInstrument:
        def __init__(self):
            self.volume = {}
            self.last_seq = -1
            self.rows = 0

        def on_batch(self, batch):
            sel = batch.kind == 10  # K_TRADE
            for inst, size in zip(batch.instrument[sel].tolist(), batch.size[sel].tolist()):
                self.volume[inst] = self.volume.get(inst, 0.0) + size
            self.rows += len(batch)
            return [len(batch)]

    red = VolumeByInstrument()
    out = open_day(root, DATE).run(red)
    want = {}
    for e in events:
        if isinstance(e, Trade):
            want[e.instrument] = want.get(e.instrument, 0.0) + e.size
    assert red.volume == want
    assert sum(out) == red.rows >= len(events)
    # a plain callable works too
    seen = []
    open_day(root, DATE).run(lambda b: seen.append(len(b)))
    assert sum(seen) == red.rows


def test_clear_errors(day_events, tmp_path):
    root, _ = day_events
    day = open_day(root, DATE)
    with pytest.raises(UsageError, match="unknown event kind 'Trades'"):
        list(day.events(kinds=["Trades"]))
    with pytest.raises(UsageError, match="CLZ6"):
        day.columns("Trade", symbols=["CLZ6"])
    with pytest.raises(NoDataError, match="2026-11-19"):
        open_day(root, "2026-11-19")
    with pytest.raises(UsageError, match="bad date"):
        open_day(root, "20-11-2026")
    with pytest.raises(NoDataError):
        open_day(tmp_path / "nowhere", DATE)
