"""Each request's context: its id (`X-Request-Id`), the ids its log lines carry, and
the resume counter, which needs the response's status.

The id is the client's `X-Request-Id` when it is 1-128 characters of
`[A-Za-z0-9._:+/=@-]` (a UUID, a proxy's trace id), otherwise a new one (32 hex
digits): an id never carries what a log line or a header could not hold as it
is. It is echoed in the response's `X-Request-Id` and set for the request's log
lines (turnstream/logs.py), to which the dependencies add the user and the
conversation.

Resumes are counted here, where both the request (where it resumes from) and the
answer (its status: 200, or 404 for an unknown run, 409 for an expired cursor,
…) are seen: `turnstream_resumes_total{cursor, status}`.
"""

from __future__ import annotations

import random
import re
from urllib.parse import parse_qs

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from turnstream import logs, metrics
from turnstream.events import parse_cursor

HEADER = "X-Request-Id"
_VALID = re.compile(rb"[A-Za-z0-9._:+/=@-]{1,128}")
RESUME_PATH = "/resume/{session_id}"  # the end of the resume route's path template


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's id when it is fit to log and echo, else a new one."""
    for name, value in headers:
        if name == b"x-request-id":
            return value.decode() if _VALID.fullmatch(value) else new_id()
    return new_id()


def new_id() -> str:
    """32 random hex digits. Not a secret, so no urandom call (uuid4's) on every request."""
    return f"{random.getrandbits(128):032x}"


def resume_cursor(scope: Scope) -> str:
    """Where a resume request resumes from: `start`, `cursor` or `last_event_id`."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if "cursor" in query:
        raw: str | None = query["cursor"][0]
    else:
        if any(name == b"last-event-id" for name, _value in scope["headers"]):
            return "last_event_id"
        raw = None
    return "start" if parse_cursor(raw) == "0-0" else "cursor"


class RequestContext:
    """Pure ASGI, so that streaming responses pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope["headers"])
        token = logs.fresh(request_id=rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = rid
                _count_resume(scope, message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logs.restore(token)


def _count_resume(scope: Scope, status: int) -> None:
    route = scope.get("route")
    if route is not None and getattr(route, "path", "").endswith(RESUME_PATH):
        metrics.resumed(resume_cursor(scope), status)
