"""What no other route matched under /conversations: a 405, or still 401, 403 or a JSON 404.

A path that some route serves, asked with a method none of them takes, gets
405 with `Allow` (SPEC §6), before any credential is looked at: the method and
the path template alone decide it, and they are public in the OpenAPI
document. Without this route Starlette would say so by itself; with it, this
catch-all would swallow the request as an unknown path.

A conversation id holding an encoded slash (`..%2Fx`) is decoded before
routing and matches no route; SPEC §6 still wants 403 for it, like any
malformed id, and an unknown path below one's own conversation gets 404.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from turnstream.api.auth import authenticate
from turnstream.api.deps import RuntimeDep
from turnstream.api.errors import CATCH_ALL, allowed_methods, method_not_allowed
from turnstream.errors import AccessDenied, UnknownPath

router = APIRouter(include_in_schema=False)

# Every method a client may try; anything else is refused by routing itself (405).
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]


@router.api_route("/conversations/{rest:path}", methods=_METHODS, name=CATCH_ALL)
async def unmatched(request: Request, rt: RuntimeDep, rest: str) -> Response:
    if allowed := allowed_methods(request):
        return method_not_allowed(allowed)
    # Not a declared dependency, so that the 405 above needs no credentials.
    user = await authenticate(
        rt, request.app.state.token_cache, authorization=request.headers.get("authorization")
    )
    cid = rest.split("/", 1)[0]
    if not await rt.store.is_owner(cid=cid, user_id=user.id):
        raise AccessDenied()
    raise UnknownPath()
