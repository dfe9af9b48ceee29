"""One small error tree. Every error mia raises on purpose is a MiaError.

Messages name what was wrong and where (path and offset, host:port, message type, seq) and
never carry a secret.
"""

from __future__ import annotations


class MiaError(Exception):
    """Root of every error mia raises on purpose."""


class ConfigError(MiaError):
    """A configuration file or flag is invalid (unknown key, bad value, missing file)."""


class UsageError(MiaError):
    """The user asked for something that cannot be (bad date, no data for a day)."""


# --- the log ---------------------------------------------------------------------------------


class LogError(MiaError):
    """A problem with the event log on disk."""


class LogFormatError(LogError):
    """A file is not a mia log segment, or was written by a newer format version."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class LogCorruptError(LogError):
    """A frame failed its checks (length, CRC, decompression, decoding)."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        self.path = str(path)
        self.offset = offset
        self.reason = reason
        super().__init__(f"{path} at byte {offset}: {reason}")


class NoDataError(LogError, UsageError):
    """The data directory or the requested day holds no data."""


class DiskFullError(LogError):
    """The writer could not write: the disk or the file size limit is full."""


# --- sources ---------------------------------------------------------------------------------


class FeedError(MiaError):
    """A data source failed (network, protocol, entitlement)."""


class ProtocolError(FeedError):
    """A peer broke the wire protocol, or we were asked to send something invalid."""


class LocalProtocolError(ProtocolError):
    """We tried to encode something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that do not decode."""


class ConnectionLostError(FeedError):
    """A connection dropped or could not be made; names host:port."""
