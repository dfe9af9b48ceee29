"""Format-2 frame payloads: per event kind fixed-width little-endian columns (docs/log-format.md).

A payload is a 32-byte head, the kind column (u8 per row), then numeric columns, each a 16-byte
descriptor and its values: ts_recv, ts_event - ts_recv and instrument for every row, then the
Trade, Quote and BookLevel tables (their rows in frame order), then the object table: every
other row's event as msgpack (`EventCodec.encode_many` of them, byte for byte the writer's
encodings). Ints are stored as offsets from a base, or as deltas, in the narrowest signed width
that holds them; floats as scaled ints (value = int * 2**-exp), float32 or float64, whichever is
narrowest AND gives back the very float64 bits. A frame whose market ints do not fit their
columns (the writer never meets one from a source) is stored as a msgpack payload instead
(mode 0), so every frame round-trips exactly.

Encoding runs over the columns the format-1 walker (engine.fastdecode) reads out of the frame's
msgpack encoding; decoding is one numba call per frame that reads the columns and scatters them
into a ColumnBatch, then one msgspec call for the object table (kernels: frame2_kernels.py).
Typed events are built from the columns: a kernel writes them as msgpack (`msgpack_of`) and
msgspec builds the structs in C.
"""

from __future__ import annotations

import struct

import numpy as np

from ..columns import ColumnBatch
from ..events import BookLevel, Quote, Trade
from ..fastdecode import FastDecodeError, columns_and_objects, empty_batch
from . import frame2_kernels as _k
from .frame2_kernels import DESCRIPTOR_SIZE, ERRORS, MODE_COLUMNS, MODE_MSGPACK, N_COLUMNS
from .frame2_msgpack import msgpack_of_payload

# mode, 7 reserved bytes, rows, Trade rows, Quote rows, BookLevel rows, object rows, object bytes
HEAD = struct.Struct("<B7xIIIIII")

__all__ = ["MODE_COLUMNS", "MODE_MSGPACK", "HEAD", "Frame2Error", "encode", "encode_span",
           "decode", "decode_into", "decode_many_into", "index", "msgpack_of", "warm_up"]


class Frame2Error(ValueError):
    """A format-2 payload that does not decode (the frame CRC passed: a writer bug)."""



# --- encoding ----------------------------------------------------------------------------------


def encode(msgpack_payload: bytes, count: int) -> bytes:
    """The format-2 payload of a frame from its format-1 payload (the msgpack array of its
    events); a mode-0 payload (that msgpack, behind one byte) when columns cannot hold it."""
    return encode_span(msgpack_payload, count)[0]


def encode_span(msgpack_payload: bytes, count: int) -> tuple[bytes, int | None, int | None]:
    """`encode`, with the frame's min and max ts_recv read off its columns (None, None for a
    mode-0 payload): the writer's frame header needs them."""
    try:
        b, obj_start, obj_end = columns_and_objects(msgpack_payload, count)
    except FastDecodeError:
        return bytes((MODE_MSGPACK,)) + msgpack_payload, None, None
    src = np.frombuffer(msgpack_payload, np.uint8)
    out = np.empty(256 + DESCRIPTOR_SIZE * N_COLUMNS + count * 90 + len(msgpack_payload),
                   np.uint8)
    n = _k.encode_columns(out, b.kind, b.ts_event, b.ts_recv, b.instrument, b.price, b.size,
                          b.side, b.bid, b.bid_size, b.ask, b.ask_size, b.action, b.level,
                          b.orders, b.flags, src, obj_start, obj_end)
    ts = b.ts_recv
    return out[:n].tobytes(), int(ts.min()), int(ts.max())


# --- decoding ----------------------------------------------------------------------------------


def decode_into(batch: ColumnBatch, offset: int, data: bytes, count: int, first_seq: int,
                decode_objects) -> None:
    """Decode a mode-1 payload into rows offset..offset+count of `batch` (every column written,
    objects appended through `decode_objects(bytes-like) -> list`). Frame2Error when it does
    not decode; then the rows hold garbage and `batch.objects` is unchanged."""
    if offset < 0 or offset + count > len(batch):
        raise ValueError(f"rows {offset}..{offset + count} do not fit a batch of {len(batch)}")
    buf = np.frombuffer(data, np.uint8)
    b = batch
    at = _k.decode_columns(buf, count, offset, first_seq, len(b.objects), b.kind, b.seq,
                           b.ts_event, b.ts_recv, b.instrument, b.price, b.size, b.side, b.bid,
                           b.bid_size, b.ask, b.ask_size, b.action, b.level, b.orders, b.flags,
                           b.obj, np.empty((6, max(count, 1)), np.int64))
    if at < 0:
        raise Frame2Error(ERRORS.get(at, f"error {at}"))
    n_obj = HEAD.unpack_from(data)[5]
    if n_obj:
        objects = decode_objects(memoryview(data)[at:])
        if len(objects) != n_obj:
            raise Frame2Error(f"{len(objects)} objects, head says {n_obj}")
        b.objects.extend(objects)


def decode_many_into(batch: ColumnBatch, offset: int, datas: list[bytes], counts: np.ndarray,
                     first_seqs: np.ndarray, decode_objects) -> int:
    """Decode mode-1 payloads of consecutive frames (`counts` rows each, seq from `first_seqs`)
    back to back into rows from `offset`, in one kernel call; returns how many frames were
    decoded whole (rows and objects). The rest, from the first that does not decode, are the
    caller's (their rows are garbage)."""
    k = len(datas)
    starts = np.zeros(k + 1, np.int64)
    np.cumsum([len(d) for d in datas], out=starts[1:])
    buf = np.frombuffer(b"".join(datas), np.uint8)
    counts = np.ascontiguousarray(counts[:k], np.int64)
    first_seqs = np.ascontiguousarray(first_seqs[:k], np.int64)
    obj_at = np.empty(k, np.int64)
    b = batch
    if offset < 0 or offset + int(counts.sum()) > len(b):
        raise ValueError(f"rows from {offset} do not fit a batch of {len(b)}")
    done = _k.decode_frames(buf, starts, counts, first_seqs, offset, len(b.objects), obj_at,
                            b.kind, b.seq, b.ts_event, b.ts_recv, b.instrument, b.price, b.size,
                            b.side, b.bid, b.bid_size, b.ask, b.ask_size, b.action, b.level,
                            b.orders, b.flags, b.obj)
    mv = memoryview(buf)
    for i in range(done):
        n_obj = HEAD.unpack_from(datas[i])[5]
        if n_obj:
            try:
                objects = decode_objects(mv[obj_at[i]:starts[i + 1]])
            except ValueError:  # msgspec's DecodeError and UnicodeDecodeError are ValueErrors
                return i
            if len(objects) != n_obj:
                return i
            b.objects.extend(objects)
    return done


def decode(data: bytes, count: int, first_seq: int, decode_objects) -> ColumnBatch:
    batch = empty_batch(count)
    decode_into(batch, 0, data, count, first_seq, decode_objects)
    return batch


def index(data: bytes, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kind, ts_recv, instrument) of a mode-1 payload's rows, without the other columns."""
    kind = np.empty(count, np.uint8)
    ts_recv = np.empty(count, np.int64)
    instrument = np.empty(count, np.int32)
    rc = _k.decode_index(np.frombuffer(data, np.uint8), count, kind, ts_recv, instrument)
    if rc < 0:
        raise Frame2Error(ERRORS.get(rc, f"error {rc}"))
    return kind, ts_recv, instrument


def msgpack_of(data: bytes, count: int) -> bytes:
    """The format-1 payload (one msgpack array of the events) of a mode-1 payload: market rows
    written from their columns, the other rows' bytes copied from the object table. msgspec
    decodes it into the typed events, bit for bit those written."""
    out = np.empty(16 + 100 * count + len(data), np.uint8)
    n = msgpack_of_payload(np.frombuffer(data, np.uint8), count, out)
    if n < 0:
        raise Frame2Error(ERRORS.get(n, f"error {n}"))
    return out[:n].tobytes()


def warm_up() -> None:
    """Compile (or load from the numba cache) every format-2 kernel now: the encoder, the
    decoders (one frame, frames in bulk, index, typed) and the bulk frame check."""
    import zstandard

    from ..events import EventCodec, RecordingEnded
    from .format import encode_frame_header
    from .scan_kernels import scan_chunk

    codec = EventCodec()
    events = [Trade(1, 2, 1, 1.5, 2.0, 1), Quote(1, 2, 1, 1.0, 2.0, 3.0, 4.0),
              BookLevel(1, 2, 1, 1, 1.0, 2.0, 1, 0, 1, 0), RecordingEnded(1, 2, "r", "x")]
    n = len(events)
    data = encode(codec.encode_many(events), n)
    decode(data, n, 0, codec.decode_many)
    index(data, n)
    msgpack_of(data, n)
    one = np.ones(1, np.int64)
    decode_many_into(empty_batch(n), 0, [data], one * n, one * 0, codec.decode_many)
    comp = zstandard.ZstdCompressor().compress(data)
    frame = np.frombuffer(encode_frame_header(comp, len(data), n, 0, 2, 2) + comp, np.uint8)
    assert scan_chunk(frame, *(np.empty(2, np.int64) for _ in range(7))) == 1
