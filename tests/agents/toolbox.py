"""Tools for the tool-loop tests, registered as TURNSTREAM_TOOLS=<this module>:<attr>.

They record what happened to them in `state`, which `reset()` renews for each
test (asyncio objects belong to one event loop).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from turnstream.agents.tools import ToolContext, make_tool


@dataclass
class State:
    calls: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)  # name: (start, end)
    contexts: list[ToolContext | None] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)  # set in `finally`
    cancelled: bool = False  # `hang` saw its sleep cancelled
    task: asyncio.Task[object] | None = None  # the task `hang` ran in


state = State()


def reset() -> State:
    global state
    state = State()
    return state


def get_weather(city: str, unit: str = "C") -> str:
    """The weather in a city.

    Args:
        city: the city's name, such as Paris.
        unit: C or F.
    """
    state.calls.append(("get_weather", {"city": city, "unit": unit}))
    return f"sunny, 21 {unit} in {city}"


async def _nap(name: str) -> str:
    start = time.monotonic()
    await asyncio.sleep(0.3)
    state.spans[name] = (start, time.monotonic())
    return f"{name} rested"


async def nap_a() -> str:
    """Sleep 0.3 s."""
    return await _nap("nap_a")


async def nap_b() -> str:
    """Sleep 0.3 s too."""
    return await _nap("nap_b")


async def hang(seconds: float = 30.0) -> str:
    """Wait a long time; mark the end, however it comes."""
    state.task = asyncio.current_task()
    state.started.set()
    try:
        await asyncio.sleep(seconds)
        return "woke up"
    except asyncio.CancelledError:
        state.cancelled = True
        raise
    finally:
        state.finished.set()


def explode(reason: str) -> str:
    """Fail with `reason`."""
    state.calls.append(("explode", {"reason": reason}))
    raise RuntimeError(f"boom: {reason}")


def add(a: int, b: int) -> int:
    """Add two integers."""
    state.calls.append(("add", {"a": a, "b": b}))
    return a + b


def flood(size: int) -> str:
    """Return `size` characters."""
    return "x" * size


async def whoami(note: str, ctx: ToolContext | None = None) -> dict[str, str]:
    """Who the call is for."""
    state.contexts.append(ctx)
    assert ctx is not None
    return {"user": ctx.user_id, "conversation": ctx.conversation_id, "note": note}


def forbidden() -> str:
    """Never registered: the tests check that a model cannot call it by name."""
    state.calls.append(("forbidden", {}))
    return "should never run"


def concatenate(a: str, b: str) -> str:
    """Join two strings."""
    return a + b


# Another function under `add`'s name: registering both is a mistake.
ANOTHER_ADD = make_tool(concatenate, name="add")

TOOLS = [get_weather, nap_a, nap_b, hang, explode, add, flood, whoami]
