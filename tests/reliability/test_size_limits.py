"""A hostile peer or file cannot make mia allocate what it claims: a DTC Size of 65535 with
garbage, a JSON DTC stream with no terminator, a Polygon body of 100 MB (declared, and streamed
without a length), a log frame header claiming 4 GB. Each is rejected; tracemalloc's peak
shows the claimed size was never allocated."""

from __future__ import annotations

import asyncio
import struct
import tracemalloc
import zlib

import pytest
from reliability_kit import record_figures

from mia.data.dtc import protocol as p
from mia.data.polygon.client import MAX_BODY_BYTES, PolygonClient, ResponseTooLargeError
from mia.engine.clock import NS_PER_DAY, ManualClock
from mia.engine.clock import utc_day as day_of
from mia.engine.errors import LogCorruptError, RemoteProtocolError
from mia.engine.events import Trade
from mia.engine.log import FRAME_FIELDS, FRAME_MAGIC, EventLog

MB = 1 << 20
HUNDRED_MB = 100 * MB


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_dtc_size_65535_and_unterminated_json_rejected_without_allocating():
    def binary():
        codec = p.DtcCodec(role="client")
        with pytest.raises(RemoteProtocolError, match="65535"):
            codec.feed(struct.pack("<HH", 65535, 3) + bytes(200))
        assert codec.buffered < 65535

    def json_stream():
        codec = p.DtcCodec(role="client", encoding=p.JSON_ENCODING)
        chunk = b'{"Type":3,"x":"' + b"a" * 4080
        with pytest.raises(RemoteProtocolError):
            for _ in range(HUNDRED_MB // len(chunk)):  # raises long before 100 MB
                codec.feed(chunk)

    peak_bin = _peak(binary)
    peak_json = _peak(json_stream)
    assert peak_bin < 64 * 1024
    assert peak_json < 4 * p.DEFAULT_MAX_JSON_SIZE
    record_figures("limits_dtc", faults="Size=65535 garbage; unterminated JSON",
                   peak_bytes_binary=peak_bin, peak_bytes_json=peak_json)


async def _hostile_http(declared: bool, total: int):
    """An HTTP server that answers 200 with `total` bytes (Content-Length or chunked)."""
    chunk = b"0" * 65536

    async def handle(reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")
            head = [b"HTTP/1.1 200 OK", b"Content-Type: application/json"]
            head.append(b"Content-Length: %d" % total if declared else b"Transfer-Encoding: chunked")
            writer.write(b"\r\n".join(head) + b"\r\n\r\n")
            sent = 0
            while sent < total:
                writer.write(chunk if declared else b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                await writer.drain()  # no buffering here: the client's reading paces us
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_polygon_100mb_body_rejected_without_allocating(declared):
    # declared: the default 32 MB cap refuses on the header alone; streamed: a 2 MB cap holds
    cap = MAX_BODY_BYTES if declared else 2 * MB

    async def go() -> int:
        server = await _hostile_http(declared, HUNDRED_MB)
        port = server.sockets[0].getsockname()[1]
        try:
            async with PolygonClient(f"http://127.0.0.1:{port}", api_key="k" * 32, plan="business",
                                     max_retries=0, max_body_bytes=cap, timeout_s=30) as client:
                tracemalloc.start()
                try:
                    with pytest.raises(ResponseTooLargeError):
                        await client.fetch_chain("SPX", strike_window=None)
                    return tracemalloc.get_traced_memory()[1]
                finally:
                    tracemalloc.stop()
        finally:
            server.close()
            await server.wait_closed()

    peak = asyncio.run(go())
    assert peak < (4 * MB if declared else cap + 4 * MB), peak
    record_figures(f"limits_polygon_{'declared' if declared else 'chunked'}",
                   faults="100 MB body", max_body_bytes=cap, peak_bytes=peak)


def test_log_frame_header_claiming_4gb_rejected_without_allocating(tmp_path):
    t0 = 19_676 * NS_PER_DAY
    log = EventLog(tmp_path)
    with log.writer(clock=ManualClock(t0), fsync="never") as w:
        for i in range(100):
            w.append(Trade(t0 + i, t0 + i, 1, 100.0 + i, 1.0, 1))
        path = w.path
    # a forged frame whose header is self-consistent (its CRC is right) but claims 4 GB
    fields = FRAME_FIELDS.pack(FRAME_MAGIC, 0xFFFF_FFF0, 0xFFFF_FFF0, 1, 1000, t0, t0)
    head = fields + struct.pack("<I", 0)
    head += struct.pack("<I", zlib.crc32(head))
    with open(path, "ab") as f:
        f.write(head + bytes(4096))
    date = day_of(t0)

    def check():
        report = log.verify(date)
        damage = report.bad_frames + report.torn_tails
        assert len(damage) == 1 and "out of range" in damage[0].reason
        assert sum(1 for _ in log.read(date)) == 102  # RecordingStarted + 100 + RecordingEnded
        with pytest.raises(LogCorruptError):
            list(log.read(date, strict=True))

    peak = _peak(check)
    assert peak < 16 * MB, peak
    record_figures("limits_log_frame", faults="frame header claiming 4 GB", peak_bytes=peak)
