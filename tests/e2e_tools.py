"""Tools for the end-to-end tool-turn tests, run by real `turnstream` processes.

Registered as `TURNSTREAM_TOOLS=e2e_tools:TOOLS`, with tests/ on the processes'
PYTHONPATH. They talk to the test through files in the directory
`E2E_TOOLS_DIR` names, since they run in another process:

- every call appends one JSON line to `calls.jsonl`: the tool, its arguments,
  its call id, conversation and process id;
- `slow_lookup` writes `<call id>.started` when it begins, then waits until the
  test writes `<call id>.release` (at most a minute); if it is cancelled (a
  stop) it writes `<call id>.cancelled` on its way out.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from turnstream.agents.tools import ToolContext

POPULATIONS = {"Paris": 2_102_650, "Lyon": 522_250, "Oslo": 717_710, "Bergen": 291_940}


def tools_dir() -> Path:
    return Path(os.environ["E2E_TOOLS_DIR"])


def calls(directory: Path) -> list[dict[str, Any]]:
    """What the tools were called with, in order (read by the test)."""
    path = directory / "calls.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def answer(query: str) -> str:
    """What `lookup` answers for `query`."""
    return f"{query}: population {POPULATIONS.get(query, 0)}"


def _record(tool: str, query: str, ctx: ToolContext | None) -> str:
    assert ctx is not None
    entry = {
        "tool": tool,
        "query": query,
        "call_id": ctx.tool_call_id,
        "conversation_id": ctx.conversation_id,
        "pid": os.getpid(),
    }
    with (tools_dir() / "calls.jsonl").open("a") as f:
        f.write(json.dumps(entry) + "\n")
    return ctx.tool_call_id


async def lookup(query: str, ctx: ToolContext | None = None) -> str:
    """Look up a city's population.

    Args:
        query: the city's name.
    """
    _record("lookup", query, ctx)
    return answer(query)


async def slow_lookup(query: str, ctx: ToolContext | None = None) -> str:
    """Look up a city's population in a slow archive.

    Args:
        query: the city's name.
    """
    call_id = _record("slow_lookup", query, ctx)
    directory = tools_dir()
    (directory / f"{call_id}.started").write_text(str(os.getpid()))
    try:
        for _ in range(3000):  # polls another process's file for at most a minute
            if (directory / f"{call_id}.release").exists():
                return answer(query)
            await asyncio.sleep(0.02)
    except asyncio.CancelledError:
        (directory / f"{call_id}.cancelled").write_text("cancelled")
        raise
    raise TimeoutError(f"{call_id} was not released within a minute")


TOOLS = [lookup, slow_lookup]
