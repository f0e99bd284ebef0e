"""Stopping background loops (reaper, requeuer, stream hub) without ever hanging a shutdown."""

from __future__ import annotations

import asyncio
import contextlib

# How long a stopping reaper or requeuer may take to finish its pass (milliseconds, as a
# rule) before it is cancelled.
PASS_SECONDS = 1.0


async def stop_task(
    task: asyncio.Task[None], stopping: asyncio.Event, *, finish: float = 0, grace: float = 5
) -> None:
    """Set the loop's event; let the loop finish its pass for up to `finish` seconds, then
    cancel it and wait at most `grace` seconds more for it to end.

    Each loop checks the event between passes; redis-py can swallow a cancel that lands
    mid-command, and then the event is what ends it. A loop whose pass talks to the
    database gets a `finish`: a query cut short by a cancel goes on in aiosqlite's
    thread, which then reports its result to an event loop that may be closed by then.
    """
    stopping.set()
    if finish > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), finish)
        if task.done():
            return
    task.cancel()
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(task), grace)
