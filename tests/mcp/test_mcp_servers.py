"""MCP servers that start slowly, fail to start, or outlive nothing: none of them hangs a run,
and a stdio server's process ends with turnstream's."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from helpers import wait_until
from mcp_support import stdio, write_config

from turnstream.agents.tools import offered_tools
from turnstream.config import Settings
from turnstream.mcp.catalog import mcp_problems

MISSING = {"command": "/nonexistent/mcp-server"}
EXITS = {"command": sys.executable, "args": ["-c", "import sys; sys.exit('no API key')"]}


def mcp_names(tools: Mapping[str, object]) -> set[str]:
    return {name for name in tools if name.startswith("mcp__")}


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "turnstream.mcp"]


async def test_a_server_slow_to_start_works_within_the_start_limit(tmp_path: Path) -> None:
    config = write_config(tmp_path / "mcp.json", {"slow": stdio("--slow", "0.5")})

    tools = await offered_tools(Settings(mcp_config=config, mcp_start_seconds=10.0))

    assert "mcp__slow__echo" in tools
    assert await tools["mcp__slow__echo"].function(text="late") == "late"


async def test_a_server_past_the_start_limit_is_left_out_with_a_line_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = write_config(tmp_path / "mcp.json", {"late": stdio("--slow", "60")})
    settings = Settings(mcp_config=config, mcp_start_seconds=0.5)

    async with asyncio.timeout(5):
        tools = await offered_tools(settings)

    assert mcp_names(tools) == set()
    assert warnings_of(caplog) == [
        "MCP server 'late' did not start and list its tools within 0.5 s "
        "(TURNSTREAM_MCP_START_SECONDS); it is tried again after 30 s"
    ]


async def test_servers_that_fail_to_start_are_left_out_and_the_others_work(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    servers = {"missing": MISSING, "exits": EXITS, "test": stdio()}
    config = write_config(tmp_path / "mcp.json", servers)
    caplog.set_level(logging.WARNING, "turnstream.mcp")

    tools = await offered_tools(Settings(mcp_config=config))
    again = await offered_tools(Settings(mcp_config=config))  # not tried again so soon

    assert {n.split("__")[1] for n in mcp_names(tools)} == {"test"}
    assert mcp_names(again) == mcp_names(tools)
    assert await tools["mcp__test__add"].function(a=1, b=2) == "3"
    missing, exits = sorted(warnings_of(caplog), key=lambda line: "missing" not in line)
    assert missing.startswith("MCP server 'missing' did not start: FileNotFoundError: ")
    assert exits.startswith("MCP server 'exits' did not start: it closed the connection")
    assert len(warnings_of(caplog)) == 2


def test_check_starts_every_server_and_names_those_that_do_not_start(tmp_path: Path) -> None:
    config = write_config(tmp_path / "mcp.json", {"missing": MISSING, "exits": EXITS})

    problems = mcp_problems(Settings(mcp_config=config))

    assert problems == [
        f"TURNSTREAM_MCP_CONFIG={config}: MCP server 'missing' did not start: FileNotFoundError: "
        "[Errno 2] No such file or directory: '/nonexistent/mcp-server'.",
        f"TURNSTREAM_MCP_CONFIG={config}: MCP server 'exits' did not start: it closed the "
        "connection (it exited: its error output may say why).",
    ]
    assert mcp_problems(Settings(mcp_config=tmp_path / "none.json")) == [
        f"TURNSTREAM_MCP_CONFIG={tmp_path / 'none.json'}: there is no such file; "
        'give the path of a JSON file with "mcpServers".'
    ]


_RUN = """
import asyncio, os, sys
from turnstream.agents.tools import offered_tools
from turnstream.config import Settings

async def main():
    tools = await offered_tools(Settings(mcp_config=sys.argv[1]))
    print(await tools["mcp__test__pid"].function(), flush=True)
    if sys.argv[2] == "crash":
        os._exit(1)  # no clean-up at all

asyncio.run(main())
"""


def test_a_stdio_server_ends_with_the_process_that_started_it(tmp_path: Path) -> None:
    """Whether that process returns (asyncio.run stops the servers) or crashes (the server
    reads the end of its stdin): nothing is killed by hand."""
    config = write_config(tmp_path / "mcp.json", {"test": stdio()})
    ends = ["return", "crash"]
    runs = [
        subprocess.Popen([sys.executable, "-c", _RUN, str(config), end], stdout=subprocess.PIPE)
        for end in ends
    ]

    pids = [int(run.communicate(timeout=60)[0]) for run in runs]

    for end, pid in zip(ends, pids, strict=True):
        wait_until(lambda: not _alive(pid), timeout=10, what=f"the server to exit ({end})")  # noqa: B023


def _alive(pid: int) -> bool:
    """Running (a zombie no one has reaped yet has ended)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"
