"""The segment and frame byte format (docs/log-format.md), read and written in one place.

A segment is a header (magic, format version, schema version, msgpack metadata and its CRC)
then frames. A frame is a 48-byte header (magic, lengths, event count, first seq, ts_recv span,
a CRC over header fields and payload, a CRC over the header) and a zstd payload: in format 1 one
msgpack array of events, in format 2 per-kind columns (frame2.py). Readers read both; the
segment header says which a segment holds. Everything that opens a segment goes through `open_segment` /
`SegmentFile`: header read and checked, then frames scanned from just after it.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import msgspec
import numpy as np
import zstandard

from .. import platform as plat
from ..columns import ColumnBatch
from ..errors import LogFormatError
from ..events import SCHEMA_VERSION, UPCASTS, Event, EventCodec
from ..storage import RemotePath

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # what writers write by default
FORMAT_VERSIONS = (1, 2)  # what readers read
SEGMENT_MAGIC = b"\x89MIALOG\n"  # 8 bytes; the high byte and newline catch text-mode mangling
FRAME_MAGIC = b"MIAF"
SEGMENT_SUFFIX = ".mseg"
# magic, format version, schema version, metadata length, metadata CRC32
SEGMENT_HEADER = struct.Struct("<8sHHII")
# magic, compressed length, uncompressed length, event count, first seq, min ts_recv,
# max ts_recv | CRC32 over the preceding fields and the payload | CRC32 over the 44 bytes before it
FRAME_FIELDS = struct.Struct("<4sIIIQqq")
FRAME_HEADER_SIZE = FRAME_FIELDS.size + 8  # 48
_PAYLOAD_CRC_AT = FRAME_FIELDS.size  # 40
_HEADER_CRC_AT = _PAYLOAD_CRC_AT + 4  # 44
_CRC = struct.Struct("<I")
MAX_FRAME_BYTES = 1 << 28  # sanity bound for a header's lengths
MAX_METADATA_BYTES = 1 << 20
ZSTD_LEVEL = 3
READ_BUFFER = 1 << 20  # a segment is read front to back: one read() fetches ~100 frames

STREAM_RE = re.compile(r"^[a-z0-9_]+$")
RECORDING_ID_RE = re.compile(r"^[A-Za-z0-9_.]+$")

# msgspec raises UnicodeDecodeError, not DecodeError, for a string that is not UTF-8
UNDECODABLE = (msgspec.DecodeError, UnicodeDecodeError)
crc32 = zlib.crc32


# --- segment files: names, headers, locks ------------------------------------------------------


@dataclass(frozen=True)
class SegmentInfo:
    """One segment file, from its name and header (cheap: no frame is read)."""

    path: Path  # or a RemotePath (engine.storage) when the log is read from a URL
    date: str
    stream: str
    recording_id: str
    created_ns: int
    size: int  # bytes on disk
    format_version: int
    schema_version: int
    metadata: dict


def segment_name(created_ns: int, recording_id: str, stream: str) -> str:
    return f"{created_ns:019d}-{recording_id}-{stream}{SEGMENT_SUFFIX}"


def parse_segment_name(path: Path) -> tuple[int, str, str] | None:
    """(created_ns, recording_id, stream) from a segment file name, None when not one."""
    if path.suffix != SEGMENT_SUFFIX:
        return None
    stem = path.stem
    head, sep, rest = stem.partition("-")
    if not sep or not head.isdigit():
        return None
    rec, sep, stream = rest.rpartition("-")
    if not sep or not rec or not STREAM_RE.match(stream):
        return None
    return int(head), rec, stream


def writer_alive(path: Path) -> bool:
    """True when a writer holds the segment's lock (it is being written)."""
    if isinstance(path, RemotePath):
        return False  # object storage holds closed segments only (`mia push`)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        return plat.probe_locked(fd)
    finally:
        os.close(fd)


def read_segment_header(f: BinaryIO, path: Path) -> tuple[int, int, dict, int]:
    """(format version, schema version, metadata, header length) or LogFormatError."""
    f.seek(0)
    raw = f.read(SEGMENT_HEADER.size)
    if len(raw) < SEGMENT_HEADER.size or raw[:8] != SEGMENT_MAGIC:
        raise LogFormatError(str(path), "not a mia log segment (bad magic)")
    _, fmt, schema, meta_len, meta_crc = SEGMENT_HEADER.unpack(raw)
    if fmt > FORMAT_VERSION or fmt not in FORMAT_VERSIONS:
        raise LogFormatError(
            str(path), f"written by a newer mia (format version {fmt}, this mia reads up to "
            f"{FORMAT_VERSION}); upgrade mia")
    if schema > SCHEMA_VERSION:
        raise LogFormatError(
            str(path), f"written with a newer event schema (version {schema}, this mia knows "
            f"up to {SCHEMA_VERSION}); upgrade mia")
    if meta_len > MAX_METADATA_BYTES:
        raise LogFormatError(str(path), f"segment header metadata length {meta_len} is insane")
    meta_raw = f.read(meta_len)
    if len(meta_raw) < meta_len or crc32(meta_raw) != meta_crc:
        raise LogFormatError(str(path), "segment header metadata is damaged (CRC mismatch)")
    try:
        meta = msgspec.msgpack.decode(meta_raw)
    except UNDECODABLE as exc:
        raise LogFormatError(str(path), f"segment header metadata does not decode: {exc}") from None
    if not isinstance(meta, dict):
        raise LogFormatError(str(path), "segment header metadata is not a map")
    return fmt, schema, meta, SEGMENT_HEADER.size + meta_len


def encode_segment_header(meta: dict, format_version: int = FORMAT_VERSION) -> bytes:
    meta_raw = msgspec.msgpack.encode(meta)
    return SEGMENT_HEADER.pack(SEGMENT_MAGIC, format_version, SCHEMA_VERSION, len(meta_raw),
                               crc32(meta_raw)) + meta_raw


# --- frames ------------------------------------------------------------------------------------


def frame_payload(encoded: Sequence[bytes]) -> bytes:
    """One frame's uncompressed payload from its events' encodings (`EventCodec.encode` each):
    the msgpack array header msgspec writes for that many elements, then the elements. Equal,
    byte for byte, to `EventCodec.encode_many` of the events."""
    n = len(encoded)
    if n < 16:
        head = bytes((0x90 | n,))
    elif n < 1 << 16:
        head = b"\xdc" + n.to_bytes(2, "big")
    else:
        head = b"\xdd" + n.to_bytes(4, "big")
    return head + b"".join(encoded)


def encode_frame_header(compressed: bytes, ulen: int, count: int, first_seq: int, ts_lo: int,
                        ts_hi: int) -> bytes:
    fields = FRAME_FIELDS.pack(FRAME_MAGIC, len(compressed), ulen, count, first_seq, ts_lo, ts_hi)
    head = fields + _CRC.pack(crc32(compressed, crc32(fields)))
    return head + _CRC.pack(crc32(head))


def parse_frame_header(raw: bytes) -> tuple | str:
    """The header's fields (clen, ulen, count, first_seq, ts_lo, ts_hi, crc) or a reason."""
    if raw[:4] != FRAME_MAGIC:
        return "bad frame magic"
    (hcrc,) = _CRC.unpack_from(raw, _HEADER_CRC_AT)
    if crc32(raw[:_HEADER_CRC_AT]) != hcrc:
        return "frame header CRC mismatch"
    _, clen, ulen, count, first_seq, ts_lo, ts_hi = FRAME_FIELDS.unpack_from(raw)
    (crc,) = _CRC.unpack_from(raw, _PAYLOAD_CRC_AT)
    if not (0 < clen <= MAX_FRAME_BYTES and 0 < ulen <= MAX_FRAME_BYTES and 0 < count <= ulen
            and ts_lo <= ts_hi):
        return "frame header fields out of range"
    return clen, ulen, count, first_seq, ts_lo, ts_hi, crc


def payload_crc_ok(raw_header: bytes, payload: bytes, crc: int) -> bool:
    """The frame CRC: over the header's fields, then the compressed payload."""
    return crc32(payload, crc32(raw_header[:_PAYLOAD_CRC_AT])) == crc


@dataclass
class Frame:
    offset: int
    count: int
    first_seq: int
    ts_lo: int
    ts_hi: int
    clen: int
    ulen: int
    payload: bytes | None  # compressed; None when the frame was skipped by the time window

    @property
    def end(self) -> int:
        return self.offset + FRAME_HEADER_SIZE + self.clen


@dataclass
class Damage:
    offset: int
    length: int
    reason: str
    incomplete: bool  # the file ends inside a frame: a torn write (or a write in progress)
    at_end: bool  # nothing valid follows until the end of the file


def find_next_frame(f: BinaryIO, start: int, size: int) -> int | None:
    """Offset of the next whole, CRC-valid frame at or after `start`, None if there is none."""
    chunk = 1 << 20
    pos = start
    while pos < size:
        f.seek(pos)
        data = f.read(min(chunk + 3, size - pos))
        i = data.find(FRAME_MAGIC)
        while i >= 0:
            q = pos + i
            f.seek(q)
            raw = f.read(FRAME_HEADER_SIZE)
            if len(raw) == FRAME_HEADER_SIZE:
                h = parse_frame_header(raw)
                if not isinstance(h, str) and q + FRAME_HEADER_SIZE + h[0] <= size:
                    if payload_crc_ok(raw, f.read(h[0]), h[6]):
                        return q
            i = data.find(FRAME_MAGIC, i + 1)
        pos += chunk
    return None


def scan_frames(f: BinaryIO, path: Path, pos: int, size: int, lo: int | None = None,
                hi: int | None = None) -> Iterator[Frame | Damage]:
    """Frames (CRC-checked) and damage of a segment from `pos` to `size`.

    Frames whose ts_recv span lies outside [lo, hi) are yielded with payload None, unread.
    """
    f.seek(pos)
    while pos < size:
        raw = f.read(FRAME_HEADER_SIZE)
        if len(raw) < FRAME_HEADER_SIZE:
            if raw[:4] == FRAME_MAGIC[: len(raw)]:
                yield Damage(pos, size - pos, f"torn tail: {size - pos} bytes, less than a "
                             f"frame header", True, True)
                return
            h = "bad frame magic"
        else:
            h = parse_frame_header(raw)
        if not isinstance(h, str):
            clen, ulen, count, first_seq, ts_lo, ts_hi, crc = h
            end = pos + FRAME_HEADER_SIZE + clen
            if end > size:
                yield Damage(pos, size - pos, f"torn tail: frame of {clen} bytes cut after "
                             f"{size - pos - FRAME_HEADER_SIZE}", True, True)
                return
            if (lo is not None and ts_hi < lo) or (hi is not None and ts_lo >= hi):
                f.seek(end)
                yield Frame(pos, count, first_seq, ts_lo, ts_hi, clen, ulen, None)
                pos = end
                continue
            payload = f.read(clen)
            if payload_crc_ok(raw, payload, crc):
                yield Frame(pos, count, first_seq, ts_lo, ts_hi, clen, ulen, payload)
                pos = end
                continue
            h = "frame CRC mismatch"
        nxt = find_next_frame(f, pos + 1, size)
        if nxt is None:
            yield Damage(pos, size - pos, h, False, True)
            return
        yield Damage(pos, nxt - pos, h, False, False)
        pos = nxt
        f.seek(pos)


@dataclass
class FrameRun:
    """Whole, valid frames back to back (`SegmentFile.scan_run`): their header fields as
    arrays, offsets into `chunk` (which starts at file offset `pos`)."""

    pos: int
    chunk: bytes
    offset: np.ndarray  # of each frame's header in chunk
    count: np.ndarray
    first_seq: np.ndarray
    ts_lo: np.ndarray
    ts_hi: np.ndarray
    clen: np.ndarray
    ulen: np.ndarray

    def __len__(self) -> int:
        return int(self.count.shape[0])

    @property
    def end(self) -> int:
        return self.pos + int(self.offset[-1]) + FRAME_HEADER_SIZE + int(self.clen[-1])

    def payload(self, i: int) -> memoryview:
        at = int(self.offset[i]) + FRAME_HEADER_SIZE
        return memoryview(self.chunk)[at:at + int(self.clen[i])]

    def frame(self, i: int) -> Frame:
        return Frame(self.pos + int(self.offset[i]), int(self.count[i]), int(self.first_seq[i]),
                     int(self.ts_lo[i]), int(self.ts_hi[i]), int(self.clen[i]),
                     int(self.ulen[i]), bytes(self.payload(i)))

    def part(self, a: int, b: int) -> FrameRun:
        return FrameRun(self.pos, self.chunk, self.offset[a:b], self.count[a:b],
                        self.first_seq[a:b], self.ts_lo[a:b], self.ts_hi[a:b], self.clen[a:b],
                        self.ulen[a:b])


RUN_CHUNK = 4 << 20  # bytes a run reads at most


class SegmentFile:
    """An open segment with its header read and checked: how every part of the log opens one."""

    def __init__(self, f: BinaryIO, path: Path) -> None:
        self.f = f
        self.path = path
        (self.format_version, self.schema_version, self.metadata,
         self.data_start) = read_segment_header(f, path)

    def size(self) -> int:
        """Bytes on disk now (a segment being written grows)."""
        return os.fstat(self.f.fileno()).st_size

    def scan(self, pos: int | None = None, size: int | None = None, lo: int | None = None,
             hi: int | None = None) -> Iterator[Frame | Damage]:
        """Frames and damage from `pos` (default: the first frame) to `size` (default: now)."""
        return scan_frames(self.f, self.path, self.data_start if pos is None else pos,
                           self.size() if size is None else size, lo, hi)

    def scan_run(self, pos: int, size: int) -> FrameRun | None:
        """The whole, valid frames from `pos` within the next RUN_CHUNK bytes (before `size`),
        checked in one kernel call like `scan` checks them; None when the frame at `pos` is not
        one (or does not fit the chunk): `scan` from there meets and reports it."""
        from .scan_kernels import scan_chunk  # numba: on first use

        self.f.seek(pos)
        chunk = self.f.read(min(RUN_CHUNK, size - pos))
        m = len(chunk) // FRAME_HEADER_SIZE + 1
        arrays = [np.empty(m, np.int64) for _ in range(7)]
        k = scan_chunk(np.frombuffer(chunk, np.uint8), *arrays)
        if not k:
            return None
        return FrameRun(pos, chunk, *(a[:k] for a in arrays))

    def load(self, frame: Frame) -> Frame | None:
        """`frame` with its payload read (a scan may have skipped it); None on a CRC mismatch."""
        self.f.seek(frame.offset)
        raw = self.f.read(FRAME_HEADER_SIZE + frame.clen)
        payload = raw[FRAME_HEADER_SIZE:]
        if not payload_crc_ok(raw, payload, _CRC.unpack_from(raw, _PAYLOAD_CRC_AT)[0]):
            return None
        return Frame(frame.offset, frame.count, frame.first_seq, frame.ts_lo, frame.ts_hi,
                     frame.clen, frame.ulen, payload)

    def decoder(self) -> FrameDecoder:
        return FrameDecoder(self.schema_version, self.format_version)


@contextmanager
def open_segment(path: Path) -> Iterator[SegmentFile]:
    if isinstance(path, RemotePath):
        from .remote import open_remote

        seg = open_remote(path)
        try:
            yield seg
        finally:
            seg.close()
        return
    with open(path, "rb", buffering=READ_BUFFER) as f:
        yield SegmentFile(f, path)


# --- decoding frames ---------------------------------------------------------------------------


class BadFrame(Exception):
    """A frame whose CRC passed but whose content does not decode."""


MODE_MSGPACK = 0  # first byte of a format-2 payload held as msgpack (frame2.MODE_MSGPACK)


def _frame2():
    from . import frame2  # numba: imported (and compiled) on first use, like fastdecode

    return frame2


class FrameDecoder:
    """Decompress and decode frames of one segment (its schema and format version); one per
    reader (not thread-safe)."""

    def __init__(self, schema_version: int, format_version: int = 1) -> None:
        self._dctx = zstandard.ZstdDecompressor()
        self._codec = EventCodec()
        self._schema = schema_version
        self._format = format_version
        self._last: tuple = (self, b"")  # (compressed payload, its payload()); self: none yet

    def payload(self, frame: Frame) -> bytes:
        """The frame's uncompressed payload (format 1: upcast to the current schema). The last
        frame's is kept: a filtered read takes a frame's index, then its events."""
        if frame.payload is self._last[0]:
            return self._last[1]
        data = self._payload(frame)
        self._last = (frame.payload, data)
        return data

    def _payload(self, frame: Frame) -> bytes:
        try:
            data = self._dctx.decompress(frame.payload, max_output_size=frame.ulen)
        except zstandard.ZstdError as exc:
            raise BadFrame(f"zstd: {exc}") from None
        if len(data) != frame.ulen:
            raise BadFrame(f"uncompressed {len(data)} bytes, header says {frame.ulen}")
        return self._upcast(data) if self._format == 1 else data

    def _upcast(self, data: bytes) -> bytes:
        """A msgpack array of events at the segment's schema, at the current schema."""
        for version in range(self._schema, SCHEMA_VERSION):
            upcast = UPCASTS.get(version)
            if upcast is None:
                raise BadFrame(f"no upcast from schema version {version}")
            data = upcast(data)  # type: ignore[operator]
        return data

    def _msgpack(self, frame: Frame) -> tuple[bytes | None, bytes]:
        """(msgpack array of the events or None, payload): None for a columnar payload."""
        data = self.payload(frame)
        if self._format == 1:
            return data, data
        if data[0] == MODE_MSGPACK:
            return self._upcast(data[1:]), data
        return None, data

    def _objects(self, table) -> list[Event]:
        """A format-2 object table (a msgpack array of events) decoded."""
        if self._schema != SCHEMA_VERSION:
            table = self._upcast(bytes(table))
        return self._codec.decode_many(table)

    def _decode_events(self, data: bytes, count: int) -> list[Event]:
        try:
            events = self._codec.decode_many(data)
        except UNDECODABLE as exc:
            raise BadFrame(f"decode: {exc}") from None
        if len(events) != count:
            raise BadFrame(f"{len(events)} events, header says {count}")
        return events

    def events(self, frame: Frame) -> list[Event]:
        msgpack, data = self._msgpack(frame)
        if msgpack is None:  # columns: the kernel writes them as msgpack, msgspec builds them
            f2 = _frame2()
            try:
                msgpack = self._upcast(f2.msgpack_of(data, frame.count))
            except f2.Frame2Error as exc:
                raise BadFrame(f"decode: {exc}") from None
        return self._decode_events(msgpack, frame.count)

    def columns(self, frame: Frame) -> ColumnBatch:
        """The frame as a ColumnBatch of its own (seq filled)."""
        from ..fastdecode import empty_batch

        batch = empty_batch(frame.count)
        self.columns_into(frame, batch, 0)
        return batch

    def columns_into(self, frame: Frame, batch: ColumnBatch, offset: int) -> None:
        """Decode the frame into rows offset..offset+count of `batch` (objects appended)."""
        from ..fastdecode import FastDecodeError, decode_columns_into  # numba: on first use

        data, raw = self._msgpack(frame)
        if data is None:
            f2 = _frame2()
            try:
                f2.decode_into(batch, offset, raw, frame.count, frame.first_seq, self._objects)
            except (f2.Frame2Error, *UNDECODABLE) as exc:
                raise BadFrame(f"decode: {exc}") from None
            return
        try:
            decode_columns_into(batch, offset, data, frame.count, frame.first_seq)
            return
        except (FastDecodeError, *UNDECODABLE):
            pass
        events = self._decode_events(data, frame.count)
        log.debug("columnar walker fell back to msgspec at offset=%d", frame.offset)
        part = ColumnBatch.from_events(events, range(frame.first_seq,
                                                     frame.first_seq + frame.count))
        rows = slice(offset, offset + frame.count)
        for name in part.column_names():
            getattr(batch, name)[rows] = getattr(part, name)
        obj = batch.obj[rows]
        obj[obj >= 0] += len(batch.objects)
        batch.objects.extend(part.objects)

    @property
    def format_version(self) -> int:
        return self._format

    def columns_many(self, frames: list[Frame], batch: ColumnBatch, offset: int) -> int:
        """Decode consecutive format-2 frames into rows from `offset` in one kernel call;
        returns how many were decoded whole. The rest, from the first that is not a columnar
        payload or does not decode, are the caller's to decode one by one (`columns_into`)."""
        datas = []
        for frame in frames:
            try:
                data = self.payload(frame)
            except BadFrame:
                break
            if data[0] == MODE_MSGPACK or self._schema != SCHEMA_VERSION:
                break
            datas.append(data)
        if not datas:
            return 0
        counts = np.array([f.count for f in frames[:len(datas)]], np.int64)
        seqs = np.array([f.first_seq for f in frames[:len(datas)]], np.int64)
        return _frame2().decode_many_into(batch, offset, datas, counts, seqs,
                                          self._codec.decode_many)

    def columns_run(self, run: FrameRun, batch: ColumnBatch, offset: int) -> int:
        """`columns_many` of a run's frames (format 2): how many were decoded whole."""
        if self._schema != SCHEMA_VERSION:
            return 0
        decompress = self._dctx.decompress
        mv = memoryview(run.chunk)
        at = (run.offset + FRAME_HEADER_SIZE).tolist()
        datas = []
        for a, clen, ulen in zip(at, run.clen.tolist(), run.ulen.tolist()):
            try:
                data = decompress(mv[a:a + clen], max_output_size=ulen)
            except zstandard.ZstdError:
                break
            if len(data) != ulen or data[0] == MODE_MSGPACK:
                break
            datas.append(data)
        if not datas:
            return 0
        return _frame2().decode_many_into(batch, offset, datas, run.count, run.first_seq,
                                          self._codec.decode_many)

    def index(self, frame: Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(kind, ts_recv, instrument) of the frame's rows, without decoding events."""
        from ..fastdecode import FastDecodeError, decode_index

        data, raw = self._msgpack(frame)
        f2 = _frame2()
        try:
            if data is None:
                return f2.index(raw, frame.count)
            return decode_index(data, frame.count)
        except (FastDecodeError, f2.Frame2Error) as exc:
            raise BadFrame(f"decode: {exc}") from None
