"""The `turnstream` command: serve, worker, token create, migrate."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Annotated

import typer

from turnstream.config import Settings
from turnstream.ids import is_user_id

app = typer.Typer(help="turnstream: resumable background runs for AI chat.", no_args_is_help=True)
token_app = typer.Typer(help="Manage API tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")


def _fail(message: str) -> typer.Exit:
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Leave runs to `turnstream worker` processes.")
    ] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Start the API. With no TURNSTREAM_REDIS_URL it brings its own Redis (embedded mode)."""
    import uvicorn

    from turnstream.api.app import create_app
    from turnstream.api.http_protocol import HEAD_CAP_FACTOR, bounded_httptools

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    settings = Settings()
    if no_worker and settings.redis_url is None:
        raise _fail("--no-worker needs TURNSTREAM_REDIS_URL: the workers must share a Redis.")
    if settings.database_url.startswith("sqlite"):
        from turnstream.store.migrate import upgrade

        upgrade(settings.database_url)
    token = asyncio.run(_first_run_token(settings))
    if token is not None:
        typer.secho("First start: created user 'demo'. Its token (shown once):", bold=True)
        typer.echo(f"  {token}")
        typer.echo(
            f'  curl -H "Authorization: Bearer {token}" http://{host}:{port}/api/v1/conversations'
        )
    uvicorn.run(
        create_app(settings, worker=not no_worker),
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=5,
        # httptools alone reads a request head of any size.
        http=bounded_httptools(HEAD_CAP_FACTOR * settings.max_header_bytes),
    )


async def _first_run_token(settings: Settings) -> str | None:
    """On an empty database, create user `demo` and return a token for it."""
    from sqlalchemy.exc import DBAPIError

    from turnstream.store import users
    from turnstream.store.db import create_engine, session_factory

    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as db:
            if await users.count_users(db) > 0:
                return None
            return await users.create_token(db, user_id="demo")
    except DBAPIError as exc:
        raise _fail(
            f"The database is not ready ({type(exc.orig).__name__}). "
            "For PostgreSQL, run `turnstream migrate` first."
        ) from exc
    finally:
        await engine.dispose()


@app.command()
def worker(
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    concurrency: Annotated[int, typer.Option(help="Runs at once per process.")] = 100,
) -> None:
    """Execute runs from the Redis Streams queue (needs TURNSTREAM_REDIS_URL)."""
    from taskiq.acks import AcknowledgeType
    from taskiq.cli.worker.args import WorkerArgs
    from taskiq.cli.worker.run import run_worker

    settings = Settings()
    if settings.redis_url is None:
        raise _fail("turnstream worker needs TURNSTREAM_REDIS_URL: it takes runs from Redis.")
    args = WorkerArgs(
        broker="turnstream.runs.worker:broker",
        modules=[],
        workers=workers,
        max_async_tasks=concurrency,
        # Acknowledge only after the run: a worker that dies leaves its message pending.
        ack_type=AcknowledgeType.WHEN_EXECUTED,
        # On SIGTERM taskiq stops reading the queue, waits this long for the runs in
        # flight, then shuts the broker down: our shutdown hook ends what is still going.
        wait_tasks_timeout=settings.worker_grace_seconds,
        # Bounds that hook (ending runs takes well under a second each, in parallel).
        shutdown_timeout=10,
    )
    sys.exit(run_worker(args) or 0)


@app.command()
def migrate() -> None:
    """Bring the database schema up to date (PostgreSQL; `serve` does it for SQLite)."""
    from turnstream.store.migrate import upgrade

    settings = Settings()
    upgrade(settings.database_url)
    typer.echo("Database schema is up to date.")


@token_app.command("create")
def token_create(
    user_id: Annotated[str, typer.Argument(help="1-64 characters of [A-Za-z0-9._@-].")],
    email: Annotated[str | None, typer.Option(help="The user's email.")] = None,
) -> None:
    """Create the user if needed and print a new bearer token for them."""
    if not is_user_id(user_id):
        raise _fail("A user id is 1-64 characters of [A-Za-z0-9._@-].")
    typer.echo(asyncio.run(_create_token(Settings(), user_id, email)))


async def _create_token(settings: Settings, user_id: str, email: str | None) -> str:
    from turnstream.store import users
    from turnstream.store.db import create_engine, session_factory

    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as db:
            return await users.create_token(db, user_id=user_id, email=email)
    finally:
        await engine.dispose()
