"""Errors as the API answers them: a status and a JSON body, never a bare 500.

ApiError                    a 4xx with an exact body (SPEC §6, §7)
RequestValidationError,     422 / FastAPI's own 400, but only after the caller passed
  HTTPException             the 401 and 403 checks its route would make
ClientDisconnect            499, no body: the client is gone before its request arrived
redis ConnectionError/...   503 {"error": "Redis unavailable", ...}
SQLAlchemy OperationalError 503 {"error": "Database unavailable", ...}
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

logger = logging.getLogger("turnstream.api")

ACCESS_DENIED = {"detail": "Access denied to conversation"}


class ApiError(Exception):
    """An answer with this exact JSON body, at the top level."""

    def __init__(
        self, status_code: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(body)
        self.status_code = status_code
        self.body = body
        self.headers = headers


def access_denied() -> ApiError:
    return ApiError(403, ACCESS_DENIED)


def install(app: FastAPI, *, api_prefix: str) -> None:
    async def refusal(request: Request) -> JSONResponse | None:
        """The 401 or 403 the route's own dependencies would give, if any.

        FastAPI reads and validates the body and parameters before any dependency
        runs; without this, a caller with no valid token, or with someone else's
        conversation, would hear about their input first.
        """
        from turnstream.api.auth import authenticate
        from turnstream.api.deps import get_follower

        if not request.url.path.startswith(api_prefix + "/"):
            return None
        rt, authorization = request.app.state.runtime, request.headers.get("authorization")
        cid = request.path_params.get("cid")
        try:
            if cid is None:
                await authenticate(rt, request.app.state.token_cache, authorization)
            else:
                # A bearer token of the owner, or (as on resume) a stream token of this
                # conversation: either already proves the caller may see it.
                await get_follower(
                    request, rt, cid, request.query_params.get("token"), authorization
                )
        except ApiError as refused:
            return _as_response(refused)
        return None

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if refused := await refusal(request):
            return refused
        # Only location, message and type: echoing the input could fail to encode.
        errors = [{"loc": e["loc"], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # FastAPI's 400 for a body it cannot parse (JSON that is not UTF-8) comes before
        # the dependencies. Routing's 404 and 405 depend only on the path and method.
        if exc.status_code not in (404, 405) and (refused := await refusal(request)):
            return refused
        return await http_exception_handler(request, exc)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _as_response(exc)

    @app.exception_handler(ClientDisconnect)
    async def _gone(_request: Request, _exc: ClientDisconnect) -> Response:
        # The client hung up before its body arrived whole: nothing was stored, and no
        # one is left to answer (499, as nginx logs it), so it is no server error either.
        return Response(status_code=499)

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def _redis_down(_request: Request, exc: Exception) -> JSONResponse:
        logger.warning("Redis unavailable: %s", exc)
        return _unavailable("Redis unavailable", "Check that Redis is running and reachable.")

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeoutError)
    # asyncpg raises these unwrapped when it cannot connect at all; redis-py wraps
    # its own, so here they can only mean the database.
    @app.exception_handler(ConnectionError)
    @app.exception_handler(socket.gaierror)
    async def _db_down(_request: Request, exc: Exception) -> JSONResponse:
        logger.warning("database unavailable: %s", exc)
        return _unavailable("Database unavailable", "Check that the database is reachable.")

    @app.exception_handler(DBAPIError)
    async def _db_error(_request: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated or _is_connection_error(exc):
            return await _db_down(_request, exc)
        raise exc


def _as_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body, status_code=exc.status_code, headers=exc.headers)


def _is_connection_error(exc: DBAPIError) -> bool:
    return isinstance(exc.orig, OSError) or "connection" in type(exc.orig).__name__.lower()


def _unavailable(error: str, hint: str) -> JSONResponse:
    return JSONResponse(
        {"error": error, "detail": f"{error}. {hint} Retry shortly."},
        status_code=503,
        headers={"Retry-After": "5"},
    )
