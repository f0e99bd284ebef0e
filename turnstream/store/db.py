"""The async engine and its sessions, for SQLite and PostgreSQL alike.

An engine made `with outages` translates the errors that mean "the database
cannot be reached or used" into `turnstream.errors.DatabaseUnavailable`, once,
here, where they are met. SQLAlchemy has no single place for them:

    _OutagePool.connect   no connection: the driver's OSError (refused, unknown host,
                          timed out), which SQLAlchemy passes on unwrapped, or the
                          pool's TimeoutError (every connection busy for its timeout)
    _outage (handle_error)  a connection lost mid-statement, or an OperationalError

Anything else (a constraint violated, a cancelled request) stays what it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, PoolProxiedConnection

from turnstream.errors import DatabaseUnavailable


def create_engine(url: str, *, outages: bool = False) -> AsyncEngine:
    """The engine for `url`; `outages` as above (not for an in-memory SQLite database).

    The API and the workers want outages; the CLI and the migrations keep the
    driver's own errors, which their messages quote.
    """
    options: dict[str, Any] = {"poolclass": _OutagePool} if outages else {}
    if url.startswith("sqlite"):
        # A generous busy timeout lets several processes append to one file.
        engine = create_async_engine(url, connect_args={"timeout": 30}, **options)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    else:
        options.update(pool_pre_ping=True, pool_size=10, max_overflow=20)
        engine = create_async_engine(url, **options)
    if outages:
        event.listen(engine.sync_engine, "handle_error", _outage)
    return engine


class _OutagePool(AsyncAdaptedQueuePool):
    """SQLAlchemy's pool for asyncio engines; failing to connect raises DatabaseUnavailable."""

    def connect(self) -> PoolProxiedConnection:
        try:
            return super().connect()
        except (OSError, PoolTimeoutError) as exc:
            raise DatabaseUnavailable() from exc


def _outage(ctx: ExceptionContext) -> BaseException | None:
    """DatabaseUnavailable in place of an error that means the database is lost or failing."""
    error = ctx.original_exception
    if ctx.is_pre_ping or not isinstance(error, Exception) or isinstance(error, TimeoutError):
        # The pre-ping replaces a dead connection by itself; a cancel or a timeout comes
        # from the caller, not from the database.
        return None
    lost = (
        ctx.is_disconnect
        or isinstance(ctx.sqlalchemy_exception, OperationalError)
        or isinstance(error, OSError)
        or "connection" in type(error).__name__.lower()
    )
    return DatabaseUnavailable() if lost else None


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker:  # type: ignore[type-arg]
    return async_sessionmaker(engine, expire_on_commit=False)


def sqlite_file(url: str) -> Path | None:
    """The absolute path of an SQLite database file; None for other databases and `:memory:`."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database).resolve()
