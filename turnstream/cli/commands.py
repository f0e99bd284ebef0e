"""The commands: serve, worker, check, migrate, token create/list/revoke, and chat (chat.py).

Each one first runs the checks of `checks.py` for what it needs, then does its
work; see the package's docstring for how they report a problem.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from turnstream.cli import observe
from turnstream.cli.chat import chat
from turnstream.cli.checks import (
    check_loading,
    check_port,
    check_redis,
    fail,
    is_sqlite,
    load_settings,
    prepare_database,
    say,
    with_db,
)
from turnstream.ids import is_user_id

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")

app = typer.Typer(help="turnstream: resumable background runs for AI chat.", no_args_is_help=True)
token_app = typer.Typer(help="Manage API tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=0, max=65535)] = 8000,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Leave runs to `turnstream worker` processes.")
    ] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Start the API. With no TURNSTREAM_REDIS_URL it brings its own Redis (embedded mode)."""
    if log_level.lower() not in LOG_LEVELS:
        raise fail(f"--log-level is one of {', '.join(LOG_LEVELS)}.")
    settings = load_settings()
    if no_worker and settings.redis_url is None:
        raise fail("--no-worker needs TURNSTREAM_REDIS_URL: the workers must share a Redis.")
    # Before anything starts or is written: a busy port, an agent that does not load.
    check_port(host, port)
    check_loading(settings, runs_agents=not no_worker, debug=log_level.lower() == "debug")
    from turnstream.embedded import owner_of

    if settings.redis_url is not None:
        check_redis(settings.redis_url, cluster=settings.redis_cluster)
    elif (owner := owner_of(settings.data_dir)) is not None:
        raise fail(
            f"The data directory {settings.data_dir.resolve()} is in use by another turnstream "
            f"serve (pid {owner}). Stop it, or give this one its own TURNSTREAM_DATA_DIR."
        )

    import uvicorn

    from turnstream.api.app import create_app
    from turnstream.api.http_protocol import HEAD_CAP_FACTOR, bounded_httptools
    from turnstream.runtime import freeze_heap

    level = "DEBUG" if log_level.lower() == "trace" else log_level.upper()
    log_config = observe.serve_logs(settings, level)  # text, or TURNSTREAM_LOG_FORMAT=json
    database = prepare_database(settings, upgrade=is_sqlite(settings))
    token = with_db(settings, _first_run_token)
    if token is not None:
        _show_first_token(token, f"http://{host}:{port}")
    say(f"Database: {database}")
    if settings.redis_url is None:
        say(f"Data directory (embedded Valkey): {settings.data_dir.resolve()}")
    app = create_app(settings, worker=not no_worker, migrate=False)
    freeze_heap()
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level.lower(),
        # Above info, no access line is written: skip building one for every request.
        access_log=level in ("DEBUG", "INFO"),
        # After SIGTERM event streams end at once with a notice (api/sse.py); other
        # requests get this long. Then the lifespan's shutdown.
        timeout_graceful_shutdown=math.ceil(settings.drain_seconds),
        log_config=log_config,
        # httptools alone reads a request head of any size.
        http=bounded_httptools(HEAD_CAP_FACTOR * settings.max_header_bytes),
    )


def _show_first_token(token: str, url: str) -> None:
    typer.secho("First start: created user 'demo'. Its token (shown once):", bold=True)
    typer.echo(f"  {token}")
    typer.echo(f'  curl -H "Authorization: Bearer {token}" {url}/api/v1/conversations')
    typer.echo(f"  Chat page, signed in as demo: {url}/#token={token}")


async def _first_run_token(db: AsyncSession) -> str | None:
    """On an empty database, create user `demo` and return a token for it."""
    from turnstream.store import users

    if await users.count_users(db) > 0:
        return None
    return await users.create_token(db, user_id="demo")


@app.command()
def worker(
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1)] = 1,
    concurrency: Annotated[
        int | None,
        typer.Option(
            help="Runs at once per process [default: TURNSTREAM_WORKER_CONCURRENCY].", min=1
        ),
    ] = None,
) -> None:
    """Execute runs from the Redis Streams queue (needs TURNSTREAM_REDIS_URL)."""
    settings = load_settings()
    if settings.redis_url is None:
        raise fail("turnstream worker needs TURNSTREAM_REDIS_URL: it takes runs from Redis.")
    check_loading(settings, runs_agents=True)
    check_redis(settings.redis_url, cluster=settings.redis_cluster)
    say(f"Database: {prepare_database(settings, upgrade=False)}")

    from taskiq.acks import AcknowledgeType
    from taskiq.cli.worker.args import WorkerArgs
    from taskiq.cli.worker.run import run_worker

    args = WorkerArgs(
        broker="turnstream.runs.worker:broker",
        modules=[],
        workers=workers,
        max_async_tasks=concurrency or settings.worker_concurrency,
        # Acknowledge only after the run: a worker that dies leaves its message pending.
        ack_type=AcknowledgeType.WHEN_EXECUTED,
        # On SIGTERM taskiq stops reading the queue, waits this long for the runs in
        # flight, then shuts the broker down: our shutdown hook ends what is still going.
        wait_tasks_timeout=settings.worker_grace_seconds,
        # Bounds that hook (ending runs takes well under a second each, in parallel).
        shutdown_timeout=10,
    )
    observe.prepare_worker(settings)  # log format, TURNSTREAM_WORKER_METRICS_PORT
    sys.exit(run_worker(args) or 0)


@app.command()
def check(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of a failed import.")
    ] = False,
) -> None:
    """Check the configuration and what it needs (database, Redis, agent, tools, sandbox)."""
    from turnstream.cli.doctor import run

    sys.exit(run(load_settings(), debug=debug))


@app.command()
def migrate() -> None:
    """Bring the database schema up to date (PostgreSQL; `serve` does it for SQLite)."""
    from turnstream.store.migrate import head_revision

    database = prepare_database(load_settings(), upgrade=True)
    typer.echo(f"The {database} is up to date (schema revision {head_revision()}).")


@token_app.command("create")
def token_create(
    user_id: Annotated[str, typer.Argument(help="1-64 characters of [A-Za-z0-9._@-].")],
    email: Annotated[str | None, typer.Option(help="The user's email.")] = None,
) -> None:
    """Create the user if needed and print a new bearer token for them (stdout: the token)."""
    from turnstream.store import users

    if not is_user_id(user_id):
        raise fail("A user id is 1-64 characters of [A-Za-z0-9._@-].")
    settings = load_settings()
    # An SQLite database is created and migrated here, as `serve` would.
    database = prepare_database(settings, upgrade=is_sqlite(settings))
    token, row = with_db(settings, lambda db: users.issue_token(db, user_id=user_id, email=email))
    say(f"Token {row.id} ({row.prefix}…) for user '{user_id}' stored in the {database}.")
    typer.echo(token)


@token_app.command("list")
def token_list(
    user_id: Annotated[str | None, typer.Argument(help="Only this user's tokens.")] = None,
) -> None:
    """List tokens: user, token id, first characters, creation time (never the secret)."""
    from turnstream.store import users

    settings = load_settings()
    database = prepare_database(settings, upgrade=False)
    rows = with_db(settings, lambda db: users.list_tokens(db, user_id=user_id))
    whose = f" of user '{user_id}'" if user_id is not None else ""
    if not rows:
        say(f"No tokens{whose} in the {database}.")
        return
    table = [("USER", "TOKEN ID", "STARTS WITH", "CREATED (UTC)")] + [
        (
            row.user_id,
            row.id,
            f"{row.prefix}…" if row.prefix else "-",
            row.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        typer.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
    say(f"{len(rows)} token(s){whose} in the {database}.")


@token_app.command("revoke")
def token_revoke(
    token_or_id: Annotated[
        str, typer.Argument(help="The token's id (see `token list`) or the token itself.")
    ],
) -> None:
    """Delete a token: API requests with it get 401."""
    from turnstream.store import users

    settings = load_settings()
    database = prepare_database(settings, upgrade=False)
    row = with_db(settings, lambda db: users.revoke_token(db, token_or_id=token_or_id.strip()))
    if row is None:
        # Never echo the argument: it may be a secret with a typo in it.
        raise fail(
            f"No token with that id or value in the {database}. "
            "`turnstream token list` shows the ids."
        )
    shown = f" ({row.prefix}…)" if row.prefix else ""
    typer.echo(f"Revoked token {row.id}{shown} of user '{row.user_id}'.")
    say(
        "API processes refuse it within their token cache time "
        f"(TURNSTREAM_TOKEN_CACHE_SECONDS, {settings.token_cache_seconds:g} s here)."
    )


app.command()(chat)  # chat.py: the terminal client, listed after the server's commands
