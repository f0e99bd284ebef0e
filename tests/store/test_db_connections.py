"""Pooled PostgreSQL connections the server closed are replaced at checkout, unseen.

A restart of PostgreSQL (or an administrator ending sessions) closes every pooled
connection. The engine does not ping each connection it checks out (a round trip
per transaction); asyncpg knows a connection the server closed without one, so the
pool drops such a connection and opens another before any statement fails.
"""

from __future__ import annotations

import asyncio

from helpers import pg_admin
from sqlalchemy import text
from sqlalchemy.engine import make_url

from turnstream.store.db import create_engine, session_factory

SESSIONS = 8


async def test_connections_the_server_closed_are_replaced_before_they_are_used(
    postgres_url: str, _postgres_base_url: str
) -> None:
    engine = create_engine(postgres_url, outages=True)
    sessions = session_factory(engine)
    name = make_url(postgres_url).database

    async def query(n: int) -> int:
        async with sessions() as db:
            # A pause while holding the connection, so that the pool opens several.
            return (
                await db.execute(text("SELECT CAST(:n AS integer) FROM pg_sleep(0.05)"), {"n": n})
            ).scalar_one()

    try:
        assert await asyncio.gather(*(query(n) for n in range(SESSIONS))) == list(range(SESSIONS))
        pg_admin(
            _postgres_base_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()",
        )
        await asyncio.sleep(0.2)  # the server's goodbye reaches the idle connections
        load = [query(n) for n in range(3 * SESSIONS)]
        assert await asyncio.gather(*load) == list(range(3 * SESSIONS))
    finally:
        await engine.dispose()
