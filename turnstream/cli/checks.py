"""The checks a command runs before any start-up work, and how it says what is wrong.

    check_port        `serve` could listen on host:port
    check_redis       Redis answers at TURNSTREAM_REDIS_URL (with TURNSTREAM_REDIS_CLUSTER:
                      the cluster, every slot covered, Redis 7+)
    check_loading     the agent and the tools load; a sandbox can be made if `bash` is one
    prepare_database  the database answers and its schema is current (or is migrated)

A failed check raises `fail(...)`: one or two lines on stderr saying what is
wrong and what to do, then exit code 1. Messages never show a password
(`redact`, `reason`).
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlsplit

import typer

from turnstream.cli.configured import redact
from turnstream.config import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")

# How long a check waits for Redis or the database to answer.
CONNECT_TIMEOUT = 10.0


def fail(message: str) -> typer.Exit:
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


def say(message: str) -> None:
    typer.echo(message, err=True)


def load_settings() -> Settings:
    from pydantic import ValidationError

    from turnstream.cli.configured import invalid_settings

    try:
        return Settings()
    except ValidationError as exc:
        raise fail("\n".join(invalid_settings(exc))) from None


def check_loading(settings: Settings, *, runs_agents: bool, debug: bool = False) -> None:
    """Fail unless the agent and the tools load, and a sandbox can be made if one needs it."""
    from turnstream.cli.configured import loading_problems

    problems = loading_problems(settings, runs_agents=runs_agents, debug=debug)
    if problems:
        raise fail("\n".join(problems))


def check_port(host: str, port: int) -> None:
    """Fail unless `serve` could listen on host:port, as uvicorn will (SO_REUSEADDR)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise fail(
            f"Cannot listen on --host {host} ({getattr(exc, 'strerror', None) or exc}). "
            "Give an address of this machine, such as 127.0.0.1 or 0.0.0.0."
        ) from None
    for family, kind, proto, _name, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    other = port + 1 if port < 65535 else 8000
                    raise fail(
                        f"Port {port} on {host} is already in use (another `turnstream serve`?).\n"
                        f"Stop that process, or pick a free port with --port, e.g. --port {other}."
                    ) from None
                if exc.errno == errno.EADDRNOTAVAIL and family == socket.AF_INET6:
                    continue  # IPv6 disabled here; asyncio skips it the same way
                raise fail(
                    f"Cannot listen on {host}:{port} ({exc.strerror}). "
                    "Pick another --host or --port."
                ) from None


def check_redis(url: str, *, cluster: bool = False) -> None:
    import redis

    if cluster:
        if problem := cluster_problem(url):
            raise fail(f"Cannot use the Redis Cluster at {redact(url)}: {problem}.")
        return
    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT / 3, socket_timeout=CONNECT_TIMEOUT / 3
        )
        with client:
            clustered = _is_cluster_node(client)
    except (redis.RedisError, OSError, ValueError) as exc:
        raise fail(
            f"Cannot use Redis at {redact(url)} ({reason(exc, url)}).\n"
            "Start Redis there, or correct TURNSTREAM_REDIS_URL."
        ) from None
    if clustered:
        raise fail(f"Redis at {redact(url)} is a cluster node: set TURNSTREAM_REDIS_CLUSTER=true.")


def _is_cluster_node(client: Any) -> bool:
    """Whether a single-node client was pointed at a cluster node (INFO may be denied: no)."""
    import redis

    try:
        return bool(client.info("cluster").get("cluster_enabled"))
    except redis.ResponseError:
        client.ping()
        return False


def cluster_problem(url: str) -> str | None:
    """What keeps turnstream off the cluster `url` names, in a few words; None if nothing.

    It must answer, hold every one of the 16,384 slots (a slot nobody holds is a
    conversation nobody can write), and run Redis 7 or later (sharded pub/sub).
    """
    import redis
    from redis.cluster import RedisCluster
    from redis.exceptions import RedisClusterException

    try:
        client = RedisCluster.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT / 3, socket_timeout=CONNECT_TIMEOUT / 3
        )
        with client:
            info = client.cluster_info()
            version = str(client.info("server").get("redis_version", "0"))
    except (redis.RedisError, RedisClusterException, OSError, ValueError) as exc:
        return reason(exc, url)
    if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_assigned", 0)) < 16384:
        covered = info.get("cluster_slots_ok", 0)
        return f"state {info.get('cluster_state')}, {covered} of 16384 slots covered"
    if int(version.split(".")[0]) < 7:
        return f"Redis {version}; sharded pub/sub needs 7 or later"
    return None


def is_sqlite(settings: Settings) -> bool:
    return settings.database_url.startswith("sqlite")


def prepare_database(settings: Settings, *, upgrade: bool) -> str:
    """Check that the database answers and that its schema is current; migrate it if `upgrade`.

    Returns how to call the database in messages: an SQLite file's absolute path, or
    the URL without its password.
    """
    name, hint = _database_target(settings, upgrade=upgrade)
    _bring_schema_to_head(settings.database_url, name, hint, upgrade=upgrade)
    return name


def _database_target(settings: Settings, *, upgrade: bool) -> tuple[str, str]:
    """The database's name in messages, and what to check when it fails.

    For SQLite, the file must exist already unless `upgrade`; its folder is created.
    """
    from turnstream.store.db import sqlite_file

    url = settings.database_url
    try:
        path = sqlite_file(url)
    except Exception as exc:  # an unparsable URL
        raise fail(
            f"TURNSTREAM_DATABASE_URL is not a database URL ({reason(exc, url)}): {redact(url)}"
        ) from None
    if path is None:
        name = f"database {redact(url)}"
        return name, "Start the database server there, or correct TURNSTREAM_DATABASE_URL."
    hint = (
        f"Check that {path.parent} can be written, "
        "or set TURNSTREAM_DATA_DIR or TURNSTREAM_DATABASE_URL."
    )
    _note_old_default(settings, path)
    if not upgrade and not path.exists():
        raise fail(
            f"There is no database at {path} yet. Run this where `turnstream serve` runs,\n"
            "with the same TURNSTREAM_DATA_DIR / TURNSTREAM_DATABASE_URL "
            "(`serve`, `migrate` and `token create` create it)."
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(f"Cannot create the directory {path.parent} ({exc.strerror}).") from None
    return f"SQLite database {path}", hint


def _bring_schema_to_head(url: str, name: str, hint: str, *, upgrade: bool) -> None:
    """Fail unless the schema is at this code's head revision, or `upgrade` migrates it there."""
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from turnstream.store import migrate

    try:
        current = asyncio.run(schema_revision(url))
    except Exception as exc:  # whatever it is, this database cannot be used now
        raise fail(f"Cannot use the {name} ({reason(exc, url)}).\n{hint}") from None
    head = migrate.head_revision()
    if current == head:
        return
    if current is not None and not migrate.is_known_revision(current):
        raise fail(
            f"The {name} is at schema revision {current}, which this turnstream does not know\n"
            "(a newer version migrated it): upgrade turnstream."
        )
    if not upgrade:
        state = (
            "has no tables yet"
            if current is None
            else f"is at schema revision {current}; this turnstream needs {head}"
        )
        raise fail(
            f"The {name} {state}.\n"
            "Run `turnstream migrate` first, with the same TURNSTREAM_DATABASE_URL."
        )
    try:
        migrate.upgrade(url)
    except (OSError, SQLAlchemyError, CommandError) as exc:
        raise fail(f"Migrating the {name} failed ({reason(exc, url)}).\n{hint}") from None


async def schema_revision(url: str) -> str | None:
    from turnstream.store.db import create_engine
    from turnstream.store.migrate import current_revision

    engine = create_engine(url)
    try:
        return await asyncio.wait_for(current_revision(engine), CONNECT_TIMEOUT)
    finally:
        await engine.dispose()


def with_db(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `work` in a session on the (checked) database; its errors as one line."""
    from sqlalchemy.exc import SQLAlchemyError

    from turnstream.store.db import create_engine, session_factory

    async def main() -> T:
        engine = create_engine(settings.database_url)
        try:
            async with session_factory(engine)() as db:
                return await work(db)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except (OSError, SQLAlchemyError) as exc:
        raise fail(f"The database failed ({reason(exc, settings.database_url)}).") from None


def _note_old_default(settings: Settings, path: Path) -> None:
    """Point at a ./turnstream.db of an earlier version, which the default no longer opens."""
    old = Path("turnstream.db").resolve()
    if "database_url" not in settings.model_fields_set and old.is_file() and old != path:
        say(
            f"Note: {old} (the default database of earlier versions) is not used; "
            f"the database is {path}.\nTo keep the old one, move it there before "
            f"the first start, or set TURNSTREAM_DATABASE_URL=sqlite+aiosqlite:///{old}"
        )


# --- messages -------------------------------------------------------------------------


def reason(exc: BaseException, url: str) -> str:
    """`ErrorType: first line of its message`, the driver's own error where wrapped."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    if isinstance(cause, TimeoutError) and not text:
        text = f"no answer within {CONNECT_TIMEOUT:g} s"
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    for secret in {password or "", unquote(password or "")} - {""}:
        text = text.replace(secret, "***")
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__
