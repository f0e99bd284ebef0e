"""The `turnstream` command as a newcomer types it."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
from servers import Server


def _turnstream(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "turnstream", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_lists_the_commands():
    result = _turnstream("--help", env={})
    assert result.returncode == 0
    for command in ("serve", "worker", "migrate", "token"):
        assert command in result.stdout


def test_token_create_prints_a_token_the_server_accepts(tmp_path):
    env = {
        "TURNSTREAM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/ts.db",
        "TURNSTREAM_DATA_DIR": str(tmp_path / "data"),
        "TURNSTREAM_REDIS_URL": "",
    }
    assert _turnstream("migrate", env=env).returncode == 0
    created = _turnstream("token", "create", "alice", "--email", "a@example.com", env=env)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("ts_")
    bad = _turnstream("token", "create", "not valid!", env=env)
    assert bad.returncode != 0 and "user id" in bad.stderr
    with Server(env, tmp_path / "serve.log") as server:
        headers = {"Authorization": f"Bearer {token}"}
        created_conv = httpx.post(f"{server.url}/api/v1/conversations", headers=headers)
        assert created_conv.status_code == 201
        assert created_conv.json()["user_id"] == "alice"
    # The database was not empty, so no demo user was made and no token printed.
    assert "ts_" not in server.output()


def test_no_worker_without_a_shared_redis_is_refused_with_a_hint(tmp_path):
    result = _turnstream(
        "serve",
        "--no-worker",
        env={"TURNSTREAM_REDIS_URL": "", "TURNSTREAM_DATA_DIR": str(tmp_path)},
    )
    assert result.returncode == 1
    assert "TURNSTREAM_REDIS_URL" in result.stderr
