"""Errors as the API answers them: a status and a JSON body, never a bare 500.

TurnstreamError              `answer`: each class's status, headers and exact body
                             (docs/protocol.md, "Errors and status codes")
redis ConnectionError,       as RedisUnavailable: 503 {"error": "Redis unavailable", ...}
  TimeoutError,
  ClusterDownError
RequestValidationError,      422 / FastAPI's own 400, but only after the caller passed the
  HTTPException              401 and 403 checks its route would make (`refusal`, given to
                             `install`)
HTTPException 405            405 {"detail": "Method Not Allowed"}, `Allow` listing every method
                             served on the path; before any 401 or 403
ClientDisconnect             499, no body: the client is gone before its request arrived
anything else                500 {"error": "Internal server error", ...}: a bug, logged

The database's errors arrive as DatabaseUnavailable already (turnstream.store.db).
`documented` declares the same answers in the OpenAPI document (`responses=`), from
`REFUSALS`: each error's status, the schema of its body (schemas.py) and its headers.
This module imports nothing else of turnstream.api but schemas.py, so that any of
it may use it.

Length: a little over 400 lines, on one topic: every error's status and body, and how the
document declares them, so that an answer is changed in one place and read in one
place.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from functools import partial, reduce
from operator import or_
from typing import Any, NamedTuple

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from redis.exceptions import ClusterDownError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute

from turnstream import metrics
from turnstream.api import schemas
from turnstream.errors import (
    AccessDenied,
    ActiveRunLimit,
    ApprovalDecided,
    ApprovalNotFound,
    Conflict,
    CursorAhead,
    CursorExpired,
    DatabaseUnavailable,
    FileNotFound,
    IdentityProviderUnavailable,
    InvalidCursor,
    InvalidMessage,
    InvalidPath,
    InvalidUpload,
    MessageTooLong,
    NoActiveRun,
    NoActiveSession,
    NoBackgroundTask,
    NotANewMessage,
    NotFound,
    NothingToRegenerate,
    PathConflict,
    RateLimited,
    RedisUnavailable,
    Refused,
    ReplyReplaced,
    RunConflict,
    RunEndedFirst,
    SessionNotFound,
    TurnstreamError,
    Unauthorized,
    Unavailable,
    UnknownPath,
    WorkspaceFull,
)

try:  # FastAPI >= 0.120 keeps included routers nested; this walks them
    from fastapi.routing import iter_route_contexts
except ImportError:  # older FastAPI: app.routes is already flat

    def iter_route_contexts(routes: Iterable[BaseRoute]) -> Iterable[Any]:  # type: ignore[misc]
        return routes


logger = logging.getLogger("turnstream.api")

# The name of a route that only answers what no other route matched (routes/fallback.py):
# it never counts as serving a path.
CATCH_ALL = "catch_all"

# The 401 or 403 a request's route would give it, if any (`turnstream.api.deps.refusal`).
Refusal = Callable[[Request], Awaitable[Refused | None]]
# status, body, headers
_Answer = tuple[int, dict[str, Any], dict[str, str] | None]

_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_RETRY_SOON = {"Retry-After": "5"}

# A route's `responses=`, as FastAPI takes them.
Responses = dict[int | str, dict[str, Any]]


class Documented(NamedTuple):
    """How the document declares one error: status, body schema (None: no body), headers."""

    status: int
    body: type[BaseModel] | None
    description: str
    headers: tuple[str, ...] = ()


_HEADERS: dict[str, dict[str, Any]] = {
    "WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "string"}},
    "X-Session-Id": {"description": "The run whose reply now counts", "schema": {"type": "string"}},
}
_DOWN = "{} unreachable: retry after `Retry-After` seconds"

# Each error as the document declares it; tests/api/test_openapi_answers.py holds `answer`
# to it. UnicodeDecodeError is FastAPI's own 400 for a JSON body that is not UTF-8, and
# ClientDisconnect's 499 is never seen by the client, only logged.
REFUSALS: dict[type[Exception], Documented] = {
    Unauthorized: Documented(401, schemas.Detail, "No valid credential", ("WWW-Authenticate",)),
    AccessDenied: Documented(403, schemas.Detail, "Not the caller's conversation, or none"),
    UnknownPath: Documented(404, schemas.Detail, "No route serves the path"),
    SessionNotFound: Documented(404, schemas.ErrorBody, "No such run is kept"),
    NoActiveSession: Documented(404, schemas.ErrorBody, "The conversation keeps no run"),
    NoBackgroundTask: Documented(404, schemas.ErrorBody, "The conversation keeps no run"),
    NoActiveRun: Documented(404, schemas.ErrorBody, "Nothing is running"),
    FileNotFound: Documented(404, schemas.FileNotFound, "No such file"),
    ApprovalNotFound: Documented(404, schemas.ApprovalNotFound, "No such approval, or expired"),
    InvalidMessage: Documented(400, schemas.BadInput, "A message that cannot be used"),
    InvalidCursor: Documented(400, schemas.BadInput, "Not a stream entry id"),
    InvalidPath: Documented(400, schemas.BadInput, "A workspace path that breaks a rule"),
    InvalidUpload: Documented(400, schemas.BadInput, "Not a multipart form of `file` parts"),
    UnicodeDecodeError: Documented(400, schemas.Detail, "The JSON body is not UTF-8"),
    MessageTooLong: Documented(413, schemas.MessageTooLong, "The message is over the limit"),
    WorkspaceFull: Documented(413, schemas.WorkspaceFull, "Over a workspace limit; none stored"),
    RunConflict: Documented(409, schemas.RunActive, "Another run is active (multitask=reject)"),
    ReplyReplaced: Documented(
        409, schemas.ReplyReplaced, "A regenerate replaced the reply", ("X-Session-Id",)
    ),
    CursorExpired: Documented(409, schemas.CursorExpired, "A running run's cursor, trimmed"),
    CursorAhead: Documented(409, schemas.CursorAhead, "A cursor past the run's newest event"),
    NothingToRegenerate: Documented(409, schemas.ErrorBody, "No user message to answer again"),
    NotANewMessage: Documented(409, schemas.NotANewMessage, "No new user message, nor answers"),
    RunEndedFirst: Documented(409, schemas.RunEndedFirst, "The run ended before the stop"),
    PathConflict: Documented(409, schemas.PathConflict, "A file where a folder is, or under one"),
    ApprovalDecided: Documented(
        409, schemas.ApprovalDecided, "Decided otherwise before, or the run no longer waits"
    ),
    RateLimited: Documented(
        429, schemas.RateLimit, "Too many runs started in a minute", ("Retry-After",)
    ),
    ActiveRunLimit: Documented(
        429, schemas.RateLimit, "Too many runs going at once", ("Retry-After",)
    ),
    RedisUnavailable: Documented(
        503, schemas.ServiceUnavailable, _DOWN.format("Redis"), ("Retry-After",)
    ),
    DatabaseUnavailable: Documented(
        503, schemas.ServiceUnavailable, _DOWN.format("The database"), ("Retry-After",)
    ),
    IdentityProviderUnavailable: Documented(
        503, schemas.ServiceUnavailable, _DOWN.format("The identity provider"), ("Retry-After",)
    ),
    ClientDisconnect: Documented(499, None, "The client hung up before its body arrived"),
}
# What any request may get: header_limit.py's 431.
_HEADERS_TOO_LARGE = Documented(431, schemas.HeadersTooLarge, "Request headers over the limit")
# What any /api/v1 request may get besides, its credential checked: 401, and 503 for the
# identity provider's keys.
EVERY_API_ROUTE = (Unauthorized, RedisUnavailable, DatabaseUnavailable, IdentityProviderUnavailable)


def documented(*refusals: type[Exception], ok: Responses | None = None) -> Responses:
    """`responses=` for a route that answers `ok` or refuses with `refusals`, as REFUSALS has them.

    Errors of one status are one response whose body is any of their schemas.
    """
    by_status: dict[int, list[Documented]] = {}
    for entry in [REFUSALS[refusal] for refusal in refusals]:
        by_status.setdefault(entry.status, []).append(entry)
    responses: Responses = dict(ok or {})
    for status, entries in sorted(by_status.items()):
        responses[status] = _response(entries)
    return responses


def documented_for_every_route(*refusals: type[Exception]) -> Responses:
    """A router's `responses=`: `refusals`, and the 431 any request may get."""
    return {**documented(*refusals), 431: _response([_HEADERS_TOO_LARGE])}


def _response(entries: list[Documented]) -> dict[str, Any]:
    descriptions = list(dict.fromkeys(entry.description for entry in entries))
    response: dict[str, Any] = {"description": "; ".join(descriptions)}
    bodies = list(dict.fromkeys(entry.body for entry in entries if entry.body is not None))
    if bodies:
        response["model"] = reduce(or_, bodies)
    names = dict.fromkeys(name for entry in entries for name in entry.headers)
    if names:
        # Required only where every error of the status sends it.
        response["headers"] = {
            name: {**_HEADERS[name], "required": all(name in e.headers for e in entries)}
            for name in names
        }
    return response


def install(app: FastAPI, *, api_prefixes: tuple[str, ...], refusal: Refusal) -> None:
    """Answer errors as above; `refusal` is asked first about input errors under `api_prefixes`."""
    app.exception_handlers.update(
        {
            TurnstreamError: turnstream_error,
            RedisConnectionError: redis_down,
            RedisTimeoutError: redis_down,
            ClusterDownError: redis_down,  # CLUSTERDOWN: a cluster without all its masters
            RequestValidationError: partial(
                invalid_request, api_prefixes=api_prefixes, refusal=refusal
            ),
            StarletteHTTPException: partial(http_error, api_prefixes=api_prefixes, refusal=refusal),
            ClientDisconnect: client_gone,
            # Starlette answers with this, then re-raises so the server logs the traceback.
            Exception: unexpected,
        }
    )


def answer(exc: TurnstreamError) -> JSONResponse:
    """`exc` as a client sees it: its status, headers and exact JSON body."""
    status, body, headers = _answer(exc)
    return JSONResponse(body, status_code=status, headers=headers)


def _answer(exc: TurnstreamError) -> _Answer:
    match exc:
        case NotFound():
            return _not_found(exc)
        case Conflict():
            return _conflict(exc)
        case Unauthorized():
            return 401, {"detail": str(exc)}, _CHALLENGE
        case AccessDenied():
            return 403, {"detail": "Access denied to conversation"}, None
        case InvalidMessage():
            return 400, {"error": "Invalid message", "detail": str(exc)}, None
        case InvalidCursor():
            return 400, {"error": "Invalid cursor", "detail": str(exc)}, None
        case MessageTooLong():
            body = {"error": "Message too long", "detail": str(exc), "maxChars": exc.max_chars}
            return 413, body, None
        case InvalidPath():
            return 400, {"error": "Invalid path", "detail": str(exc)}, None
        case InvalidUpload():
            return 400, {"error": "Invalid upload", "detail": str(exc)}, None
        case WorkspaceFull():
            body = {
                "error": "Workspace limit reached",
                "detail": str(exc),
                "limit": exc.limit,
                "setting": exc.setting,
            }
            return 413, body, None
        case RateLimited():
            body = {"error": "Too many runs started", "detail": str(exc)}
            return 429, body, {"Retry-After": str(exc.retry_after)}
        case ActiveRunLimit():
            return 429, {"error": "Too many active runs", "detail": str(exc)}, _RETRY_SOON
        case RedisUnavailable():
            return 503, {"error": "Redis unavailable", "detail": str(exc)}, _RETRY_SOON
        case DatabaseUnavailable():
            return 503, {"error": "Database unavailable", "detail": str(exc)}, _RETRY_SOON
        case IdentityProviderUnavailable():
            body = {"error": "Identity provider unavailable", "detail": str(exc)}
            return 503, body, _RETRY_SOON
    raise TypeError(f"no HTTP answer for {type(exc).__name__}") from exc


def _not_found(exc: NotFound) -> _Answer:
    match exc:
        case UnknownPath():
            return 404, {"detail": "Not Found"}, None
        case SessionNotFound():
            return _about(404, "Session not found or expired", exc.conversation_id)
        case NoActiveSession():
            return _about(404, "No active session found", exc.conversation_id)
        case NoBackgroundTask():
            return _about(404, "No background task found", exc.conversation_id)
        case NoActiveRun():
            return _about(404, "No active run", exc.conversation_id)
        case FileNotFound():
            return 404, {"error": "File not found", "path": exc.path}, None
        case ApprovalNotFound():
            body = {"error": "Approval not found or expired", "approvalId": exc.approval_id}
            return 404, body | {"conversationId": exc.conversation_id}, None
    raise TypeError(f"no HTTP answer for {type(exc).__name__}") from exc


def _conflict(exc: Conflict) -> _Answer:
    body: dict[str, Any]
    match exc:
        case RunConflict():
            body = {
                "error": "A run is already active in this conversation",
                "sessionId": exc.active_session_id,
                "conversationId": exc.conversation_id,
                "detail": str(exc),
            }
            return 409, body, None
        case CursorExpired():
            resync = {"cursor": exc.resync_cursor, "detail": str(exc)}
            body = {"error": "Cursor expired", "sessionId": exc.session_id, "resync": resync}
            return 409, body, None
        case CursorAhead():
            body = {
                "error": "Cursor ahead of the run",
                "sessionId": exc.session_id,
                "newest": exc.newest,
                "detail": str(exc),
            }
            return 409, body, None
        case NothingToRegenerate():
            return _about(409, "Nothing to regenerate", exc.conversation_id)
        case NotANewMessage():
            status, body, _ = _about(409, "Not a new message", exc.conversation_id)
            return status, body | {"detail": str(exc)}, None
        case RunEndedFirst():
            body = {
                "error": "The run ended before it could be stopped",
                "status": exc.status,
                "sessionId": exc.session_id,
                "conversationId": exc.conversation_id,
            }
            return 409, body, None
        case ReplyReplaced():
            body = {
                "error": "The reply was replaced by a newer run",
                "sessionId": exc.session_id,
                "conversationId": exc.conversation_id,
                "detail": str(exc),
            }
            return 409, body, {"X-Session-Id": exc.replaced_session_id}
        case PathConflict():
            body = {"error": "Path conflict", "path": exc.path, "detail": str(exc)}
            return 409, body, None
        case ApprovalDecided():
            ended = exc.approved is None
            body = {
                "error": "The run no longer waits" if ended else "Approval already decided",
                "approvalId": exc.approval_id,
                "sessionId": exc.session_id,
                "approved": exc.approved,
                "detail": str(exc),
            }
            return 409, body, None
    raise TypeError(f"no HTTP answer for {type(exc).__name__}") from exc


def _about(status: int, error: str, conversation_id: str) -> _Answer:
    return status, {"error": error, "conversationId": conversation_id}, None


async def turnstream_error(_request: Request, exc: TurnstreamError) -> JSONResponse:
    if isinstance(exc, Unavailable):
        logger.warning("%s: %s", type(exc).__name__, exc.__cause__ or exc)
        metrics.backend_error(exc)
    return answer(exc)


async def redis_down(request: Request, exc: RedisError) -> JSONResponse:
    """redis-py's connection and timeout errors, met anywhere in a request: RedisUnavailable."""
    unavailable = RedisUnavailable()
    unavailable.__cause__ = exc
    return await turnstream_error(request, unavailable)


async def invalid_request(
    request: Request,
    exc: RequestValidationError,
    *,
    api_prefixes: tuple[str, ...],
    refusal: Refusal,
) -> JSONResponse:
    if refused := await _refused_first(request, api_prefixes, refusal):
        return refused
    # Only location, message and type: echoing the input could fail to encode.
    errors = [{"loc": e["loc"], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


async def http_error(
    request: Request,
    exc: StarletteHTTPException,
    *,
    api_prefixes: tuple[str, ...],
    refusal: Refusal,
) -> Response:
    # Routing's 404 and 405 depend only on the path and method: no 401 or 403 first.
    if exc.status_code == 405:
        # Starlette names the methods of the first route on the path only; a path
        # served by several routes (GET, PATCH, DELETE /conversations/{cid}) has more.
        allowed = allowed_methods(request)
        if not allowed:  # a method the catch-all does not take, on an unknown path
            allowed = [m.strip() for m in (exc.headers or {}).get("Allow", "").split(",")]
        return method_not_allowed(m for m in allowed if m)
    # FastAPI's 400 for a body it cannot parse (JSON that is not UTF-8) comes before
    # the dependencies.
    refused = None
    if exc.status_code != 404:
        refused = await _refused_first(request, api_prefixes, refusal)
    if refused:
        return refused
    return await http_exception_handler(request, exc)


async def client_gone(_request: Request, _exc: ClientDisconnect) -> Response:
    # The client hung up before its body arrived whole: nothing was stored, and no one
    # is left to answer (499, as nginx logs it), so it is no server error either.
    return Response(status_code=499)


async def unexpected(_request: Request, _exc: Exception) -> JSONResponse:
    """A bug: still JSON, so that clients can parse every answer; the log has the traceback."""
    return JSONResponse(
        {"error": "Internal server error", "detail": "This is a bug in turnstream; retry later."},
        status_code=500,
    )


async def _refused_first(
    request: Request, api_prefixes: tuple[str, ...], refusal: Refusal
) -> JSONResponse | None:
    """The 401 or 403 an API request gets before any word about its input, if any.

    FastAPI reads and validates the body and parameters before any dependency runs;
    without this, a caller with no valid token, or with someone else's conversation,
    would hear about their input first.
    """
    if not request.url.path.startswith(tuple(prefix + "/" for prefix in api_prefixes)):
        return None
    refused = await refusal(request)
    return None if refused is None else answer(refused)


def allowed_methods(request: Request) -> list[str]:
    """Every method that some route of the app serves on this request's path, sorted.

    Taken from the routes themselves, so a route added later is covered. Empty if
    no route (the catch-all aside) has this path.
    """
    path = request.scope["path"]
    root_path = request.scope.get("root_path", "")
    if root_path and path.startswith(root_path + "/"):
        path = path[len(root_path) :]
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        regex, served = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is None or not served or getattr(route, "name", None) == CATCH_ALL:
            continue
        if regex.match(path):
            methods.update(served)
    return sorted(methods)


def method_not_allowed(allowed: Iterable[str]) -> JSONResponse:
    return JSONResponse(
        {"detail": "Method Not Allowed"}, status_code=405, headers={"Allow": ", ".join(allowed)}
    )
