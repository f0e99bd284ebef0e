"""Helpers shared by the API tests in this folder (fixtures stay in the test modules).

Why `reaper_idle`: the app's lifespan stops its reaper with `cancel()` and then
awaits it. On Python 3.11 a cancellation that lands while redis-py is inside a
command (typically the reaper's first pass, right after start-up) can be lost,
so the reaper never ends and the lifespan's shutdown hangs forever. Tests that
finish within a few milliseconds hit that window. Until the app is fixed (see
test_lifespan.py), tests wait for the reaper to be between passes before and
after they run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI

from turnstream.api.app import create_app
from turnstream.config import Settings
from turnstream.store import users


def served_routes(app: FastAPI, prefix: str) -> set[tuple[str, str]]:
    """(method, path template) of every route under `prefix`, also those hidden from OpenAPI."""
    try:
        from fastapi.routing import iter_route_contexts  # FastAPI >= 0.120 nests routers
    except ImportError:  # older FastAPI: app.routes is already flat
        candidates = list(app.routes)
    else:
        candidates = list(iter_route_contexts(app.routes))
    found = set()
    for route in candidates:
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if path and methods and (path == prefix or path.startswith(prefix + "/")):
            found.update((method, path) for method in methods if method != "HEAD")
    return found


def _reaper_tasks() -> list[asyncio.Task]:
    return [
        t
        for t in asyncio.all_tasks()
        if getattr(t.get_coro(), "__qualname__", "") == "reap_forever" and not t.done()
    ]


def _await_chain(task: asyncio.Task) -> list[str]:
    """Names of the coroutines the task is suspended in, outermost first."""
    names, coro = [], task.get_coro()
    while hasattr(coro, "cr_code"):
        names.append(coro.cr_code.co_name)
        coro = coro.cr_await
    return names


async def reaper_idle() -> None:
    """Wait (up to 5 s) until every reaper of this loop sleeps between two passes."""
    for _ in range(1000):
        if all(_await_chain(t) == ["reap_forever", "sleep"] for t in _reaper_tasks()):
            return
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def settled(app: FastAPI) -> AsyncIterator[FastAPI]:
    await reaper_idle()
    try:
        yield app
    finally:
        await reaper_idle()


@contextlib.asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """An app on these settings with its lifespan running (in-process worker)."""
    application = create_app(settings)
    async with application.router.lifespan_context(application), settled(application):
        yield application


@contextlib.asynccontextmanager
async def client_for(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def token_for(app: FastAPI, user_id: str) -> dict[str, str]:
    """A bearer header for a new token of `user_id` (created if needed)."""
    async with app.state.runtime.sessions() as db:
        token = await users.create_token(db, user_id=user_id)
    return {"Authorization": f"Bearer {token}"}
