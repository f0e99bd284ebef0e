"""The in-process app for tests: run it, talk to it, get a token (tests/conftest.py's
`app`, `client` and `make_token` fixtures are these), and list its routes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from fastapi import FastAPI

from turnstream.api.app import create_app
from turnstream.config import Settings
from turnstream.store import users


def quick_settings(
    database_url: str, redis_url: str, tmp_path: Path, *, cluster: bool = False
) -> Settings:
    """An in-process app's settings: this database and Redis (or Redis Cluster), a quick
    demo agent."""
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        redis_cluster=cluster,
        data_dir=tmp_path / "data",
        demo_words=8,
        demo_delay_ms=5,
    )


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


@contextlib.asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """An app on these settings with its lifespan running (in-process worker)."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@contextlib.asynccontextmanager
async def client_for(
    app: FastAPI, *, raise_app_exceptions: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the in-process app. It buffers whole responses: no live SSE.

    With `raise_app_exceptions=False` an unhandled error comes back as the app's
    500 response instead of being raised in the test.
    """
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@contextlib.asynccontextmanager
async def api_for(
    settings: Settings, **overrides: object
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str], FastAPI]]:
    """A running app on `settings` with `overrides`, a client for it and alice's bearer header."""
    async with running_app(settings.model_copy(update=overrides)) as application:
        headers = await token_for(application, "alice")
        async with client_for(application) as http:
            yield http, headers, application


async def token_for(app: FastAPI, user_id: str) -> dict[str, str]:
    """A bearer header for a new token of `user_id` (created if needed)."""
    async with app.state.runtime.sessions() as db:
        token = await users.create_token(db, user_id=user_id)
    return {"Authorization": f"Bearer {token}"}
