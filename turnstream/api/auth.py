"""Who is calling: an opaque bearer token (stored hashed) or, if configured, an HS256 JWT."""

from __future__ import annotations

import time
from collections import OrderedDict

import jwt
from fastapi import Request
from fastapi.security import HTTPBearer

from turnstream.errors import Unauthorized
from turnstream.ids import is_user_id
from turnstream.runtime import Runtime
from turnstream.store import users
from turnstream.store.models import User

MAX_TOKEN_LENGTH = 4096


class TokenCache:
    """Users of recently checked opaque tokens, for `ttl` seconds, keyed by the token's hash.

    Saves a database query on every request; the price is that a token removed
    from the database keeps working here for up to `ttl` seconds.
    """

    def __init__(self, *, ttl: float = 60.0, size: int = 10_000) -> None:
        self.ttl = ttl
        self.size = size
        self._entries: OrderedDict[str, tuple[float, User]] = OrderedDict()

    def get(self, digest: str) -> User | None:
        entry = self._entries.get(digest)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, digest: str, user: User) -> None:
        self._entries[digest] = (time.monotonic() + self.ttl, user)
        self._entries.move_to_end(digest)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


class _BearerScheme(HTTPBearer):
    """Bearer auth as OpenAPI declares it, so that /docs offers "Authorize".

    It only declares: as a dependency it hands over the raw `Authorization`
    header (or None), and `authenticate` does every check and every 401, exactly
    as for a caller that never looked at the document.
    """

    async def __call__(self, request: Request) -> str | None:  # type: ignore[override]
        return request.headers.get("authorization")


bearer = _BearerScheme(
    auto_error=False,
    scheme_name="bearerAuth",
    description="A turnstream token (`ts_…`, from `turnstream token create USER`) or, "
    "when configured, a JWT. Sent as `Authorization: Bearer <token>`.",
)


async def authenticate(rt: Runtime, cache: TokenCache, *, authorization: str | None) -> User:
    """The user whose credential `authorization` (the header's value) is; else Unauthorized."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Missing bearer token: send 'Authorization: Bearer <token>'.")
    if len(token) > MAX_TOKEN_LENGTH:
        raise Unauthorized("Invalid token.")
    if token.startswith(users.TOKEN_PREFIX):
        digest = users.hash_token(token)
        user = cache.get(digest)
        if user is None:
            async with rt.sessions() as db:
                user = await users.user_for_token(db, token=token)
            if user is None:
                raise Unauthorized("Invalid token.")
            cache.put(digest, user)
        return user
    if rt.settings.jwt_secret:
        return await _from_jwt(rt, token, rt.settings.jwt_secret)
    raise Unauthorized("Invalid token.")


async def _from_jwt(rt: Runtime, token: str, secret: str) -> User:
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["sub"]})
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"Invalid token: {exc}.") from exc
    sub = claims.get("sub")
    if not isinstance(sub, str) or not is_user_id(sub):
        raise Unauthorized("Invalid token: 'sub' must be a user id (1-64 of [A-Za-z0-9._@-]).")
    email = claims.get("email") if isinstance(claims.get("email"), str) else None
    async with rt.sessions() as db:
        user = await users.ensure_user(db, user_id=sub, email=email)
        await db.commit()
    return user
