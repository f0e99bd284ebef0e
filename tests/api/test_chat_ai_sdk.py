"""The real AI SDK (npm `ai`, tests/node/) against a real `turnstream serve`: `node --test`.

scripts/test installs tests/node/ with `npm ci` when node is on PATH. Without
node or npm this test skips, saying so; with node but without the installed
packages it fails, saying how to install them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from servers import Server, create_token

NODE_TESTS = Path(__file__).resolve().parent.parent / "node"
# Each reply: 40 words, 60 ms apart (about 2.4 s), so that a client can leave mid-reply.
SLOW_DEMO = {"TURNSTREAM_DEMO_WORDS": "40", "TURNSTREAM_DEMO_DELAY_MS": "60"}


def test_the_ai_sdk_transport_sends_reconnects_reads_tools_and_approvals(redis_url, tmp_path):
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not on PATH: the AI SDK test needs Node 20 or newer")
    if not (NODE_TESTS / "node_modules" / "ai").is_dir():
        pytest.fail(
            f"the AI SDK is not installed: run `npm ci --no-audit --no-fund` in {NODE_TESTS} "
            "(scripts/test does that when TURNSTREAM_TEST_SKIP_INSTALL is unset)"
        )
    database_url = f"sqlite+aiosqlite:///{tmp_path}/ts.db"
    env = {
        "TURNSTREAM_REDIS_URL": redis_url,
        "TURNSTREAM_DATABASE_URL": database_url,
        "TURNSTREAM_DATA_DIR": str(tmp_path / "data"),
        "TURNSTREAM_TOOLS": "basic,workspace",
        "TURNSTREAM_TOOL_APPROVAL": "calculator",  # chat.test.js answers it, as useChat would
        **SLOW_DEMO,
    }
    with Server(env, tmp_path / "serve.log") as server:
        token = create_token(database_url, "nadia")
        created = httpx.post(
            f"{server.url}/api/v1/conversations", headers={"Authorization": f"Bearer {token}"}
        )
        assert created.status_code == 201, created.text
        result = _node_test(
            node,
            {
                "TURNSTREAM_URL": server.url,
                "TURNSTREAM_TOKEN": token,
                "TURNSTREAM_CONVERSATION": created.json()["id"],
            },
        )
        log = server.output()
    assert result.returncode == 0, (
        f"node --test exited with {result.returncode}\n--- stdout\n{result.stdout}"
        f"\n--- stderr\n{result.stderr}\n--- the server's log\n{log}"
    )
    assert "\n# fail 0" in result.stdout, result.stdout
    assert re.search(r"^# pass [1-9]", result.stdout, re.M), result.stdout  # some did run


def _node_test(node: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`node --test` on tests/node/chat.test.js; a hang ends it after 120 s with what it wrote."""
    args = [node, "--test", "--test-reporter=tap", str(NODE_TESTS / "chat.test.js")]
    try:
        return subprocess.run(
            args,
            cwd=NODE_TESTS,
            env={"PATH": os.environ.get("PATH", ""), **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired as exc:
        out = _text(exc.stdout) + "\n(timed out after 120 s)"
        return subprocess.CompletedProcess(args, -1, out, _text(exc.stderr))


def _text(output: str | bytes | None) -> str:
    """What a timed-out child wrote (bytes even with text=True, on some Pythons)."""
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""
