"""The `bash` tool: a shell command run in a sandbox on a copy of the conversation's workspace.

Turned on by the short name `sandbox` in `TURNSTREAM_TOOLS` (which brings the
workspace tools too). Each call copies the workspace into a directory of its
own, runs the command there under bubblewrap (turnstream/sandbox/), and stores
back what changed: new and changed files (within the workspace's limits, each
one a `file` event) and deletions. Calls of one run may overlap; each works on
its own copy, and of two calls that write the same path the one that ends last
wins. A command stopped by turnstream (wall time, output, workspace size) or
by a stop of the run stores nothing.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pydantic_core import to_json

from turnstream.agents.calls import cap
from turnstream.agents.tools import Tool, ToolContext, make_tool
from turnstream.config import Settings
from turnstream.errors import Refused
from turnstream.sandbox.run import Outcome, run_command
from turnstream.store.workspace import NewFile, Workspace

# Copying the workspace in and out, on top of the command's own wall time.
COPY_SECONDS = 15.0
RESULT_OVERHEAD_CHARS = 2000  # the JSON around stdout and stderr, files listed


async def bash(
    command: str,
    timeout: float | None = None,  # noqa: ASYNC109 (the model's own limit, within the sandbox's)
    ctx: ToolContext | None = None,
) -> str:
    """Run a bash command in a sandbox whose working directory is the conversation's workspace.

    No network; the host's programs in /usr (python3, coreutils...); files the command
    writes under the working directory are kept, files under /tmp are not. The result
    is JSON: exitCode, stdout, stderr, limit (what stopped the command, if anything),
    files (what changed in the workspace) and notStored.

    Args:
        command: the command, as for `bash -c`, such as python3 make_chart.py.
        timeout: seconds before the command is killed (at most the configured limit).
    """
    if ctx is None or ctx.workspace is None or ctx.settings is None:
        raise RuntimeError("this run has no workspace")
    settings, workspace = ctx.settings, ctx.workspace
    if timeout is not None and timeout <= 0:
        raise ValueError("timeout must be a positive number of seconds")
    wall = min(timeout or settings.sandbox_timeout_seconds, settings.sandbox_timeout_seconds)
    before = await workspace.contents()
    outcome = await run_command(settings, command, before, wall_seconds=wall)
    result = _result(settings, outcome)
    if outcome.harvest is not None:
        result.update(await _store(workspace, before, outcome))
    elif outcome.harvest_error is not None:
        result.update(files=[], filesError=outcome.harvest_error)
    return to_json(result).decode()


def _result(settings: Settings, outcome: Outcome) -> dict[str, Any]:
    room = max((settings.tool_output_chars - RESULT_OVERHEAD_CHARS) // 2, 100)
    return {
        "exitCode": outcome.exit_code,
        "stdout": cap(outcome.stdout.decode(errors="replace"), room),
        "stderr": cap(outcome.stderr.decode(errors="replace"), room),
        "limit": outcome.limit,
    }


async def _store(
    workspace: Workspace, before: dict[str, bytes], outcome: Outcome
) -> dict[str, Any]:
    """Write back the files the command made or changed and delete those it removed."""
    assert outcome.harvest is not None
    after, skipped = outcome.harvest.files, outcome.harvest.skipped
    kept = {path for path, _ in skipped}  # a file turned into a link is not a deletion
    changed = sorted(p for p, data in after.items() if before.get(p) != data)
    writes = [NewFile(p, after[p]) for p in changed]
    deletions = sorted(p for p in before if p not in after and p not in kept)
    not_stored = [{"path": p, "why": why} for p, why in skipped]
    try:
        changes = await workspace.apply(writes, deletions)
    except Refused as exc:  # a workspace limit, a file where a folder is: nothing was stored
        return {"files": [], "notStored": not_stored, "filesError": str(exc)}
    files = [
        {"path": c.info.path, "change": "deleted" if c.deleted else "written"} for c in changes
    ]
    return {"files": files, "notStored": not_stored}


def _deadline(settings: Settings) -> float:
    return settings.sandbox_timeout_seconds + COPY_SECONDS


TOOLS: list[Tool] = [replace(make_tool(bash), timeout=_deadline)]
