"""Segments in object storage (read only): headers by one small range read, frames by range
reads, and the frame index a push leaves beside each segment.

A frame index (``<segment>.mseg.idx``) is the segment's frame headers, copied in file order and
zstd-compressed with the segment's size and SHA-256. With it a seek by time reads no frame it
does not need, not even a header; each header still carries its own CRC, and a wanted frame's
payload CRC covers the header fields, so an index that does not match the segment falls back to
walking the segment's own headers (correct, only slower). Without an index (a day copied by
other tools) the headers are walked through the read-ahead cache.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO, Iterator

import msgspec
import zstandard

from ..errors import LogFormatError
from ..storage import GuardedFile, RemotePath, StorageError, guarded
from .format import (
    FRAME_HEADER_SIZE,
    SEGMENT_HEADER,
    Damage,
    Frame,
    SegmentFile,
    parse_frame_header,
    payload_crc_ok,
    read_segment_header,
    scan_frames,
)

log = logging.getLogger(__name__)

INDEX_SUFFIX = ".idx"  # beside the segment: <created_ns>-<recording_id>-<stream>.mseg.idx
INDEX_MAGIC = b"MIAIDX1\n"
HEAD_BYTES = 64 << 10  # first range read of a segment: its header and metadata, usually
_CACHE_MAX = 256


class FrameIndex(msgspec.Struct, frozen=True):
    """What a push writes beside a segment: its size, SHA-256 and frame headers."""

    size: int
    sha256: str
    data_start: int
    headers: bytes  # 48 bytes per frame, contiguous from data_start


def build_index(path: Path) -> FrameIndex:
    """The frame index of a local segment (stops at the first invalid header: a pushed day
    is verified first, so that is the end of the file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
        size = f.tell()
        _, _, _, data_start = read_segment_header(f, path)
        heads = bytearray()
        pos = data_start
        while pos + FRAME_HEADER_SIZE <= size:
            f.seek(pos)
            raw = f.read(FRAME_HEADER_SIZE)
            h = parse_frame_header(raw)
            if isinstance(h, str) or pos + FRAME_HEADER_SIZE + h[0] > size:
                break
            heads += raw
            pos += FRAME_HEADER_SIZE + h[0]
    return FrameIndex(size, digest.hexdigest(), data_start, bytes(heads))


def encode_index(index: FrameIndex) -> bytes:
    return INDEX_MAGIC + zstandard.ZstdCompressor(level=3).compress(
        msgspec.msgpack.encode(index))


def decode_index(raw: bytes) -> FrameIndex | None:
    """The index in `raw`, None when it is not one (it is then ignored, never trusted)."""
    if not raw.startswith(INDEX_MAGIC):
        return None
    try:
        data = zstandard.ZstdDecompressor().decompress(raw[len(INDEX_MAGIC):],
                                                       max_output_size=1 << 31)
        return msgspec.msgpack.decode(data, type=FrameIndex)
    except (zstandard.ZstdError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def index_path(segment: RemotePath) -> RemotePath:
    return RemotePath(segment.fs, segment.path + INDEX_SUFFIX)


# --- opening remote segments -------------------------------------------------------------------


class _Opened(msgspec.Struct):
    head: bytes
    index: FrameIndex | None


_cache: OrderedDict[tuple, _Opened] = OrderedDict()
_cache_lock = threading.Lock()


def _key(path: RemotePath, size: int) -> tuple:
    info = path._info or {}
    return (str(path), size, info.get("ETag") or info.get("etag") or info.get("mtime")
            or info.get("LastModified"))


def _head_and_index(path: RemotePath, size: int) -> _Opened:
    """The segment's header bytes and its index (cached: listing a day then reading it opens
    each segment twice)."""
    key = _key(path, size)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    fs = path.fs
    head = guarded(str(path), fs.cat_file, path.path, start=0, end=min(size, HEAD_BYTES))
    if len(head) >= SEGMENT_HEADER.size:
        need = SEGMENT_HEADER.size + SEGMENT_HEADER.unpack_from(head)[3]
        if len(head) < need <= size:
            head = guarded(str(path), fs.cat_file, path.path, start=0, end=need)
    index = None
    try:
        index = decode_index(index_path(path).read_bytes())
    except FileNotFoundError:
        pass
    except StorageError as exc:  # an unreadable index is not a reason to fail the read
        log.warning("frame index unreadable path=%s error=%s", path, exc)
    if index is not None and index.size != size:
        log.info("frame index does not match the segment size path=%s", path)
        index = None
    opened = _Opened(head, index)
    with _cache_lock:
        _cache[key] = opened
        while len(_cache) > _CACHE_MAX:
            _cache.popitem(last=False)
    return opened


class RemoteSegmentFile(SegmentFile):
    """A segment in object storage: immutable, read by range requests."""

    def __init__(self, path: RemotePath) -> None:
        self._size = path.size()
        opened = _head_and_index(path, self._size)
        head = io.BytesIO(opened.head)
        super().__init__(head, path)  # type: ignore[arg-type]  # header checked from the bytes
        self._index = opened.index if (opened.index is not None
                                       and opened.index.data_start == self.data_start) else None
        self._remote = path
        self._file: BinaryIO | None = None

    @property
    def f(self) -> BinaryIO:  # type: ignore[override]
        if self._file is None:
            fs, p = self._remote.fs, self._remote.path
            try:
                self._file = GuardedFile(guarded(str(self._remote), fs.open, p, "rb",
                                                 block_size=_block(), cache_type="readahead",
                                                 size=self._size), str(self._remote))
            except TypeError:  # a filesystem whose open takes no size
                self._file = self._remote.open_read(_block())
        return self._file

    @f.setter
    def f(self, value) -> None:  # SegmentFile.__init__ assigns the header bytes
        self._head = value

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def size(self) -> int:
        return self._size

    def scan(self, pos: int | None = None, size: int | None = None, lo: int | None = None,
             hi: int | None = None) -> Iterator[Frame | Damage]:
        size = self._size if size is None else size
        if self._index is not None and (pos is None or pos == self.data_start) \
                and size == self._size:
            return self._scan_indexed(lo, hi)
        return super().scan(pos, size, lo, hi)

    def _scan_indexed(self, lo: int | None, hi: int | None) -> Iterator[Frame | Damage]:
        """Frames by the index: headers from it, payloads by range reads of wanted frames only.
        Anything that disagrees with the segment hands over to the header walk from there."""
        index, size = self._index, self._size
        heads = index.headers
        pos = self.data_start
        for at in range(0, len(heads) - FRAME_HEADER_SIZE + 1, FRAME_HEADER_SIZE):
            raw = heads[at:at + FRAME_HEADER_SIZE]
            h = parse_frame_header(raw)
            if isinstance(h, str) or pos + FRAME_HEADER_SIZE + h[0] > size:
                break
            clen, ulen, count, first_seq, ts_lo, ts_hi, crc = h
            end = pos + FRAME_HEADER_SIZE + clen
            if (lo is not None and ts_hi < lo) or (hi is not None and ts_lo >= hi):
                yield Frame(pos, count, first_seq, ts_lo, ts_hi, clen, ulen, None)
                pos = end
                continue
            f = self.f
            f.seek(pos + FRAME_HEADER_SIZE)
            payload = f.read(clen)
            if not payload_crc_ok(raw, payload, crc):
                break  # the segment says otherwise: let its own headers decide
            yield Frame(pos, count, first_seq, ts_lo, ts_hi, clen, ulen, payload)
            pos = end
        if pos < size:
            yield from scan_frames(self.f, self.path, pos, size, lo, hi)


def _block() -> int:
    from .. import storage

    return storage.READ_BLOCK


def open_remote(path: RemotePath) -> RemoteSegmentFile:
    try:
        return RemoteSegmentFile(path)
    except FileNotFoundError:
        raise LogFormatError(str(path), "segment vanished while reading") from None
