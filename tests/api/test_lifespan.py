"""The app's lifespan must always shut down, even if a library loses one cancellation."""

from __future__ import annotations

import asyncio
import contextlib

from helpers import eventually

from turnstream.api.app import create_app
from turnstream.runs import reaper


async def test_lifespan_starts_and_stops(settings):
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        assert application.state.runtime is not None


async def test_shutdown_finishes_when_a_reaper_pass_swallows_the_cancellation(
    settings, monkeypatch
):
    passes = 0

    async def reap_once_losing_one_cancel(_rt) -> int:
        # What redis-py 8.1 does on Python 3.11 when a cancel lands mid-command.
        nonlocal passes
        passes += 1
        if passes == 1:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(30)  # the pass under test: hangs until cancelled
        return 0

    monkeypatch.setattr(reaper, "reap_once", reap_once_losing_one_cancel)
    application = create_app(settings)
    lifespan = application.router.lifespan_context(application)
    await lifespan.__aenter__()
    await eventually(lambda: passes, timeout=5, what="the reaper's first pass")
    assert passes == 1  # the reaper is inside its first pass
    shutdown = asyncio.create_task(lifespan.__aexit__(None, None, None))
    done, _ = await asyncio.wait({shutdown}, timeout=3)
    hung = not done
    if hung:  # clean up: the second cancel of each (test and reaper) does get through
        shutdown.cancel()
        await shutdown
        for task in asyncio.all_tasks():
            if getattr(task.get_coro(), "__qualname__", "") == "reap_forever":
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    assert not hung, "the app's shutdown hung: its reaper did not stop"
