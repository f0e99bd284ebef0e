"""Alembic environment: runs the migrations over the async engine of the URL given."""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from turnstream.store.db import create_engine
from turnstream.store.models import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None, "migrate.alembic_config sets sqlalchemy.url"
    engine = create_engine(url)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


asyncio.run(_main())
