"""Stopping background loops (reaper, stream hub) without ever hanging a shutdown."""

from __future__ import annotations

import asyncio
import contextlib


async def stop_task(task: asyncio.Task[None], stopping: asyncio.Event, *, grace: float = 5) -> None:
    """Set the loop's event and cancel it; wait at most `grace` seconds for it to end.

    Each loop checks the event between passes: redis-py can swallow a cancel that
    lands mid-command, and then the event is what ends the loop.
    """
    stopping.set()
    task.cancel()
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(task), grace)
