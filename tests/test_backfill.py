"""The backfill library on a hand-made day: which windows are asked, what is kept, idempotence,
the live instrument ids, errors. The historical port is a stand-in `fetch`."""

import asyncio

import pytest
from click.testing import CliRunner

from mia.cli import cli
from mia.data.dtc.backfill import STREAM, backfill_day, filled_windows
from mia.data.dtc.historical import HistoricalRejectedError, HistoricalTick
from mia.engine.clock import NS_PER_MS, NS_PER_S, ManualClock, day_bounds
from mia.engine.errors import UsageError
from mia.engine.events import Gap, Instrument, Trade
from mia.engine.log import EventLog

DATE = "2026-11-20"
T0 = day_bounds(DATE)[0] + 14 * 3600 * NS_PER_S
SRC = "dtc:127.0.0.1:11099"
ES, NQ = 7, 9
MS = NS_PER_MS


def market():
    """Every trade the exchange printed: (instrument, ts, price, size, side); a burst of two
    identical prints at 1500 ms."""
    rows = []
    for k in range(0, 40):
        ts = T0 + k * 100 * MS
        rows.append((ES, ts, 6000.0 + k * 0.25, 1.0, 1 if k % 3 else -1))
        rows.append((NQ, ts + 10 * MS, 21000.0 + k * 0.25, 2.0, -1))
    rows.append((ES, T0 + 1500 * MS, 6003.75, 1.0, -1))  # the same as k = 15
    rows.sort(key=lambda r: r[1])
    return rows


def write_live(root, *, lost=(1000 * MS, 2500 * MS)):
    """Live: trades received 3 ms after they printed, none while the link was down
    (the client noticed at lost[0] + 150 ms, the feed was already dead at lost[0]); a Gap."""
    log = EventLog(root)
    clock = ManualClock(T0 - NS_PER_S)
    with log.writer("live", clock=clock) as w:
        w.append(Instrument(T0 - NS_PER_S, T0 - NS_PER_S, ES, "ESZ6", SRC, "CME", 0.25, 50.0))
        w.append(Instrument(T0 - NS_PER_S, T0 - NS_PER_S, NQ, "NQZ6", SRC, "CME", 0.25, 20.0))
        w.append(Instrument(T0 - NS_PER_S, T0 - NS_PER_S, 30, "SPX", "polygon", kind="index"))
        down_lo, down_hi = T0 + lost[0], T0 + lost[1]
        gap_written = False
        for iid, ts, price, size, side in market():
            recv = ts + 3 * MS
            if down_lo <= ts < down_hi:
                continue
            if recv >= down_hi and not gap_written:
                clock.set(down_hi)
                w.append(Gap(down_hi, down_hi, SRC, down_lo + 150 * MS, down_hi, "connection lost"))
                gap_written = True
            clock.set(recv)
            w.append(Trade(ts, recv, iid, price, size, side))
    return log


class FakePort:
    def __init__(self, fail=None):
        self.calls = []
        self.fail = fail

    async def __call__(self, host, port, symbol, start_ns, end_ns, *, use_zlib=True, **kw):
        self.calls.append((host, port, symbol, start_ns, end_ns, use_zlib))
        if self.fail:
            raise self.fail
        iid = {"ESZ6": ES, "NQZ6": NQ}[symbol]
        side_code = {1: 2, -1: 1, 0: 0}
        return [HistoricalTick(ts, price, size, side_code[side])
                for i, ts, price, size, side in market()
                if i == iid and start_ns // NS_PER_S * NS_PER_S <= ts <= -(-end_ns // NS_PER_S) * NS_PER_S]


def all_trades(log):
    return sorted((ev.instrument, ev.ts_event, ev.price, ev.size, ev.side)
                  for _, ev in log.read(DATE, kinds=[Trade]))


def test_backfill_fills_the_dark_interval_once_with_live_ids(tmp_path):
    log = write_live(tmp_path)
    port = FakePort()
    res = asyncio.run(backfill_day(str(tmp_path), DATE, historical="10.1.2.3:11098", fetch=port))
    # every print is now in the day exactly once (the burst's two identical prints included)
    assert all_trades(log) == sorted(market())
    assert res.gaps == 1 and res.added == 15 + 15 + 1 and res.segment
    assert {(c[0], c[1], c[2]) for c in port.calls} == {("10.1.2.3", 11098, "ESZ6"),
                                                         ("10.1.2.3", 11098, "NQZ6")}
    # the window runs from the last live trade before the gap to the first after it
    es = next(w for w in res.windows if w.symbol == "ESZ6")
    assert (es.start_ns, es.end_ns) == (T0 + 900 * MS, T0 + 2500 * MS)
    assert es.trades == 16 and es.historical == "10.1.2.3:11098" and es.source == SRC
    rows = [ev for _, ev in log.read(DATE, streams=STREAM)]
    insts = [ev for ev in rows if isinstance(ev, Instrument)]
    assert {(i.instrument, i.symbol, i.tick_size) for i in insts} == {(ES, "ESZ6", 0.25), (NQ, "NQZ6", 0.25)}
    assert all(ev.ts_recv == ev.ts_event for ev in rows if isinstance(ev, Trade))
    assert sorted((w.symbol, w.trades) for w in filled_windows(log, DATE)) == [("ESZ6", 16), ("NQZ6", 15)]

    again = asyncio.run(backfill_day(str(tmp_path), DATE, historical="10.1.2.3:11098", fetch=port))
    assert again.added == 0 and again.segment is None
    assert len([s for s in log.segments(DATE) if s.stream == STREAM]) == 1
    assert all_trades(log) == sorted(market())


def test_symbols_default_address_and_errors(tmp_path):
    write_live(tmp_path)
    port = FakePort()
    res = asyncio.run(backfill_day(str(tmp_path), DATE, symbols=["NQZ6"], fetch=port, dry_run=True))
    assert [c[:3] for c in port.calls] == [("127.0.0.1", 11098, "NQZ6")]  # the gap's host
    assert res.added == 15 and res.segment is None  # dry run: nothing written
    with pytest.raises(UsageError, match="no DTC instrument SPX"):
        asyncio.run(backfill_day(str(tmp_path), DATE, symbols=["SPX"], fetch=port))
    reject = HistoricalRejectedError("dtc historical 127.0.0.1:11098: ESZ6: request rejected: no")
    with pytest.raises(HistoricalRejectedError):
        asyncio.run(backfill_day(str(tmp_path), DATE, fetch=FakePort(fail=reject)))
    assert not [s for s in EventLog(tmp_path).segments(DATE) if s.stream == STREAM]  # all or nothing


def test_cli_reports_a_day_without_gaps_and_a_refused_port(tmp_path):
    log = EventLog(tmp_path)
    clock = ManualClock(T0)
    with log.writer("live", clock=clock) as w:
        w.append(Instrument(T0, T0, ES, "ESZ6", SRC))
        w.append(Trade(T0, T0, ES, 6000.0, 1.0, 1))
    res = CliRunner().invoke(cli, ["backfill", "--data-dir", str(tmp_path), "--date", DATE])
    assert res.exit_code == 0 and "no DTC gaps" in res.output
    write_live(tmp_path / "b")
    res = CliRunner().invoke(cli, ["backfill", "--data-dir", str(tmp_path / "b"), "--date", DATE,
                                   "--dtc-historical", "127.0.0.1:1", "--attempts", "1"])
    assert res.exit_code == 1
    assert res.output.startswith("mia: error: dtc historical 127.0.0.1:1: ") and "Traceback" not in res.output
    res = CliRunner().invoke(cli, ["backfill", "--data-dir", str(tmp_path / "b"), "--date", DATE,
                                   "--dtc-historical", "nowhere"])
    assert res.exit_code == 2 and "HOST:PORT" in res.output
