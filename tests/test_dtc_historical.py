"""DTC historical tick requests: the bytes (dtc.md §3.5), the sans-IO state machine fed at every
split, zlib, rejects, and the asyncio client against the simulator's historical port."""

import asyncio
import collections
import struct
import time
import zlib

import pytest

from mia.data.dtc import protocol as p
from mia.data.dtc.historical import (
    HistoricalDataError,
    HistoricalRejectedError,
    HistoricalTick,
    HistoricalTickRequest,
    fetch_ticks,
)
from mia.data.dtc.server import DtcSimulator
from mia.engine.clock import NS_PER_MS, NS_PER_S
from mia.engine.errors import RemoteProtocolError

T0 = 1_795_000_000 * NS_PER_S  # a whole second
# (t_ns, price, volume, AtBidOrAsk): ms-exact times, two identical prints in one burst
TICKS = [(T0 + 5 * NS_PER_MS, 6001.25, 1.0, 2), (T0 + 5 * NS_PER_MS, 6001.25, 1.0, 2),
         (T0 + 250 * NS_PER_MS, 6001.0, 3.0, 1), (T0 + NS_PER_S + 7 * NS_PER_MS, 6001.5, 12.0, 2),
         (T0 + 2 * NS_PER_S, 6002.0, 2.0, 0)]


def expected(start_ns, end_ns):
    return [HistoricalTick(t, price, vol, side) for t, price, vol, side in TICKS
            if start_ns <= t < end_ns]


# --- bytes ----------------------------------------------------------------------------------------


def test_request_is_encoded_byte_for_byte_as_dtc_md_lays_it_out():
    req = HistoricalTickRequest("ESZ6", T0 + 1, T0 + 2 * NS_PER_S + 1, exchange="CME",
                                request_id=7, use_zlib=True)
    want = bytearray(120)
    struct.pack_into("<HH", want, 0, 120, 800)  # Size, Type
    struct.pack_into("<i", want, 4, 7)  # RequestID
    want[8:12] = b"ESZ6"  # Symbol char[64]
    want[72:75] = b"CME"  # Exchange char[16]
    struct.pack_into("<i", want, 88, 0)  # RecordInterval: INTERVAL_TICK
    struct.pack_into("<q", want, 96, T0 // NS_PER_S)  # StartDateTime: the second holding start
    struct.pack_into("<q", want, 104, T0 // NS_PER_S + 3)  # EndDateTime: rounded up
    struct.pack_into("<I", want, 112, 0)  # MaxDaysToReturn
    want[116] = 1  # UseZLibCompression
    want[117] = 0  # RequestDividendAdjustedStockData
    struct.pack_into("<H", want, 118, 0)  # Integer_1
    assert p.encode_binary(req.request_message()) == bytes(want)


def test_logon_comes_first_and_the_request_only_after_logon_success():
    req = HistoricalTickRequest("ESZ6", T0, T0 + NS_PER_S, username="u", password="pw",
                                heartbeat_s=30)
    first = req.initiate()
    assert struct.unpack_from("<HH", first) == (284, p.LOGON_REQUEST) and len(first) == 284
    assert struct.unpack_from("<i", first, 144)[0] == 30  # HeartbeatIntervalInSeconds
    assert first[8:10] == b"u\0"[:2] and first[40:42] == b"pw"
    assert req.data_to_send() == b"" and req.state == "logon"
    req.receive_data(p.encode_binary(p.LogonResponse(result=p.LOGON_SUCCESS,
                                                     historical_price_data_supported=1)))
    out = req.data_to_send()
    assert struct.unpack_from("<HH", out) == (120, p.HISTORICAL_PRICE_DATA_REQUEST)
    assert req.state == "header"


# --- the state machine, fed at every split --------------------------------------------------------


def server_bytes(*, use_zlib: bool, rid: int = 1, ticks=TICKS, terminator: bool = False,
                 no_records: bool = False) -> bytes:
    out = p.encode_binary(p.LogonResponse(result=p.LOGON_SUCCESS, historical_price_data_supported=1,
                                          one_historical_price_data_request_per_connection=1))
    out += p.encode_binary(p.Heartbeat(current_date_time=T0 // NS_PER_S))
    out += p.encode_binary(p.HistoricalPriceDataResponseHeader(
        request_id=rid, record_interval=0, use_z_lib_compression=int(use_zlib),
        no_records_to_return=int(no_records)))
    if no_records:
        return out
    body = b""
    for i, (t, price, vol, side) in enumerate(ticks):
        final = i == len(ticks) - 1 and not terminator
        body += p.encode_binary(p.HistoricalPriceDataTickRecordResponse(
            request_id=rid, date_time=t / NS_PER_S, at_bid_or_ask=side, price=price, volume=vol,
            is_final_record=int(final)))
    if terminator:
        body += p.encode_binary(p.HistoricalPriceDataTickRecordResponse(request_id=rid,
                                                                        is_final_record=1))
    return out + (zlib.compress(body) if use_zlib else body)


def run_machine(chunks, start_ns=T0, end_ns=T0 + 3 * NS_PER_S):
    req = HistoricalTickRequest("ESZ6", start_ns, end_ns, where="127.0.0.1:11098")
    req.initiate()
    got = []
    for chunk in chunks:
        got += req.receive_data(chunk)
    return req, got


@pytest.mark.parametrize("use_zlib", [False, True])
def test_response_split_at_every_byte_boundary(use_zlib):
    data = server_bytes(use_zlib=use_zlib)
    if use_zlib:
        assert b"\x78\x9c" in data  # a zlib stream follows the header
    want = expected(T0, T0 + 3 * NS_PER_S)
    for i in range(len(data) + 1):
        req, got = run_machine([data[:i], data[i:]])
        assert req.done and got == want, i
        assert req.compressed is use_zlib
    req, got = run_machine([data[i:i + 1] for i in range(len(data))])  # one byte at a time
    assert req.done and got == want


def test_window_is_exact_and_trailing_bytes_after_the_final_record_are_ignored():
    data = server_bytes(use_zlib=False) + p.encode_binary(p.Heartbeat())
    req, got = run_machine([data], start_ns=T0 + 5 * NS_PER_MS, end_ns=T0 + 2 * NS_PER_S)
    assert got == expected(T0 + 5 * NS_PER_MS, T0 + 2 * NS_PER_S)
    assert len(got) == 4 and req.records == 5  # the 5th arrived but is outside [start, end)


@pytest.mark.parametrize("use_zlib", [False, True])
def test_an_empty_final_record_ends_the_answer_without_being_a_tick(use_zlib):
    req, got = run_machine([server_bytes(use_zlib=use_zlib, terminator=True)])
    assert req.done and got == expected(T0, T0 + 3 * NS_PER_S)


def test_no_records_to_return_is_done_with_nothing():
    req, got = run_machine([server_bytes(use_zlib=True, no_records=True)])
    assert req.done and got == [] and not req.compressed


def test_reject_is_one_clear_error_naming_host_port_and_symbol_without_secrets():
    req = HistoricalTickRequest("ESZ6", T0, T0 + NS_PER_S, password="hunter2", where="10.0.0.5:11098")
    req.initiate()
    req.receive_data(p.encode_binary(p.LogonResponse(result=p.LOGON_SUCCESS)))
    with pytest.raises(HistoricalRejectedError) as info:
        req.receive_data(p.encode_binary(p.HistoricalPriceDataReject(
            request_id=1, reject_text="no data for hunter2", reject_reason_code=2)))
    msg = str(info.value)
    assert "10.0.0.5:11098" in msg and "ESZ6" in msg and "rejected" in msg
    assert "hunter2" not in msg and not info.value.retryable


def test_retryable_reject_and_out_of_place_messages():
    req, _ = run_machine([p.encode_binary(p.LogonResponse(result=p.LOGON_SUCCESS))])
    with pytest.raises(HistoricalRejectedError) as info:
        req.receive_data(p.encode_binary(p.HistoricalPriceDataReject(
            request_id=1, reject_text="busy", reject_reason_code=1, retry_time_in_seconds=3)))
    assert info.value.retryable and info.value.retry_s == 3
    req, _ = run_machine([p.encode_binary(p.LogonResponse(result=p.LOGON_SUCCESS))])
    with pytest.raises(RemoteProtocolError, match="ESZ6"):
        req.receive_data(p.encode_binary(p.HistoricalPriceDataTickRecordResponse(request_id=1)))
    req, _ = run_machine([p.encode_binary(p.LogonResponse(result=p.LOGON_SUCCESS))])
    with pytest.raises(RemoteProtocolError, match="request 9"):
        req.receive_data(p.encode_binary(p.HistoricalPriceDataResponseHeader(request_id=9)))


def test_corrupt_zlib_stream_is_a_protocol_error():
    data = server_bytes(use_zlib=True)
    cut = data.index(b"\x78\x9c")
    with pytest.raises(RemoteProtocolError, match="zlib"):
        run_machine([data[:cut + 2] + b"\xff" * 40])


# --- the asyncio client against the simulator's historical port -----------------------------------


def sim_with_history(**kw) -> DtcSimulator:
    sim = DtcSimulator(**kw)
    sim.history["ESZ6"] = collections.deque(TICKS)
    return sim


@pytest.mark.parametrize("use_zlib", [True, False])
def test_client_gets_the_simulators_ticks_by_symbol_and_range(use_zlib):
    async def go():
        async with sim_with_history() as sim:
            port = sim.historical_port
            whole = await fetch_ticks("127.0.0.1", port, "ESZ6", T0, T0 + 3 * NS_PER_S,
                                      use_zlib=use_zlib)
            part = await fetch_ticks("127.0.0.1", port, "ESZ6", T0 + NS_PER_S, T0 + 2 * NS_PER_S,
                                     use_zlib=use_zlib)
            none = await fetch_ticks("127.0.0.1", port, "NQZ6", T0, T0 + NS_PER_S)
            return whole, part, none, sim.historical_requests

    whole, part, none, reqs = asyncio.run(go())
    assert whole == expected(T0, T0 + 3 * NS_PER_S)
    assert part == expected(T0 + NS_PER_S, T0 + 2 * NS_PER_S)
    assert none == []
    assert reqs[0] == {"symbol": "ESZ6", "start": T0 // NS_PER_S, "end": T0 // NS_PER_S + 3,
                       "interval": 0, "zlib": int(use_zlib)}


def test_client_reject_is_not_retried_unless_the_server_says_so():
    async def go():
        async with sim_with_history() as sim:
            port = sim.historical_port
            sim.reject_historical("symbol not permitted", code=2)
            with pytest.raises(HistoricalRejectedError) as hard:
                await fetch_ticks("127.0.0.1", port, "ESZ6", T0, T0 + NS_PER_S, attempts=3)
            n_hard = len(sim.historical_requests)
            sim.reject_historical("busy", code=1, retry_s=0)
            with pytest.raises(HistoricalDataError) as soft:
                await fetch_ticks("127.0.0.1", port, "ESZ6", T0, T0 + NS_PER_S, attempts=3,
                                  backoff_initial_s=0.01, backoff_max_s=0.02)
            n_soft = len(sim.historical_requests) - n_hard
            sim.reject_historical(None)
            ok = await fetch_ticks("127.0.0.1", port, "ESZ6", T0, T0 + NS_PER_S)
            return port, hard.value, n_hard, soft.value, n_soft, ok

    port, hard, n_hard, soft, n_soft, ok = asyncio.run(go())
    assert f"127.0.0.1:{port}" in str(hard) and "ESZ6" in str(hard) and "not permitted" in str(hard)
    assert n_hard == 1
    assert n_soft == 3 and "gave up after 3 attempts" in str(soft) and "busy" in str(soft)
    assert ok == expected(T0, T0 + NS_PER_S)


def test_client_times_out_and_gives_up_in_bounded_time_without_leaking_credentials():
    writers = []

    async def silent(reader, writer):
        writers.append(writer)  # accept, then say nothing

    async def go():
        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        t = time.monotonic()
        try:
            with pytest.raises(HistoricalDataError) as info:
                await fetch_ticks("127.0.0.1", port, "ESZ6", T0, T0 + NS_PER_S, attempts=2,
                                  idle_timeout_s=0.2, backoff_initial_s=0.01, backoff_max_s=0.02,
                                  username="trader", password="s3cret")
        finally:
            for w in writers:
                w.close()
            server.close()
            await server.wait_closed()
        elapsed = time.monotonic() - t
        async with sim_with_history(credentials=("trader", "right")) as sim:
            with pytest.raises(HistoricalDataError) as bad_logon:
                await fetch_ticks("127.0.0.1", sim.historical_port, "ESZ6", T0, T0 + NS_PER_S,
                                  attempts=2, backoff_initial_s=0.01, username="trader",
                                  password="s3cret")
            good = await fetch_ticks("127.0.0.1", sim.historical_port, "ESZ6", T0, T0 + NS_PER_S,
                                     username="trader", password="right")
        # nothing listens here any more: connection refused, retried, then one error
        with pytest.raises(HistoricalDataError) as refused:
            await fetch_ticks("127.0.0.1", port, "ESZ6", T0, T0 + NS_PER_S, attempts=2,
                              backoff_initial_s=0.01, password="s3cret")
        return port, info.value, elapsed, bad_logon.value, good, refused.value

    port, timeout, elapsed, bad_logon, good, refused = asyncio.run(go())
    assert elapsed < 3.0
    for err in (timeout, bad_logon, refused):
        assert "ESZ6" in str(err) and "s3cret" not in str(err) and "gave up after 2" in str(err)
    assert f"127.0.0.1:{port}" in str(timeout) and "nothing received" in str(timeout)
    assert "bad username or password" in str(bad_logon)
    assert good == expected(T0, T0 + NS_PER_S)
