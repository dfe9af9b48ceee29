"""Retrying a source: the one capped, jittered backoff and the stop-aware wait between tries.

Every client that reconnects or retries (DTC live and historical, Polygon REST and streams) waits
``backoff_s`` between tries: exponential from ``initial_s``, capped at ``max_s``, at a random
point in the upper half of the step so that many clients restarted together do not retry in step.
"""

from __future__ import annotations

import asyncio
import random


def backoff_s(attempt: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """The wait before retry number `attempt` (1 for the first retry)."""
    step = min(max_s, initial_s * 2.0 ** max(attempt - 1, 0))
    return rng.uniform(step / 2, step)


async def stopped_within(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds` for `stop`; True when it was set (the run should end)."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        return False
    return True


def settle_waiter(fut: asyncio.Future | None, exc: BaseException) -> None:
    """A run loop ending with `exc` passes it to the future its starter awaits (logged on,
    authenticated); cancellation cancels it. Retrieved here so asyncio never reports it unread."""
    if fut is None or fut.done():
        return
    if isinstance(exc, Exception):
        fut.set_exception(exc)
        fut.exception()
    else:
        fut.cancel()
