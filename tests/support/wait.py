from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from shared.background import PeriodicLoop
from shared.outbox import OutboxRelay

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


async def ticks_pass(loop: PeriodicLoop | OutboxRelay, n: int = 2, timeout: float = 10.0) -> None:
    """Wait until ``loop`` (a scheduler's ticks, an outbox relay's rounds) has finished ``n`` more: with n >= 2 at
    least one whole tick ran after this call, so whatever it would have done by now is done (or will not be)."""

    def done() -> int:
        return loop.ticks if isinstance(loop, PeriodicLoop) else loop.rounds

    start = done()
    await wait_for(lambda: done() >= start + n, timeout=timeout, what=f"{n} more rounds of {type(loop).__name__}")
