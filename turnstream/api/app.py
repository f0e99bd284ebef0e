"""The ASGI application and its lifespan: everything one API process opens and closes.

Also the last touches of its OpenAPI document: links from each answer that names a
conversation or a run (a new conversation's `id`, a run's `X-Session-Id`) to every
operation that takes it, so that a reader, or a stateful fuzzer, can follow a
conversation's life; and optional query and header parameters that are absent or a
string, never `null` as FastAPI writes them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from turnstream import __version__
from turnstream.api import deps, errors
from turnstream.api.auth import TokenCache
from turnstream.api.header_limit import HeaderLimit
from turnstream.api.potpie import routes as potpie
from turnstream.api.request_context import RequestContext
from turnstream.api.routes import (
    approvals,
    chat,
    conversations,
    fallback,
    files,
    root,
    runs,
    sessions,
)
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
# potpie-ui's routes (TURNSTREAM_POTPIE_COMPAT): its base URL is https://host/potpie.
POTPIE_PREFIX = "/potpie" + API_PREFIX

# OpenAPI links. A new conversation's id goes to every operation that takes `cid` but the
# two questions about its newest run: it has none yet, and they answer 404.
_NOT_YET = {"active_session", "task_status"}
# operationId -> where its request had the conversation, and where its success names a
# run: that pair goes to every operation that takes `session_id`.
_RUN_NAMED = {
    "post_message": ("$request.path.cid", "$response.header.X-Session-Id"),
    "regenerate": ("$request.path.cid", "$response.header.X-Session-Id"),
    "chat": ("$request.body#/id", "$response.header.X-Session-Id"),
    "active_session": ("$request.path.cid", "$response.body#/sessionId"),
    "task_status": ("$request.path.cid", "$response.body#/sessionId"),
}


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
            redis = connect_redis(settings.redis_url, cluster=settings.redis_cluster)
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
        generate_unique_id_function=_operation_id,
    )
    app.state.token_cache = TokenCache(ttl=settings.token_cache_seconds)
    add_middleware(app, settings)
    errors.install(app, api_prefixes=api_prefixes(settings), refusal=deps.refusal)
    include_routers(app, potpie_compat=settings.potpie_compat)
    _finish_document(app)
    return app


def api_prefixes(settings: Settings) -> tuple[str, ...]:
    """Where the API's routes are: their input errors come after their 401 and 403."""
    return (API_PREFIX, POTPIE_PREFIX) if settings.potpie_compat else (API_PREFIX,)


def _operation_id(route: APIRoute) -> str:
    """The handler's name (`post_message`): what generated clients name their functions."""
    return route.name


def _finish_document(app: FastAPI) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            for item in document["paths"].values():
                for operation in item.values():
                    for parameter in operation.get("parameters", []):
                        parameter["schema"] = _not_null(parameter["schema"])
            add_links(document)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """`anyOf: [S, {"type": "null"}]` (FastAPI's optional parameter) as S, its siblings kept."""
    alternatives = [s for s in schema.get("anyOf", []) if s != {"type": "null"}]
    if len(alternatives) != 1 or len(schema["anyOf"]) != 2:
        return schema
    rest = {key: value for key, value in schema.items() if key != "anyOf"}
    return {**alternatives[0], **rest}


def add_links(document: dict[str, Any]) -> None:
    """Link a new conversation, and each success that names a run, to where they are taken.

    The AI SDK's `POST /chat` takes its conversation in the body's `id`.
    """
    operations = [op for item in document["paths"].values() for op in item.values()]
    by_id = {op["operationId"]: op for op in operations}
    new_conversation = {"cid": "$response.body#/id"}
    links = _links(operations, new_conversation, skip=_NOT_YET)
    links["chat"] = {"operationId": "chat", "requestBody": {"id": new_conversation["cid"]}}
    by_id["create_conversation"]["responses"]["201"]["links"] = links
    for source, (cid, session_id) in _RUN_NAMED.items():
        named = {"cid": cid, "session_id": session_id}
        links = _links([op for op in operations if _takes(op, "session_id")], named)
        by_id[source]["responses"]["200"]["links"] = links


def _links(
    targets: list[dict[str, Any]], values: dict[str, str], skip: Collection[str] = ()
) -> dict[str, Any]:
    """A link to each of `targets` whose path `values` fill, by parameter name."""
    links = {}
    for target in targets:
        parameters = target.get("parameters", [])
        taken = {
            f"{p['in']}.{p['name']}": values[p["name"]] for p in parameters if p["name"] in values
        }
        whole = all(p["name"] in values for p in parameters if p["in"] == "path")
        if taken and whole and target["operationId"] not in skip:
            links[target["operationId"]] = {
                "operationId": target["operationId"],
                "parameters": taken,
            }
    return links


def _takes(operation: dict[str, Any], name: str) -> bool:
    return any(p["name"] == name for p in operation.get("parameters", []))


def include_routers(app: FastAPI, *, potpie_compat: bool = False) -> None:
    """Routing tries routes in turn: the polled session endpoints first, the catch-all last.

    potpie-ui's routes only with `potpie_compat`: else /potpie is an unknown path (404).
    """
    app.include_router(root.router, responses=errors.documented_for_every_route())
    routers = (sessions, conversations, runs, approvals, files, chat, fallback)
    api_answers = errors.documented_for_every_route(*errors.EVERY_API_ROUTE)
    for module in routers:
        app.include_router(module.router, prefix=API_PREFIX, responses=api_answers)
    if potpie_compat:
        app.include_router(potpie.router, prefix=POTPIE_PREFIX)


def add_middleware(app: FastAPI, settings: Settings) -> None:
    """Pure ASGI middleware, the last added outermost.

    RequestContext goes around HeaderLimit, so that a 431 carries X-Request-Id too.
    """
    app.add_middleware(HeaderLimit, max_bytes=settings.max_header_bytes)
    app.add_middleware(RequestContext)
