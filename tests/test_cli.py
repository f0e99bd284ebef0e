"""The `turnstream` command as a newcomer types it (issue 10: the first hour on a fresh machine).

Each test asserts what a user sees: the exit code, stdout, stderr, the files left
behind. `serve`, `worker` and `--help` run as the real `python -m turnstream`, in a
subprocess; the short commands (`token …`, `migrate`) run in this process through
typer's runner, the same code without a second of interpreter start-up each, which
the suite spent forty times over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from alembic import command
from helpers import free_port, wait_until
from servers import Server
from sqlalchemy import insert
from sse import parse_sse
from typer.testing import CliRunner

from turnstream.cli import app
from turnstream.store import users
from turnstream.store.db import create_engine, session_factory
from turnstream.store.migrate import alembic_config, head_revision
from turnstream.store.models import ApiToken, User

# Embedded mode with every storage setting at its default, whatever the caller's environment.
DEFAULTS = {"TURNSTREAM_DATABASE_URL": "", "TURNSTREAM_DATA_DIR": "", "TURNSTREAM_REDIS_URL": ""}
SECRET = "s3cretpw"


def _turnstream(
    *args: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    if args[0] in ("serve", "worker", "--help"):
        return subprocess.run(
            [sys.executable, "-m", "turnstream", *args],
            env={**os.environ, **env},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
        )
    with contextlib.chdir(cwd or os.getcwd()):
        result = CliRunner().invoke(app, list(args), env=env)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        # What the process would have printed on its way out.
        stderr += "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, stderr)


def _assert_short_failure(result: subprocess.CompletedProcess[str]) -> None:
    """Exit code 1 and a line or two on stderr: no traceback, nothing on stdout."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert 1 <= len(result.stderr.strip().splitlines()) <= 2, result.stderr
    assert result.stdout == ""


def _status(url: str, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{url}/api/v1/conversations", headers=headers, timeout=10).status_code


def test_help_lists_the_commands():
    result = _turnstream("--help", env={})
    assert result.returncode == 0
    for name in ("serve", "worker", "migrate", "token"):
        assert name in result.stdout
    tokens = _turnstream("token", "--help", env={})
    for name in ("create", "list", "revoke"):
        assert name in tokens.stdout


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
    assert "First start" not in server.output()


def test_token_create_in_an_empty_directory_prepares_the_database_serve_uses(tmp_path, monkeypatch):
    """Finding 2: it used to fail with `no such table: users` and leave an empty turnstream.db."""
    home = (tmp_path / "project").resolve()
    home.mkdir()
    created = _turnstream("token", "create", "alice", env=DEFAULTS, cwd=home)
    assert created.returncode == 0, created.stderr
    assert "Traceback" not in created.stderr
    token = created.stdout.strip()
    assert token.startswith("ts_") and created.stdout == f"{token}\n"  # the token, alone
    database = home / ".turnstream" / "turnstream.db"
    assert f"SQLite database {database}" in created.stderr
    assert sorted(p.name for p in home.iterdir()) == [".turnstream"]  # no ./turnstream.db

    # `serve` from the same directory with the same environment opens the same database.
    monkeypatch.chdir(home)
    with Server(DEFAULTS, tmp_path / "serve.log") as server:
        assert _status(server.url, token) == 200
        assert "First start" not in server.output()  # alice exists: no demo user
        assert f"Database: SQLite database {database}" in server.output()


def test_token_list_shows_no_secret_and_revoke_gets_401_from_a_running_server(tmp_path):
    """Tokens can be listed and revoked; a running server refuses a revoked one in time."""
    env = {
        **DEFAULTS,
        "TURNSTREAM_DATA_DIR": str(tmp_path / "data"),
        # The servers' token cache: a revoke must show through it, within this time.
        "TURNSTREAM_TOKEN_CACHE_SECONDS": "2",
    }

    def create(user: str) -> str:
        result = _turnstream("token", "create", user, env=env)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    alice, alice2, bob = create("alice"), create("alice"), create("bob")

    listed = _turnstream("token", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.splitlines()
    assert header.split() == ["USER", "TOKEN", "ID", "STARTS", "WITH", "CREATED", "(UTC)"]
    rows = [line.split() for line in lines]
    assert sorted(row[0] for row in rows) == ["alice", "alice", "bob"]
    for token in (alice, alice2, bob):
        assert token not in listed.stdout + listed.stderr
        assert token[len("ts_") :] not in listed.stdout  # not even the random part
    assert sorted(row[2] for row in rows) == sorted(f"{t[:7]}…" for t in (alice, alice2, bob))
    ids = {row[2]: row[1] for row in rows}
    only_bob = _turnstream("token", "list", "bob", env=env)
    assert [line.split()[0] for line in only_bob.stdout.splitlines()[1:]] == ["bob"]

    with Server(env, tmp_path / "serve.log") as server:
        for token in (alice, alice2, bob):
            assert _status(server.url, token) == 200  # now in the server's token cache
        by_id = _turnstream("token", "revoke", ids[f"{alice[:7]}…"], env=env)
        assert by_id.returncode == 0, by_id.stderr
        assert "alice" in by_id.stdout
        assert "TURNSTREAM_TOKEN_CACHE_SECONDS" in by_id.stderr
        by_value = _turnstream("token", "revoke", bob, env=env)
        assert by_value.returncode == 0, by_value.stderr
        assert "bob" in by_value.stdout and bob not in by_value.stdout + by_value.stderr
        wait_until(
            lambda: _status(server.url, alice) == 401 and _status(server.url, bob) == 401,
            timeout=2 + 10,
            what="the revoked tokens to get 401",
        )
        assert _status(server.url, alice2) == 200

    again = _turnstream("token", "revoke", alice, env=env)
    _assert_short_failure(again)
    assert alice not in again.stderr and "token list" in again.stderr
    left = _turnstream("token", "list", env=env)
    assert [line.split()[1] for line in left.stdout.splitlines()[1:]] == [ids[f"{alice2[:7]}…"]]


def test_token_list_where_there_is_no_database_says_where_it_looked(tmp_path):
    elsewhere = tmp_path.resolve()
    for args in (("token", "list"), ("token", "revoke", "x")):
        result = _turnstream(*args, env=DEFAULTS, cwd=elsewhere)
        _assert_short_failure(result)
        assert str(elsewhere / ".turnstream" / "turnstream.db") in result.stderr
        assert "turnstream serve" in result.stderr
    assert list(elsewhere.iterdir()) == []  # looking created nothing


@pytest.mark.parametrize(
    "args",
    [("migrate",), ("token", "create", "alice"), ("serve", "--port", "{port}")],
    ids=["migrate", "token-create", "serve"],
)
def test_an_unreachable_postgresql_is_a_line_without_the_password(tmp_path, args):
    """Finding 3: a refused connection used to end in a 536-line traceback."""
    url = f"postgresql+asyncpg://turnstream:{SECRET}@127.0.0.1:{free_port()}/turnstream"
    env = {
        **DEFAULTS,
        "TURNSTREAM_DATABASE_URL": url,
        "TURNSTREAM_DATA_DIR": str(tmp_path / "data"),
    }
    result = _turnstream(*(a.format(port=free_port()) for a in args), env=env)
    _assert_short_failure(result)
    assert url.replace(SECRET, "***") in result.stderr
    assert SECRET not in result.stderr
    assert "TURNSTREAM_DATABASE_URL" in result.stderr
    assert not (tmp_path / "data").exists()  # `serve` started no Valkey


@pytest.mark.parametrize(
    "args", [("serve", "--no-worker", "--port", "{port}"), ("worker",)], ids=["serve", "worker"]
)
def test_an_unreachable_redis_is_a_line_without_the_password(tmp_path, args):
    url = f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"
    env = {
        **DEFAULTS,
        "TURNSTREAM_REDIS_URL": url,
        "TURNSTREAM_DATA_DIR": str(tmp_path / "data"),
    }
    result = _turnstream(*(a.format(port=free_port()) for a in args), env=env, cwd=tmp_path)
    _assert_short_failure(result)
    assert url.replace(SECRET, "***") in result.stderr
    assert SECRET not in result.stderr
    assert "TURNSTREAM_REDIS_URL" in result.stderr
    assert not (tmp_path / "data").exists()  # found before the database was touched


def test_serve_on_a_busy_port_stops_before_starting_anything(tmp_path):
    """Finding 4: it used to start Valkey and migrate before failing with [Errno 98]."""
    env = {**DEFAULTS, "TURNSTREAM_DATA_DIR": str(tmp_path / "data")}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        result = _turnstream("serve", "--port", str(port), env=env, cwd=tmp_path)
        took = time.monotonic() - started
    _assert_short_failure(result)
    assert f"Port {port}" in result.stderr and "--port" in result.stderr
    assert sorted(tmp_path.iterdir()) == []  # no data directory, no Valkey files, no database
    assert took < 5, f"took {took:.1f} s"  # ~0.3 s here: no start-up work was done


def test_a_second_serve_on_one_data_directory_is_a_line_naming_the_first(tmp_path):
    """Two servers writing one append-only file would corrupt it; the second says so."""
    env = {**DEFAULTS, "TURNSTREAM_DATA_DIR": str(tmp_path / "data")}
    with Server(env, tmp_path / "first.log"):
        result = _turnstream("serve", "--port", str(free_port()), env=env, cwd=tmp_path)
    _assert_short_failure(result)
    assert "in use by another turnstream serve" in result.stderr
    assert "TURNSTREAM_DATA_DIR" in result.stderr


def test_a_bad_setting_is_one_line(tmp_path):
    result = _turnstream("migrate", env={**DEFAULTS, "TURNSTREAM_DEMO_WORDS": "many"})
    _assert_short_failure(result)
    assert "TURNSTREAM_DEMO_WORDS" in result.stderr


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_migration_0002_keeps_old_tokens_and_an_old_schema_is_named(request, dialect):
    """Migration 0002 (token prefixes) on a database with tokens made at 0001.

    SQLite is migrated by `token create` itself, as by `serve`; PostgreSQL is left to
    `turnstream migrate`, and the other commands say so.
    """
    url = request.getfixturevalue(f"{dialect}_url")
    env = {**DEFAULTS, "TURNSTREAM_DATABASE_URL": url}
    command.upgrade(alembic_config(url), "0001")
    old_token = "ts_made-before-0002"
    asyncio.run(_insert_at_0001(url, old_token))

    created = _turnstream("token", "create", "alice", env=env)
    if dialect == "postgres":
        _assert_short_failure(created)
        assert "revision 0001" in created.stderr and "turnstream migrate" in created.stderr
        migrated = _turnstream("migrate", env=env)
        assert migrated.returncode == 0, migrated.stderr
        assert f"schema revision {head_revision()}" in migrated.stdout
        created = _turnstream("token", "create", "alice", env=env)
    assert created.returncode == 0, created.stderr

    listed = _turnstream("token", "list", env=env)
    rows = sorted(line.split() for line in listed.stdout.splitlines()[1:])
    assert [(row[0], row[2]) for row in rows] == [
        ("alice", f"{created.stdout.strip()[:7]}…"),
        ("old", "-"),  # made before 0002: no prefix known
    ]
    assert asyncio.run(_user_for(url, old_token)) == "old"


async def _insert_at_0001(url: str, token: str) -> None:
    """User `old` and a token of theirs, written as turnstream did before 0002 (no prefix)."""
    engine = create_engine(url)
    now = datetime.now(UTC)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(User.__table__).values(id="old", created_at=now))
            await conn.execute(
                insert(ApiToken.__table__).values(
                    id="t-old", user_id="old", token_hash=users.hash_token(token), created_at=now
                )
            )
    finally:
        await engine.dispose()


async def _user_for(url: str, token: str) -> str | None:
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as db:
            user = await users.user_for_token(db, token=token)
            return user.id if user else None
    finally:
        await engine.dispose()


def test_no_worker_without_a_shared_redis_is_refused_with_a_hint(tmp_path):
    result = _turnstream(
        "serve",
        "--no-worker",
        env={"TURNSTREAM_REDIS_URL": "", "TURNSTREAM_DATA_DIR": str(tmp_path)},
    )
    assert result.returncode == 1
    assert "TURNSTREAM_REDIS_URL" in result.stderr


@pytest.mark.parametrize("name", ["serve", "worker"])
def test_the_sandbox_configured_without_bubblewrap_is_one_line_and_exit_1(
    tmp_path: Path, redis_url: str, name: str
) -> None:
    """Fail closed: no setting runs the bash tool's commands unsandboxed, so nothing starts."""
    env = {
        **DEFAULTS,
        "TURNSTREAM_DATA_DIR": str(tmp_path / "data"),
        "TURNSTREAM_TOOLS": "basic,sandbox",
        "TURNSTREAM_REDIS_URL": redis_url if name == "worker" else "",
        "PATH": "/nonexistent",  # bwrap is on no folder of it
    }

    flags = ["--port", str(free_port())] if name == "serve" else []

    result = _turnstream(name, *flags, env=env, cwd=tmp_path)

    _assert_short_failure(result)
    assert len(result.stderr.strip().splitlines()) == 1
    assert "TURNSTREAM_TOOLS=basic,sandbox: it has the sandbox (bash)" in result.stderr
    assert "apt-get install bubblewrap" in result.stderr
    assert sorted(tmp_path.iterdir()) == []  # nothing was started or written


def test_serve_with_the_sandbox_runs_a_command_where_bubblewrap_works(tmp_path: Path) -> None:
    """Through the real `serve` (its event loop is uvloop's, not asyncio's)."""
    data = tmp_path / "data"
    env = {**DEFAULTS, "TURNSTREAM_DATA_DIR": str(data), "TURNSTREAM_TOOLS": "sandbox"}
    token = _turnstream("token", "create", "alice", env=env).stdout.strip()
    with Server(env, tmp_path / "serve.log") as server:
        headers = {"Authorization": f"Bearer {token}"}
        base = f"{server.url}/api/v1/conversations"
        cid = httpx.post(base, headers=headers, timeout=10).json()["id"]
        command = json.dumps({"command": "python3 -c 'print(6*7)'"})
        sent = httpx.post(
            f"{base}/{cid}/message/", data={"content": f"/tool bash {command}"}, headers=headers,
            timeout=30,
        )  # fmt: skip
    (result,) = [e.data for e in parse_sse(sent.text) if e.event == "tool_result"]
    assert result["isError"] is False, result["content"]
    assert json.loads(result["content"])["stdout"] == "42\n"
