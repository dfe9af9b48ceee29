"""DTC's errors, in the FeedError tree."""

from __future__ import annotations

from mia.engine.errors import FeedError


class LogonRejectedError(FeedError):
    """A DTC server refused the logon. `reconnect` is False for LOGON_ERROR_NO_RECONNECT."""

    def __init__(self, message: str, *, reconnect: bool = True) -> None:
        self.reconnect = reconnect
        super().__init__(message)
