"""What both Sierra file formats share: the error, SCDateTimeMS and float32 prices."""

from __future__ import annotations

from typing import Final

import numpy as np

from mia.engine.clock import NS_PER_DAY, NS_PER_US
from mia.engine.errors import MiaError

# SCDateTimeMS: int64 microseconds since 1899-12-30 00:00 UTC (Sierra's day zero)
SC_EPOCH_DAYS: Final = 25_569  # days from 1899-12-30 to 1970-01-01
SC_EPOCH_US: Final = SC_EPOCH_DAYS * (NS_PER_DAY // NS_PER_US)
# a record time outside [1980, 2200) is not a time Sierra wrote: the record is damaged
_MIN_US: Final = SC_EPOCH_US + 3_652 * 86_400_000_000  # 1980-01-01
_MAX_US: Final = SC_EPOCH_US + 84_006 * 86_400_000_000  # 2200-01-01


class SierraFileError(MiaError):
    """A Sierra file is not what it claims to be, or is damaged; names the file and byte offset."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        self.path = str(path)
        self.offset = offset
        self.reason = reason
        super().__init__(f"{path} at byte {offset}: {reason}")


def scdt_to_ns(us):
    """SCDateTimeMS (int µs since 1899-12-30) -> int ns since the Unix epoch, exactly.

    Works on a Python int or an int64 array (int64 ns holds dates up to 2262)."""
    if isinstance(us, np.ndarray):
        return (us.astype(np.int64) - SC_EPOCH_US) * NS_PER_US
    return (int(us) - SC_EPOCH_US) * NS_PER_US


def ns_to_scdt(ns):
    """int ns since the Unix epoch -> SCDateTimeMS (µs below are truncated toward -inf)."""
    if isinstance(ns, np.ndarray):
        return ns.astype(np.int64) // NS_PER_US + SC_EPOCH_US
    return int(ns) // NS_PER_US + SC_EPOCH_US


def valid_times(us: np.ndarray) -> np.ndarray:
    """Mask of record times Sierra could have written."""
    return (us >= _MIN_US) & (us < _MAX_US)


def widen_f32(values: np.ndarray) -> np.ndarray:
    """float32 prices as float64 with the shortest decimal that round-trips the float32.

    Sierra stores prices as float32: 15.05 is 15.050000190734863 widened bit for bit. The DTC
    path sends doubles (15.05), so both sources agree on a VX price only if the float32 is read
    back as the decimal it was written from. Prices take few distinct values, so the decimal
    round trip runs over the unique values only.
    """
    f32 = np.asarray(values, dtype=np.float32)
    if f32.size == 0:
        return f32.astype(np.float64)
    uniq, inverse = np.unique(f32, return_inverse=True)
    wide = _widen_unique(uniq)
    return wide[inverse.reshape(-1)]


def _widen_unique(uniq: np.ndarray) -> np.ndarray:
    out = np.empty(len(uniq), dtype=np.float64)
    for i, u in enumerate(uniq):
        if np.isfinite(u):
            out[i] = float(np.format_float_positional(u, unique=True, trim="-"))
        else:
            out[i] = np.nan
    return out


class FixedRecordReader:
    """Sans-IO reader of a Sierra file of fixed-size records after a header: `feed(bytes)`
    returns the whole records those bytes completed (a numpy structured array).

    The header is checked on the first bytes (unless `header=False`: the caller positioned the
    stream after it). A partial record at the end is held until the next `feed`. `records`
    counts records returned so far (the index of the next one); `offset` is the file offset of
    the next byte expected. Subclasses name the layout: HEADER_SIZE, RECORD_SIZE, RECORD_DTYPE
    and `parse_header(bytes, path)`.
    """

    HEADER_SIZE: int
    RECORD_SIZE: int
    RECORD_DTYPE: np.dtype

    def __init__(self, path: str, *, header: bool = True, start_record: int = 0) -> None:
        self.path = path
        self.header = None
        self._need_header = header
        self._buf = bytearray()
        self.records = start_record
        self.offset = 0 if header else self.HEADER_SIZE + start_record * self.RECORD_SIZE

    @staticmethod
    def parse_header(data: bytes, path: str):
        raise NotImplementedError

    @property
    def pending(self) -> int:
        """Bytes held back: the torn tail (or header) waiting for the rest."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> np.ndarray:
        size, dtype = self.RECORD_SIZE, self.RECORD_DTYPE
        buf = self._buf
        if buf:
            buf += data
            data = buf
        if self._need_header:
            if len(data) < self.HEADER_SIZE:
                if not buf:
                    buf += data
                return np.empty(0, dtype)
            self.header = self.parse_header(bytes(data[:self.HEADER_SIZE]), self.path)
            self._need_header = False
            self.offset = self.HEADER_SIZE
            data = memoryview(data)[self.HEADER_SIZE:]
        n = len(data) // size
        whole = n * size
        recs = np.frombuffer(bytes(data[:whole]), dtype) if n else np.empty(0, dtype)
        self._buf = bytearray(bytes(data[whole:]))
        self.records += n
        self.offset += whole
        return recs
