"""A bound on request headers: past it, `431` with a JSON body, before any route runs.

uvicorn's default HTTP parser (httptools) reads headers of any size: measured
on `turnstream serve`, a 1 MiB header got a normal 200 and a 64 MiB one kept a
core busy for 9.5 s. This middleware is the rule under any ASGI server;
`serve` also stops reading a request head at a multiple of the bound
(`http_protocol.py`), so that a huge one is never buffered whole.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

# Apache's default (LimitRequestFields); browsers send about 10-20.
MAX_HEADER_FIELDS = 100
TOO_LARGE = "Request headers too large"


def header_bytes(headers: Iterable[tuple[bytes, bytes]]) -> int:
    """Their size on the wire: `name: value` and CRLF for each header."""
    return sum(len(name) + len(value) + 4 for name, value in headers)


def too_large_detail(problem: str) -> str:
    return (
        f"{problem}. Send fewer or smaller headers (an oversized cookie is a common "
        "cause), or ask the operator to raise TURNSTREAM_MAX_HEADER_BYTES."
    )


class HeaderLimit:
    """Pure ASGI, so that streaming responses pass through untouched."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, max_fields: int = MAX_HEADER_FIELDS
    ) -> None:
        assert max_bytes > 0 and max_fields > 0, "header limits must be positive"
        self.app = app
        self.max_bytes = max_bytes
        self.max_fields = max_fields

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            detail = self._refusal(scope["headers"])
            if detail is not None:
                body = {"error": TOO_LARGE, "detail": detail}
                await JSONResponse(body, status_code=431)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        if len(headers) > self.max_fields:
            return too_large_detail(
                f"The request has {len(headers)} header fields; at most {self.max_fields} "
                "are accepted"
            )
        size = header_bytes(headers)
        if size > self.max_bytes:
            return too_large_detail(
                f"The request's headers take {size} bytes; at most {self.max_bytes} are accepted"
            )
        return None
