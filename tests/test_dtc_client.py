"""The DTC client against the simulator over loopback (port 0, short heartbeats, small backoffs)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from mia.data.dtc import protocol as p
from mia.data.dtc.client import DtcClient
from mia.data.dtc.errors import LogonRejectedError
from mia.data.dtc.server import DtcSimulator
from mia.engine.clock import SystemClock
from mia.engine.errors import ConnectionLostError
from mia.engine.events import (
    BATCH_BEGIN,
    BATCH_END,
    BOOK_CLEAR,
    BOOK_DELETE,
    BOOK_SNAPSHOT,
    FEED_AVAILABLE,
    FEED_HEARTBEAT_TIMEOUT,
    FEED_SUBSCRIPTION_REJECTED,
    FEED_UNAVAILABLE,
    BookLevel,
    EventCodec,
    FeedStatus,
    Gap,
    Instrument,
    Quote,
    Trade,
)
from mia.engine.instruments import InstrumentRegistry

SYMBOLS = ["ESZ6", "NQZ6", "VXZ6"]
FAST = dict(heartbeat_interval_s=0.5, reconnect_initial_s=0.05, reconnect_max_s=0.2, connect_timeout_s=2.0)


def _state(bids: dict, asks: dict) -> tuple:
    return (tuple((px, *bids[px]) for px in sorted(bids, reverse=True)),
            tuple((px, *asks[px]) for px in sorted(asks)))


class Collector:
    def __init__(self) -> None:
        self.events: list = []
        self.books: dict[int, tuple[dict, dict]] = {}
        self.states: dict[int, list[list]] = {}
        self.seen_instruments: set[int] = set()
        self.undeclared: list = []

    def __call__(self, ev) -> None:
        self.events.append(ev)
        if isinstance(ev, Instrument):
            self.seen_instruments.add(ev.instrument)
        elif isinstance(ev, (Trade, Quote, BookLevel)) and ev.instrument not in self.seen_instruments:
            self.undeclared.append(ev)
        if isinstance(ev, BookLevel):
            self._book(ev)

    def _book(self, ev: BookLevel) -> None:
        bids, asks = self.books.setdefault(ev.instrument, ({}, {}))
        runs = self.states.setdefault(ev.instrument, [[]])
        if ev.action == BOOK_CLEAR:
            bids.clear(), asks.clear()
            runs.append([])
            return
        if ev.action == BOOK_SNAPSHOT and ev.flags & BATCH_BEGIN:
            bids.clear(), asks.clear()
        side = bids if ev.side == 1 else asks
        if ev.action == BOOK_DELETE:
            del side[ev.price]
        else:
            side[ev.price] = (ev.size, ev.orders)
        if ev.flags & BATCH_END:
            runs[-1].append(_state(bids, asks))

    def of(self, kind) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    def status(self, code: int) -> list[FeedStatus]:
        return [e for e in self.events if isinstance(e, FeedStatus) and e.status == code]


async def wait_for(pred, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def make_client(port: int, symbols, collector, registry=None, **kw) -> DtcClient:
    opts = dict(FAST)
    opts.update(kw)
    return DtcClient("127.0.0.1", port, symbols, emit=collector, clock=SystemClock(),
                     registry=registry or InstrumentRegistry(), **opts)


async def run_for(client: DtcClient, until, timeout: float = 10.0) -> None:
    task = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(asyncio.shield(client.logged_on), 5)
        await wait_for(until, timeout)
    finally:
        await client.stop()
        await asyncio.wait_for(task, 5)


def assert_books_match(col: Collector, client: DtcClient, sim: DtcSimulator, conn_index: int = 0,
                       run_index: int = 0, min_batches: int = 50) -> None:
    record = sim.records[conn_index]
    for iid, symbol in client.subscribed.items():
        sent = record.books[symbol]
        got = col.states[iid][run_index]
        assert len(got) >= min_batches, (symbol, len(got))
        # every batch the client completed equals the simulator's book after that batch
        assert got == sent[: len(got)], symbol


def test_es_nq_vix_binary_books_trades_and_instruments() -> None:
    async def main() -> None:
        async with DtcSimulator(seed=7, rate=6000, heartbeat_s=0.2, record_books=True) as sim:
            col = Collector()
            client = make_client(sim.port, SYMBOLS, col)
            await run_for(client, lambda: len(col.of(Trade)) > 1500)
            assert col.undeclared == []
            insts = {e.symbol: e for e in col.of(Instrument)}
            assert insts["ESZ6"].tick_size == 0.25 and insts["ESZ6"].point_value == 50.0
            assert insts["VXZ6"].tick_size == 0.05 and insts["VXZ6"].point_value == 1000.0
            assert_books_match(col, client, sim)
            # no trade lost or altered: the client's prints are a prefix of what was sent
            rec = sim.records[0]
            for iid, symbol in client.subscribed.items():
                got = [(t.price, t.size, t.side) for t in col.of(Trade) if t.instrument == iid]
                sent = [(px, sz, 1 if side == p.AT_ASK else -1) for px, sz, side in rec.trades[symbol]]
                assert got == sent[: len(got)] and len(got) > 100
            # buyers lift the ask, sellers hit the bid: the aggressor side matches the last BBO
            quotes: dict[int, Quote] = {}
            for ev in col.events:
                if isinstance(ev, Quote):
                    quotes[ev.instrument] = ev
                elif isinstance(ev, Trade) and ev.instrument in quotes:
                    q = quotes[ev.instrument]
                    assert ev.price >= q.ask if ev.side == 1 else ev.price <= q.bid
            assert all(e.ts_event > 0 and e.ts_recv > 0 for e in col.events)

    asyncio.run(main())


@pytest.mark.parametrize("encoding", ["json", "compact_json"])
def test_json_encodings_end_to_end(encoding: str) -> None:
    async def main() -> None:
        async with DtcSimulator(seed=3, rate=3000, heartbeat_s=0.2, record_books=True) as sim:
            col = Collector()
            client = make_client(sim.port, SYMBOLS, col, encoding=encoding)
            await run_for(client, lambda: len(col.of(Trade)) > 300)
            assert sim.records[0].encoding == p.ENCODING_BY_NAME[encoding]
            assert col.undeclared == []
            assert_books_match(col, client, sim, min_batches=20)

    asyncio.run(main())


def test_dropped_link_reconnects_resubscribes_with_same_ids_and_rebuilds_book() -> None:
    async def main() -> None:
        async with DtcSimulator(seed=5, rate=3000, heartbeat_s=0.2, record_books=True) as sim:
            col = Collector()
            registry = InstrumentRegistry()
            client = make_client(sim.port, SYMBOLS, col, registry=registry)
            task = asyncio.create_task(client.run())
            await asyncio.wait_for(asyncio.shield(client.logged_on), 5)
            await wait_for(lambda: len(col.of(BookLevel)) > 500)
            sim.drop_links()
            await wait_for(lambda: col.of(Gap) and len(col.of(BookLevel)) > 2000)
            await client.stop()
            await asyncio.wait_for(task, 5)
            gap = col.of(Gap)[0]
            assert gap.start_ns <= gap.end_ns and "connection" in gap.reason
            clears = [e for e in col.of(BookLevel) if e.action == BOOK_CLEAR]
            assert sorted(e.instrument for e in clears) == sorted(registry.known().values())
            # the clears come before the new snapshot and the gap after the resubscription
            i_gap = col.events.index(gap)
            assert all(col.events.index(c) < i_gap for c in clears)
            assert client.reconnects == 1 and len(sim.records) == 2
            # the second connection used the same SymbolIDs and the book was rebuilt exactly
            assert_books_match(col, client, sim, conn_index=1, run_index=1, min_batches=10)

    asyncio.run(main())


def test_stalled_heartbeats_detected_within_twice_the_interval() -> None:
    async def main() -> None:
        async with DtcSimulator(seed=1, rate=2000, heartbeat_s=0.1) as sim:
            col = Collector()
            client = make_client(sim.port, SYMBOLS[:1], col, heartbeat_interval_s=0.4,
                                 connect_timeout_s=0.5)
            task = asyncio.create_task(client.run())
            await asyncio.wait_for(asyncio.shield(client.logged_on), 5)
            await wait_for(lambda: len(col.of(Trade)) > 20)
            t0 = time.monotonic()
            sim.stall_heartbeats(2.0)
            await wait_for(lambda: col.status(FEED_HEARTBEAT_TIMEOUT), 3)
            detected = time.monotonic() - t0
            await wait_for(lambda: col.of(Gap), 5)  # and it came back after the stall
            await client.stop()
            await asyncio.wait_for(task, 5)
            # silence of 2 x 0.4 s, plus the watchdog's quarter-interval tick and some slack
            assert detected <= 2 * 0.4 + 0.1 + 0.25
            assert "heartbeat" in col.of(Gap)[0].reason

    asyncio.run(main())


def test_rejected_symbol_is_reported_and_others_continue() -> None:
    async def main() -> None:
        async with DtcSimulator(seed=2, rate=3000, heartbeat_s=0.2) as sim:
            sim.reject_symbols.add("NQZ6")
            col = Collector()
            client = make_client(sim.port, SYMBOLS + ["ZZZ9"], col)
            await run_for(client, lambda: {t.instrument for t in col.of(Trade)} >= {1, 3}
                          and len(col.of(Trade)) > 200)
            rejected = col.status(FEED_SUBSCRIPTION_REJECTED)
            assert {e.instrument for e in rejected} == {2, 4}
            assert any("not permitted" in e.detail for e in rejected)
            assert any("unknown symbol ZZZ9" in e.detail for e in rejected)
            assert set(client.subscribed.values()) == {"ESZ6", "VXZ6"}
            assert not [t for t in col.of(Trade) if t.instrument in (2, 4)]

    asyncio.run(main())


def test_two_clients_on_two_simulators_at_once() -> None:
    async def main() -> None:
        async with DtcSimulator(seed=1, rate=2000, heartbeat_s=0.2) as es_sim, \
                DtcSimulator(seed=1, rate=2000, heartbeat_s=0.2) as nq_sim:
            registry = InstrumentRegistry()
            es_col, nq_col = Collector(), Collector()
            es = make_client(es_sim.port, ["ESZ6"], es_col, registry=registry)
            nq = make_client(nq_sim.port, ["NQZ6"], nq_col, registry=registry)
            tasks = [asyncio.create_task(c.run()) for c in (es, nq)]
            await asyncio.wait_for(asyncio.gather(asyncio.shield(es.logged_on),
                                                  asyncio.shield(nq.logged_on)), 5)
            await wait_for(lambda: len(es_col.of(Trade)) > 100 and len(nq_col.of(Trade)) > 100)
            await asyncio.gather(es.stop(), nq.stop())
            await asyncio.wait_for(asyncio.gather(*tasks), 5)
            assert {t.instrument for t in es_col.of(Trade)} == {registry.id_for("ESZ6")}
            assert {t.instrument for t in nq_col.of(Trade)} == {registry.id_for("NQZ6")}
            assert es.source != nq.source and es_col.of(Trade)[0].price < nq_col.of(Trade)[0].price

    asyncio.run(main())


def test_credentials_never_in_events_logs_or_errors(monkeypatch, caplog) -> None:
    user, secret = "trader-joe", "hunter2-secret"
    monkeypatch.setenv("MIA_DTC_USERNAME", user)
    monkeypatch.setenv("MIA_DTC_PASSWORD", secret)
    caplog.set_level(logging.DEBUG)

    async def main() -> None:
        async with DtcSimulator(seed=1, rate=500, heartbeat_s=0.2, credentials=(user, secret)) as sim:
            col = Collector()
            client = make_client(sim.port, ["ESZ6"], col)  # credentials from the environment
            await run_for(client, lambda: len(col.of(Trade)) > 5)
            assert secret not in repr(client)
            sim.reject_logons(p.LOGON_ERROR_NO_RECONNECT, f"account {user} / {secret} suspended")
            col2 = Collector()
            client2 = make_client(sim.port, ["ESZ6"], col2)
            with pytest.raises(LogonRejectedError) as info:
                await asyncio.wait_for(client2.run(), 5)
            assert info.value.reconnect is False
            assert secret not in str(info.value) and user not in str(info.value)
            codec = EventCodec()
            for ev in col.events + col2.events:
                blob = codec.encode(ev)
                assert secret.encode() not in blob and user.encode() not in blob

    asyncio.run(main())
    assert secret not in caplog.text and user not in caplog.text


def test_wrong_password_retries_then_gives_up_after_max_attempts() -> None:
    async def main() -> None:
        async with DtcSimulator(seed=1, rate=100, credentials=("a", "b")) as sim:
            col = Collector()
            client = make_client(sim.port, ["ESZ6"], col, username="a", password="wrong", max_attempts=3)
            with pytest.raises(ConnectionLostError, match="gave up after 3 attempts"):
                await asyncio.wait_for(client.run(), 10)
            assert len(sim.records) == 3

    asyncio.run(main())


def test_logon_redirect_to_reconnect_address() -> None:
    async def main() -> None:
        async with DtcSimulator(seed=1, rate=1000, heartbeat_s=0.2) as target, \
                DtcSimulator(seed=1, rate=100) as front:
            front.reject_logons(p.LOGON_RECONNECT_NEW_ADDRESS, "go there", f"127.0.0.1:{target.port}")
            col = Collector()
            client = make_client(front.port, ["ESZ6"], col)
            await run_for(client, lambda: len(col.of(Trade)) > 10)
            assert len(target.records) == 1 and len(front.records) == 1

    asyncio.run(main())


def test_feed_unavailable_then_available_resubscribes_with_gap() -> None:
    async def main() -> None:
        async with DtcSimulator(seed=4, rate=2000, heartbeat_s=0.2, record_books=True) as sim:
            col = Collector()
            client = make_client(sim.port, ["ESZ6"], col)
            task = asyncio.create_task(client.run())
            await asyncio.wait_for(asyncio.shield(client.logged_on), 5)
            await wait_for(lambda: len(col.of(Trade)) > 20)
            sim.set_feed_available(False)
            await wait_for(lambda: col.status(FEED_UNAVAILABLE))
            n_trades = len(col.of(Trade))
            sim.set_feed_available(True)
            await wait_for(lambda: col.status(FEED_AVAILABLE) and len(col.of(Trade)) > n_trades + 20)
            await client.stop()
            await asyncio.wait_for(task, 5)
            (gap,) = col.of(Gap)
            assert gap.reason == "feed unavailable"
            assert [e for e in col.of(BookLevel) if e.action == BOOK_CLEAR]

    asyncio.run(main())


@pytest.mark.parametrize("fault", ["send_garbage", "send_oversized"])
def test_garbage_from_server_reconnects(fault: str) -> None:
    async def main() -> None:
        async with DtcSimulator(seed=4, rate=2000, heartbeat_s=0.2) as sim:
            col = Collector()
            client = make_client(sim.port, ["ESZ6"], col)
            task = asyncio.create_task(client.run())
            await asyncio.wait_for(asyncio.shield(client.logged_on), 5)
            await wait_for(lambda: len(col.of(Trade)) > 10)
            getattr(sim, fault)()
            await wait_for(lambda: col.of(Gap))
            await client.stop()
            await asyncio.wait_for(task, 5)
            assert "protocol error" in col.of(Gap)[0].reason

    asyncio.run(main())


def test_connection_refused_gives_up_after_max_attempts() -> None:
    async def main() -> None:
        async with DtcSimulator() as sim:
            port = sim.port
        col = Collector()
        client = make_client(port, ["ESZ6"], col, max_attempts=2)
        with pytest.raises(ConnectionLostError, match=f"127.0.0.1:{port}"):
            await asyncio.wait_for(client.run(), 5)
        with pytest.raises(ConnectionLostError):
            await client.logged_on

    asyncio.run(main())
