"""Agents for tests, loadable as TURNSTREAM_AGENT=fake_agents:<name>."""

from __future__ import annotations

import asyncio


async def failing(ctx):
    yield "half a "
    await asyncio.sleep(0.01)
    raise RuntimeError("the model fell over")


async def slow(ctx):
    """Forty words, 50 ms apart: long enough to look at a run while it runs."""
    for i in range(40):
        await asyncio.sleep(0.05)
        yield f"w{i} "
