"""The test servers are real: guards the fixtures every other test relies on."""

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
