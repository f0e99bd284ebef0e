"""The `bash` tool on a conversation's workspace, with real bubblewrap: what the model gets
back, and what the workspace (and its `file` events) keeps of what the command did."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sse import parse_sse
from workspace_support import Workspaces, workspaces

from turnstream.agents.base import RunContext
from turnstream.agents.calls import ToolCall, call_tool
from turnstream.agents.sandbox_tools import bash
from turnstream.agents.tools import load_tools
from turnstream.config import Settings
from turnstream.store.workspace import Limits

LIMITS = Limits(file_bytes=100_000, total_bytes=300_000, files=20)


@pytest.fixture
async def spaces(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Workspaces]:
    settings = Settings(data_dir=tmp_path, workspace_files=20, sandbox_timeout_seconds=10)
    async with workspaces(sqlite_url, LIMITS, settings) as made:
        yield made


async def run_bash(spaces: Workspaces, command: str, **arguments: Any) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(await bash(command, ctx=spaces.context("c1"), **arguments))
    return result


def test_sandbox_brings_the_workspace_tools_with_bash() -> None:
    workspace = list(load_tools("workspace"))
    assert list(load_tools("sandbox")) == [*workspace, "bash"]
    assert list(load_tools("workspace,sandbox")) == [*workspace, "bash"]
    assert set(load_tools("sandbox")["bash"].parameters["properties"]) == {"command", "timeout"}


async def test_a_command_reads_the_workspace_and_what_it_writes_is_stored(
    spaces: Workspaces,
) -> None:
    ws = spaces.context("c1").workspace
    assert ws is not None
    await ws.write("data.csv", b"n\n3\n4\n")
    await ws.write("old.txt", b"remove me")
    spaces.changes.clear()
    chart = "python3 -c \"import sys; n = sum(map(int, open('data.csv').read().split()[1:])); "
    chart += "open('chart.svg', 'w').write(f'<svg>{n}</svg>'); print(n)\"; rm old.txt"

    result = await run_bash(spaces, chart)

    assert result["exitCode"] == 0 and result["limit"] is None
    assert (result["stdout"], result["stderr"]) == ("7\n", "")
    assert result["files"] == [
        {"path": "chart.svg", "change": "written"},
        {"path": "old.txt", "change": "deleted"},
    ]
    assert [(c.info.path, c.deleted) for c in spaces.changes] == [
        ("chart.svg", False),
        ("old.txt", True),
    ]
    listing = await ws.listing()
    assert [(i.path, i.version) for i in listing.items] == [("chart.svg", 1), ("data.csv", 1)]
    assert (await ws.read("chart.svg"))[1] == b"<svg>7</svg>"


async def test_a_failing_command_reports_its_exit_code_and_stderr(spaces: Workspaces) -> None:
    result = await run_bash(spaces, "echo out; echo oops >&2; exit 3")

    assert (result["exitCode"], result["stdout"], result["stderr"]) == (3, "out\n", "oops\n")
    assert result["files"] == []


async def test_the_timeout_argument_lowers_the_wall_time_only(spaces: Workspaces) -> None:
    result = await run_bash(spaces, "touch started; sleep 30", timeout=0.5)

    assert result["exitCode"] is None
    assert result["limit"] == "the wall time of 0.5 s (TURNSTREAM_SANDBOX_TIMEOUT_SECONDS)"
    assert "files" not in result  # killed: nothing is stored
    assert (await spaces.context("c1").workspace.listing()).items == []  # type: ignore[union-attr]
    raised = await run_bash(spaces, "echo fine", timeout=3600)
    assert raised["exitCode"] == 0  # within the setting (10 s), not 3600


async def test_what_does_not_fit_the_workspace_is_not_stored(spaces: Workspaces) -> None:
    result = await run_bash(spaces, "head -c 200000 /dev/zero > a; head -c 200000 /dev/zero > b")

    assert result["exitCode"] == 0
    assert result["files"] == []
    assert "nothing was stored" in result["filesError"]
    assert spaces.changes == []


async def test_concurrent_calls_each_get_a_copy_and_the_later_write_wins(
    spaces: Workspaces,
) -> None:
    slow = run_bash(spaces, "sleep 0.6; echo slow > same.txt; cat mine.txt 2>&1 || true")
    fast = run_bash(spaces, "echo fast > same.txt; echo fast > mine.txt")

    slow_result, fast_result = await asyncio.gather(slow, fast)

    assert fast_result["files"] == [
        {"path": "mine.txt", "change": "written"},
        {"path": "same.txt", "change": "written"},
    ]
    assert "No such file" in slow_result["stdout"]  # its copy was made before fast wrote
    ws = spaces.context("c1").workspace
    assert ws is not None
    assert (await ws.read("same.txt"))[1] == b"slow\n"
    assert (await ws.read("mine.txt"))[1] == b"fast\n"  # not deleted by the slower call


async def test_without_bubblewrap_the_model_gets_an_error_and_nothing_runs(
    spaces: Workspaces, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    ctx = RunContext(
        conversation_id="c1",
        user_id="alice",
        session_id="s1",
        message_id="m1",
        message="hi",
        history=[],
        settings=spaces.settings or Settings(),
        cancelled=lambda: False,
        workspace=spaces.context("c1").workspace,
    )
    call = ToolCall("call_1", "bash", json.dumps({"command": "touch ran"}))

    result = await call_tool(ctx, load_tools("sandbox"), call)

    assert result.is_error
    assert "apt-get install bubblewrap" in result.content
    assert spaces.changes == []


async def test_the_demo_runs_bash_and_streams_the_file_it_wrote(api) -> None:
    """`TURNSTREAM_TOOLS=basic,sandbox,web`: the README's demo, through the API."""
    script = (
        "python3 -c 'print(6*7)'; echo '<svg xmlns=\"http://www.w3.org/2000/svg\"/>' > chart.svg"
    )
    async with api(tools="basic,sandbox,web") as (http, headers, _):
        cid = (await http.post("/api/v1/conversations", headers=headers)).json()["id"]
        sent = await http.post(
            f"/api/v1/conversations/{cid}/message/",
            data={"content": f"/tool bash {json.dumps({'command': script})}"},
            headers=headers,
        )
        events = parse_sse(sent.text)
        (call,) = [e.data for e in events if e.event == "tool_call"]
        (result,) = [e.data for e in events if e.event == "tool_result"]
        (file_event,) = [e.data for e in events if e.event == "file"]
        assert json.loads(call["arguments"]) == {"command": script}
        assert json.loads(result["content"])["stdout"] == "42\n"
        assert (file_event["path"], file_event["mediaType"]) == ("chart.svg", "image/svg+xml")
        downloaded = await http.get(file_event["url"])  # the signed link, no bearer token
        assert downloaded.content.startswith(b"<svg")
        assert events[-1].data["status"] == "completed"
