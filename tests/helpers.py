"""Small helpers shared by tests (fixtures live in conftest.py).

Every wait in the tests is `wait_until` (sync) or `eventually` (async): poll a
check until it returns something truthy, return that, and after `timeout`
seconds fail with an AssertionError naming what was awaited and the last value
seen. No test sleeps a fixed time to let something happen, and no wait falls
through silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import asyncpg
from sqlalchemy.engine import make_url

T = TypeVar("T")

INTERVAL = 0.05  # seconds between two checks of a wait


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def wait_until(
    check: Callable[[], T], *, timeout: float, what: str, interval: float = INTERVAL
) -> T:
    """Call `check()` until it returns something truthy, and return that.

    After `timeout` seconds it fails, naming `what` and the last value seen,
    so that a wait never passes or hangs silently.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(_timed_out(timeout, what, value))
        time.sleep(interval)


async def eventually(
    check: Callable[[], T | Awaitable[T]],
    *,
    timeout: float,  # noqa: ASYNC109 - not asyncio.timeout: the failure names `what`
    what: str,
    interval: float = INTERVAL,
) -> T:
    """`wait_until` for async tests: the event loop runs between checks.

    `check` may be a plain function (it looks at in-process state) or return an
    awaitable (an async function, or a lambda around a Redis or HTTP call).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(_timed_out(timeout, what, value))
        await asyncio.sleep(interval)


def _timed_out(timeout: float, what: str, value: object) -> str:
    return f"timed out after {timeout}s waiting for {what}; last: {value!r}"


def pg_admin(base_url: str, sql: str) -> None:
    """Run one statement on the PostgreSQL server's `postgres` database.

    In its own thread with its own event loop, so it never touches the loop
    that pytest-asyncio runs the test in.
    """
    dsn = make_url(base_url).set(drivername="postgresql").render_as_string(hide_password=False)

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


class NoBroker:
    """A broker that records kicks instead of running them: the run stays queued,
    for a test that executes it by hand, reaps it, or plays the worker that dies."""

    def __init__(self) -> None:
        self.kicked: list[tuple[str, str]] = []

    def find_task(self, _name: str) -> object:
        broker = self

        class _Task:
            async def kiq(self, cid: str, sid: str) -> None:
                broker.kicked.append((cid, sid))

        return _Task()
