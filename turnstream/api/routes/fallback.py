"""What no other route matched under /conversations: still 401, 403 or a JSON 404.

A conversation id holding an encoded slash (`..%2Fx`) is decoded before
routing and matches no route; SPEC §6 still wants 403 for it, like any
malformed id, and an unknown path below one's own conversation gets 404.
"""

from __future__ import annotations

from fastapi import APIRouter

from turnstream.api.deps import CurrentUser, RuntimeDep
from turnstream.api.errors import ApiError, access_denied

router = APIRouter(include_in_schema=False)


@router.api_route("/conversations/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def unmatched(rt: RuntimeDep, user: CurrentUser, rest: str) -> None:
    cid = rest.split("/", 1)[0]
    if not await rt.store.is_owner(cid=cid, user_id=user.id):
        raise access_denied()
    raise ApiError(404, {"detail": "Not Found"})
