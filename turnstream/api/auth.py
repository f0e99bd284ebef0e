"""Who is calling: an opaque bearer token (stored hashed) or, if configured, an HS256 JWT."""

from __future__ import annotations

import jwt

from turnstream.api.errors import ApiError
from turnstream.ids import is_user_id
from turnstream.runtime import Runtime
from turnstream.store import users
from turnstream.store.models import User

_CHALLENGE = {"WWW-Authenticate": "Bearer"}
MAX_TOKEN_LENGTH = 4096


def unauthorized(detail: str) -> ApiError:
    return ApiError(401, {"detail": detail}, headers=_CHALLENGE)


async def authenticate(rt: Runtime, authorization: str | None) -> User:
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("Missing bearer token: send 'Authorization: Bearer <token>'.")
    if len(token) > MAX_TOKEN_LENGTH:
        raise unauthorized("Invalid token.")
    if token.startswith(users.TOKEN_PREFIX):
        async with rt.sessions() as db:
            user = await users.user_for_token(db, token=token)
        if user is None:
            raise unauthorized("Invalid token.")
        return user
    if rt.settings.jwt_secret:
        return await _from_jwt(rt, token, rt.settings.jwt_secret)
    raise unauthorized("Invalid token.")


async def _from_jwt(rt: Runtime, token: str, secret: str) -> User:
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["sub"]})
    except jwt.PyJWTError as exc:
        raise unauthorized(f"Invalid token: {exc}.") from exc
    sub = claims.get("sub")
    if not isinstance(sub, str) or not is_user_id(sub):
        raise unauthorized("Invalid token: 'sub' must be a user id (1-64 of [A-Za-z0-9._@-]).")
    email = claims.get("email") if isinstance(claims.get("email"), str) else None
    async with rt.sessions() as db:
        user = await users.ensure_user(db, user_id=sub, email=email)
        await db.commit()
    return user
