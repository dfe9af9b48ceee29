"""Polygon's errors: the HTTP failures of the options-chain source, in the FeedError tree."""

from __future__ import annotations

from mia.engine.errors import FeedError


class PolygonHttpError(FeedError):
    """Polygon answered with an HTTP error."""

    def __init__(self, message: str, *, status: int, request_id: str = "") -> None:
        self.status = status
        self.request_id = request_id
        super().__init__(message)


class EntitlementError(PolygonHttpError):
    """401/403: the key is missing, wrong, or the plan does not include this data."""
