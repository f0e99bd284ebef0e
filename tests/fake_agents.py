"""Agents for tests, loadable as TURNSTREAM_AGENT=fake_agents:<name>."""

from __future__ import annotations

import asyncio

from turnstream import events


async def failing(ctx):
    yield "half a "
    await asyncio.sleep(0.01)  # the agent's pace: the half reply goes out before the failure
    raise RuntimeError("the model fell over")


async def gives_up(ctx):
    """Reports its own failure, as the tool loop does at its step limit, and would go on."""
    yield "so far "
    yield events.error("Stopped after 1 step.", "step_limit")
    yield "never streamed"


async def slow(ctx):
    """Forty words, 50 ms apart: long enough to look at a run while it runs."""
    for i in range(40):
        await asyncio.sleep(0.05)  # the agent's pace, which the tests rely on
        yield f"w{i} "
