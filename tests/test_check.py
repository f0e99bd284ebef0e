"""A misconfigured deployment says so at start, and `turnstream check` says so beforehand.

Each mistake is one a new user makes, one setting at a time, in a fresh directory:
`serve` exits 1 within seconds with a line naming the variable, no traceback,
and nothing created (no database, no user, no token, no Valkey files).
`turnstream check` passes on the embedded defaults and fails on each, naming it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import free_port
from typer.testing import CliRunner

from turnstream.cli import app

# Embedded defaults whatever the caller's environment (tests/test_cli.py does the same).
DEFAULTS = {"TURNSTREAM_DATABASE_URL": "", "TURNSTREAM_DATA_DIR": "", "TURNSTREAM_REDIS_URL": ""}
MISTAKES = {
    "a missing agent module": ("TURNSTREAM_AGENT", "nosuch.module:agent"),
    "a missing agent attribute": ("TURNSTREAM_AGENT", "turnstream.agents.demo:no_such_attribute"),
    "an unknown tool set": ("TURNSTREAM_TOOLS", "basic,nosuchset"),
    "a missing tools module": ("TURNSTREAM_TOOLS", "nosuch.module:TOOLS"),
    "a negative interval": ("TURNSTREAM_PING_SECONDS", "-5"),
    "a malformed JWKS URL": ("TURNSTREAM_JWKS_URL", "keys.example.com/jwks"),
    "an unsupported database URL": ("TURNSTREAM_DATABASE_URL", "mysql://app:s3cret@db/app"),
    "an unknown log format": ("TURNSTREAM_LOG_FORMAT", "xml"),
    "a sandbox Python that is not there": ("TURNSTREAM_SANDBOX_PYTHON", "/nonexistent/venv"),
    "a missing MCP config file": ("TURNSTREAM_MCP_CONFIG", "mcp.json"),
    "a missing tool policy": ("TURNSTREAM_TOOL_POLICY", "nosuch.module:policy"),
}


def test_a_misconfigured_serve_says_what_is_wrong_and_creates_nothing(
    fresh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In this process: each mistake stops `serve` before anything starts. (One python start-up
    # each cost a second of CPU; the real process is the next test's.)
    for n, (mistake, (variable, value)) in enumerate(MISTAKES.items()):
        directory = fresh / str(n)
        directory.mkdir()
        monkeypatch.chdir(directory)
        result = CliRunner().invoke(
            app, ["serve", "--port", str(free_port())], env={**DEFAULTS, variable: value}
        )
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 1, (mistake, result.stderr)
        assert isinstance(result.exception, SystemExit), (mistake, result.exception)
        assert 1 <= len(lines) <= 2 and lines[0].startswith(f"{variable}="), (mistake, lines)
        assert result.stdout == "", mistake
        assert "s3cret" not in result.stderr, mistake  # a password is never shown
        assert sorted(directory.iterdir()) == [], mistake  # nothing was created


def test_a_misconfigured_serve_process_exits_1_at_once_with_one_line(tmp_path: Path) -> None:
    variable, value = MISTAKES["a missing tool policy"]
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "turnstream", "serve", "--port", str(free_port())],
        env={**os.environ, **DEFAULTS, variable: value},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"{variable}={value}: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert sorted(tmp_path.iterdir()) == []
    assert took < 20, took


def test_a_broken_agent_says_which_and_why(fresh: Path) -> None:
    env = {"TURNSTREAM_AGENT": "turnstream.agents.demo:no_such_attribute"}

    result = CliRunner().invoke(app, ["check"], env=env)

    assert result.exit_code == 1
    assert "FAIL agent and tools: 1 problem(s)" in result.stdout
    assert result.stderr.strip() == (
        "TURNSTREAM_AGENT=turnstream.agents.demo:no_such_attribute: cannot load it "
        "(AttributeError: module 'turnstream.agents.demo' has no attribute "
        "'no_such_attribute'); give demo, openai, or package.module:callable of an "
        "importable module (docs/agents.md)."
    )


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in [*DEFAULTS, *(v for v, _ in MISTAKES.values())]:
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_check_with_debug_shows_the_traceback_of_a_failed_import(fresh: Path) -> None:
    env = {"TURNSTREAM_AGENT": "nosuch.module:agent"}

    result = CliRunner().invoke(app, ["check", "--debug"], env=env)

    assert result.exit_code == 1
    assert result.stderr.startswith("TURNSTREAM_AGENT=nosuch.module:agent: cannot load it")
    assert "Traceback (most recent call last)" in result.stderr
    assert "ModuleNotFoundError: No module named 'nosuch'" in result.stderr


def test_check_passes_on_the_embedded_defaults(fresh: Path) -> None:
    result = CliRunner().invoke(app, ["check"])

    assert result.exit_code == 0, result.output
    assert "TURNSTREAM_AGENT                         demo" in result.stdout
    assert "ok   database: SQLite database" in result.stdout
    assert "ok   redis: embedded" in result.stdout
    assert result.stderr == ""
    assert sorted(fresh.iterdir()) == []  # checking creates nothing


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_check_fails_naming_the_variable(fresh: Path, mistake: str) -> None:
    variable, value = MISTAKES[mistake]

    result = CliRunner().invoke(app, ["check"], env={variable: value})

    assert result.exit_code == 1
    assert result.stderr.startswith(f"{variable}="), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # once, though two checks may find it
    assert "Traceback" not in result.output and "s3cret" not in result.output


def test_check_shows_where_each_setting_came_from_with_secrets_masked(fresh: Path) -> None:
    env = {"TURNSTREAM_OPENAI_API_KEY": "sk-secret", "TURNSTREAM_DEMO_WORDS": "7"}

    result = CliRunner().invoke(app, ["check"], env=env)

    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[1:]
            if line.startswith("  TURNSTREAM_")}  # fmt: skip
    assert rows["TURNSTREAM_OPENAI_API_KEY"] == ["***", "environment"]
    assert rows["TURNSTREAM_DEMO_WORDS"] == ["7", "environment"]
    assert rows["TURNSTREAM_DEMO_DELAY_MS"] == ["40", "default"]
    assert "sk-secret" not in result.output


def test_check_starts_each_mcp_server_and_names_the_one_that_fails(fresh: Path) -> None:
    server = Path(__file__).parent / "mcp" / "server.py"
    config = fresh / "mcp.json"
    servers = {
        "good": {"command": sys.executable, "args": [str(server)]},
        "broken": {"command": str(fresh / "no-such-server")},
    }
    config.write_text(json.dumps({"mcpServers": servers}))

    result = CliRunner().invoke(app, ["check"], env={"TURNSTREAM_MCP_CONFIG": str(config)})

    assert result.exit_code == 1
    assert "FAIL mcp: 1 problem(s)" in result.stdout
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"TURNSTREAM_MCP_CONFIG={config}: MCP server 'broken'"), line
    del servers["broken"]
    config.write_text(json.dumps({"mcpServers": servers}))
    fine = CliRunner().invoke(app, ["check"], env={"TURNSTREAM_MCP_CONFIG": str(config)})
    assert fine.exit_code == 0, fine.output
    assert f"ok   mcp: every server in {config} started and listed its tools" in fine.stdout
