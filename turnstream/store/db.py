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
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, PoolProxiedConnection

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
        options.update(pool_size=10, max_overflow=20)
        engine = create_async_engine(url, **options)
        event.listen(engine.sync_engine, "checkout", _closed_by_the_server)
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


def _closed_by_the_server(
    _dbapi_conn: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
) -> None:
    """A pooled connection the server has closed (a restart, an ended session) is replaced
    as it is checked out: asyncpg knows it without the round trip a pre-ping would spend on
    every transaction. (A connection lost without a word from the server still fails its
    first statement: 503, and the pool is renewed for the next.)"""
    driver = record.driver_connection
    if driver is not None and driver.is_closed():
        raise DisconnectionError()


def _outage(ctx: ExceptionContext) -> BaseException | None:
    """DatabaseUnavailable in place of an error that means the database is lost or failing."""
    error = ctx.original_exception
    if not isinstance(error, Exception) or isinstance(error, TimeoutError):
        # A cancel or a timeout comes from the caller, not from the database.
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
