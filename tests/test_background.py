"""Stopping background loops: a database pass may finish; a socket wait is interrupted."""

from __future__ import annotations

import asyncio

from turnstream.background import stop_task


async def _loop(stopping: asyncio.Event, passes: list[str], pass_seconds: float) -> None:
    while not stopping.is_set():
        passes.append("started")
        await asyncio.sleep(pass_seconds)  # a query, or a blocking read on a socket
        passes.append("finished")
        await asyncio.sleep(0)


async def test_a_loop_that_talks_to_the_database_finishes_its_pass_before_it_stops() -> None:
    stopping, passes = asyncio.Event(), []
    task = asyncio.create_task(_loop(stopping, passes, 0.2))
    await asyncio.sleep(0.05)  # mid-pass
    await stop_task(task, stopping, finish=5)
    assert task.done() and not task.cancelled()
    assert passes == ["started", "finished"]


async def test_a_pass_longer_than_its_time_to_finish_is_cancelled() -> None:
    stopping, passes = asyncio.Event(), []
    task = asyncio.create_task(_loop(stopping, passes, 60))
    await asyncio.sleep(0.05)
    await stop_task(task, stopping, finish=0.2)
    assert task.cancelled() and passes == ["started"]


async def test_a_loop_waiting_on_a_socket_is_interrupted_at_once() -> None:
    stopping, passes = asyncio.Event(), []
    task = asyncio.create_task(_loop(stopping, passes, 60))
    await asyncio.sleep(0.05)
    async with asyncio.timeout(30):  # cancelled at once, not after the hour of grace
        await stop_task(task, stopping, grace=3600)
    assert task.cancelled() and passes == ["started"]
