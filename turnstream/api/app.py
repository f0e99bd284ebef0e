"""The ASGI application and its lifespan: everything one API process opens and closes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from turnstream import __version__
from turnstream.api import deps, errors
from turnstream.api.auth import TokenCache
from turnstream.api.header_limit import HeaderLimit
from turnstream.api.request_context import RequestContext
from turnstream.api.routes import chat, conversations, fallback, files, root, runs, sessions
from turnstream.background import PASS_SECONDS, stop_task
from turnstream.config import Settings
from turnstream.embedded import EmbeddedRedis
from turnstream.errors import Misconfigured
from turnstream.live.client import connect_redis
from turnstream.runs.broker import drop_waiting, kicker, make_broker
from turnstream.runs.reaper import reap_forever
from turnstream.runs.requeue import requeue_forever
from turnstream.runtime import Runtime
from turnstream.store.migrate import upgrade

API_PREFIX = "/api/v1"


def create_app(
    settings: Settings | None = None, *, worker: bool = True, migrate: bool = True
) -> FastAPI:
    """The API. With `worker`, runs execute in this process; else on `turnstream worker`s.

    With `migrate`, the start brings an SQLite database up to date (`serve` has
    done that already, before it made the first user, and passes False).
    """
    settings = settings or Settings()
    if not worker and settings.redis_url is None:
        raise Misconfigured("--no-worker needs TURNSTREAM_REDIS_URL: workers must share a Redis.")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        embedded = None
        if settings.redis_url is None:
            embedded = EmbeddedRedis(settings.data_dir)
            await asyncio.to_thread(embedded.start)
            redis = embedded.client()
        else:
            redis = connect_redis(settings.redis_url)
        if migrate and settings.database_url.startswith("sqlite"):
            await asyncio.to_thread(upgrade, settings.database_url)
        runtime = Runtime.open(settings, redis)
        await runtime.hub.start()
        broker = make_broker(settings, in_process=worker)
        broker.state.runtime = runtime
        await broker.startup()
        reaper_stopping = asyncio.Event()
        reaper = asyncio.create_task(reap_forever(runtime, reaper_stopping))
        # Queued runs no worker claimed in time: in-process, this process runs them (and at
        # once those a previous process left queued); else it leaves them to the workers.
        kick_here = kicker(broker) if worker else None
        requeuer = requeue_forever(runtime, reaper_stopping, kick_here, hand_out_all=worker)
        requeuing = asyncio.create_task(requeuer)
        app.state.runtime, app.state.broker = runtime, broker
        try:
            yield
        finally:
            await stop_task(reaper, reaper_stopping, finish=PASS_SECONDS)
            await stop_task(requeuing, reaper_stopping, finish=PASS_SECONDS)
            await drop_waiting(broker, runtime)  # they stay queued, for the next start
            await runtime.close()
            await broker.shutdown()
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)

    app = FastAPI(
        title="turnstream",
        version=__version__,
        description="Resumable background runs for AI chat, over Redis Streams.",
        lifespan=lifespan,
    )
    app.state.token_cache = TokenCache(ttl=settings.token_cache_seconds)
    add_middleware(app, settings)
    errors.install(app, api_prefix=API_PREFIX, refusal=deps.refusal)
    include_routers(app)
    return app


def include_routers(app: FastAPI) -> None:
    """Routing tries routes in turn: the polled session endpoints first, the catch-all last."""
    app.include_router(root.router)  # /health, /metrics and the chat page
    routers = (sessions, conversations, runs, files, chat, fallback)
    for module in routers:
        app.include_router(module.router, prefix=API_PREFIX)


def add_middleware(app: FastAPI, settings: Settings) -> None:
    """Pure ASGI middleware, the last added outermost.

    RequestContext goes around HeaderLimit, so that a 431 carries X-Request-Id too.
    """
    app.add_middleware(HeaderLimit, max_bytes=settings.max_header_bytes)
    app.add_middleware(RequestContext)
