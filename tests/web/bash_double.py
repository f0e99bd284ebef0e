"""A stand-in for the `bash` tool (turnstream/agents/sandbox_tools.py), for the page tests.

The same name, arguments and result shape as the real tool, with no sandbox (no
bubblewrap): it runs nothing, each command of `RESULTS` has its result ready. Any
other command fails as the real tool does when it cannot make a sandbox, so the
result is an error string, not JSON. Registered as `TURNSTREAM_TOOLS=bash_double:bash`,
with tests/web on the server's PYTHONPATH.
"""

from __future__ import annotations

import json
from typing import Any

# Markup in the output must show as text.
MAKE_CHART = "python3 make_chart.py --title '<b>sales</b>'"
FAILING = "grep -r needle . || exit 3"
SLOW = "sleep 600"

RESULTS: dict[str, dict[str, Any]] = {
    MAKE_CHART: {
        "exitCode": 0,
        "stdout": "chart: <b>sales</b>\n  3 bars\n",
        "stderr": "warning: no font, using the default\n",
        "limit": None,
        "files": [
            {"path": "out/chart.png", "change": "written"},
            {"path": "draft.txt", "change": "deleted"},
        ],
        "notStored": [{"path": "cache/big.bin", "why": "over the limit for one file"}],
    },
    FAILING: {
        "exitCode": 3,
        "stdout": "",
        "stderr": "grep: ./locked: Permission denied\n",
        "limit": None,
        "files": [],
        "notStored": [],
        "filesError": "the workspace would hold more than 100 files",
    },
    # Stopped by a limit: no exit code, and (as the real tool) no files at all.
    SLOW: {
        "exitCode": None,
        "stdout": "started\n",
        "stderr": "",
        "limit": "the wall time of 30 s (TURNSTREAM_SANDBOX_TIMEOUT_SECONDS)",
    },
}


class SandboxUnavailable(Exception):
    """As turnstream.sandbox's: there is no sandbox to run the command in."""


async def bash(command: str, timeout: float | None = None) -> str:  # noqa: ASYNC109
    """Run a bash command in a sandbox (a test double: it runs nothing).

    Args:
        command: the command, as for `bash -c`.
        timeout: seconds before the command is killed.
    """
    if command not in RESULTS:
        raise SandboxUnavailable("bubblewrap is not installed")
    return json.dumps(RESULTS[command])
