"""A background task of a service (a scheduler ticking, a relay, a dispatcher): started with the app, stopped with
it: ``stop()`` asks it to end, waits for the work in hand, and cancels it only if that takes too long."""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger(__name__)


class BackgroundLoop:
    name = "background"

    def __init__(self) -> None:
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=timeout_s)
        except TimeoutError:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        except Exception:
            log.exception("%s ended with an error", self.name)

    async def _sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less when asked to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def _run(self) -> None:
        raise NotImplementedError


class PeriodicLoop(BackgroundLoop):
    """Calls ``run_once`` every ``interval_s`` until stopped; a failing tick is logged and the next one comes."""

    interval_s: float = 30.0
    ticks = 0
    """Ticks finished so far (successful or not): "nothing happened for two ticks" can be waited for."""

    async def run_once(self) -> object:
        raise NotImplementedError

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.run_once()
            except Exception:  # never let the loop die: log, go on at the next tick
                log.exception("%s tick failed", self.name)
            self.ticks += 1
            await self._sleep(self.interval_s)
