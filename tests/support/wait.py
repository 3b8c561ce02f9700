from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_for(
    condition: Callable[[], Awaitable[T]] | Callable[[], T],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        last = result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")
        await asyncio.sleep(interval)


async def ticks_pass(count: Callable[[], int], n: int = 2, what: str = "ticks", timeout: float = 10.0) -> None:
    """Wait until ``count`` (a scheduler's ``ticks``, an outbox relay's ``rounds``) has gone up by ``n``: with n >= 2
    at least one whole tick ran after this call, so whatever it would have done by now is done (or will not be)."""
    start = count()
    await wait_for(lambda: count() >= start + n, timeout=timeout, what=f"{n} more {what}")
