"""The test servers are real: guards the fixtures every other test relies on."""

from importlib import metadata
from pathlib import Path

import redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine


def test_redis_url_is_a_real_server(redis_url):
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping()
        assert client.info("server")["redis_version"]


async def test_postgres_url_accepts_select_1(postgres_url):
    engine = create_async_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


def test_the_environment_is_the_pinned_one():
    """scripts/test installs requirements/test.txt's versions, not last night's releases.

    A fresh machine resolves the newest of everything unpinned; pytest 9.2 broke
    schemathesis that way. Refresh the pins on purpose with scripts/lock.
    """
    lock = Path(__file__).parents[1] / "requirements" / "test.txt"
    pins = dict(
        line.split(" ", 1)[0].split("==")
        for line in lock.read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert {"pytest", "fastapi", "starlette", "uvicorn", "taskiq"} <= pins.keys()
    differ = {
        name: metadata.version(name)
        for name in pins
        if _is_installed(name) and metadata.version(name) != pins[name]
    }
    assert differ == {}, f"installed versions differ from {lock}: run scripts/test"


def _is_installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True
