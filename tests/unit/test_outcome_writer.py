"""The dispatcher's group commit of delivery outcomes: what arrives during a write goes in the next one, a batch
that fails is written again one outcome at a time (so that one bad outcome fails alone), and every caller learns
its own result."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from services.notifications.dispatcher import _GroupWriter, _Outcome


def outcome(error: str | None = None) -> _Outcome:
    return _Outcome(uuid.uuid4(), "sent", 1, "sent", "Welcome", error, 0.0, None)


async def test_outcomes_that_arrive_during_a_write_go_together_in_the_next_and_a_bad_one_fails_alone() -> None:
    writes: list[int] = []
    gate = asyncio.Event()

    async def write(outcomes: list[_Outcome]) -> set[uuid.UUID]:
        writes.append(len(outcomes))
        if len(writes) == 1:
            await gate.wait()  # the first write is under way while the others arrive
        if any(o.error == "bad" for o in outcomes):
            raise ValueError("cannot encode")
        return {o.delivery_id for o in outcomes}

    writer = _GroupWriter(write, max_batch=3)
    first = asyncio.create_task(writer.write(outcome()))
    await asyncio.sleep(0)
    rest = [outcome(), outcome("bad"), outcome(), outcome()]
    tasks = [asyncio.create_task(writer.write(o)) for o in rest]
    await asyncio.sleep(0)
    gate.set()
    assert await first is True
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["bool", "ValueError", "bool", "bool"]
    assert all(r is True for r in results if isinstance(r, bool))
    # the first alone; then three together (failed), each again alone; then the last
    assert writes == [1, 3, 1, 1, 1, 1]


async def test_an_outcome_settled_elsewhere_is_reported_not_written() -> None:
    async def write(outcomes: list[_Outcome]) -> set[uuid.UUID]:
        return set()

    assert await _GroupWriter(write).write(outcome()) is False


async def test_a_write_that_is_cancelled_leaves_nobody_waiting() -> None:
    started = asyncio.Event()

    async def write(outcomes: list[_Outcome]) -> set[uuid.UUID]:
        started.set()
        await asyncio.Event().wait()
        return set()

    writer = _GroupWriter(write)
    waiting = asyncio.create_task(writer.write(outcome()))
    await started.wait()
    queued = asyncio.create_task(writer.write(outcome()))
    await asyncio.sleep(0)
    assert writer._task is not None
    writer._task.cancel()
    for task in (waiting, queued):
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5)
