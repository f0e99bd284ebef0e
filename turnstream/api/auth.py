"""Who is calling: an opaque bearer token (stored hashed) or, if configured, a JWT.

A token that starts with `ts_` is only ever an opaque token. Any other is a JWT:
with TURNSTREAM_JWT_SECRET set, one whose header says HS256 is checked with that
secret and nothing else; with TURNSTREAM_JWKS_URL set, every other one is checked
with the identity provider's public keys (`turnstream.api.jwks`). So an HS256
token never meets the provider's keys, and an RS256 token never meets the secret.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import jwt
from fastapi import Request
from fastapi.security import HTTPBearer

from turnstream.api.jwks import ProviderKeys, verify
from turnstream.config import Settings
from turnstream.errors import Unauthorized
from turnstream.ids import is_user_id
from turnstream.runtime import Runtime
from turnstream.store import users
from turnstream.store.models import User

# Identity providers put roles and groups in their JWTs; 8 KiB fits those and stays
# well inside the 16 KiB header limit.
MAX_TOKEN_LENGTH = 8192
# The users table's limit; a longer `email` claim is not stored.
MAX_EMAIL_LENGTH = 320


class TokenCache:
    """Users of recently checked opaque tokens, for `ttl` seconds, keyed by the token's hash.

    Saves a database query on every request; the price is that a token removed
    from the database keeps working here for up to `ttl` seconds.

    It also holds the identity provider's keys (`provider_keys`): there is one of each per app.
    """

    def __init__(self, *, ttl: float = 60.0, size: int = 10_000) -> None:
        self.ttl = ttl
        self.size = size
        self._entries: OrderedDict[str, tuple[float, User]] = OrderedDict()
        self._provider_keys: ProviderKeys | None = None

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

    def provider_keys(self, settings: Settings) -> ProviderKeys:
        """The keys published at TURNSTREAM_JWKS_URL, kept from their first use on."""
        if self._provider_keys is None:
            assert settings.jwks_url, "provider keys need TURNSTREAM_JWKS_URL"
            self._provider_keys = ProviderKeys(
                settings.jwks_url,
                cache_seconds=settings.jwks_cache_seconds,
                refetch_seconds=settings.jwks_refetch_seconds,
            )
        return self._provider_keys


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
    "when configured, a JWT: HS256 with the server's secret, or from the identity "
    "provider whose JWKS URL is set. Sent as `Authorization: Bearer <token>`.",
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
    settings = rt.settings
    if settings.jwt_secret and (not settings.jwks_url or _algorithm(token) == "HS256"):
        return await _from_jwt(rt, token, settings.jwt_secret)
    if settings.jwks_url:
        return await _from_provider(rt, cache.provider_keys(settings), token)
    raise Unauthorized("Invalid token.")


def _algorithm(token: str) -> object:
    """The `alg` a JWT's header names, unchecked; None if it has no readable header."""
    try:
        return jwt.get_unverified_header(token).get("alg")
    except jwt.PyJWTError:
        return None


async def _from_jwt(rt: Runtime, token: str, secret: str) -> User:
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["sub"]})
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"Invalid token: {exc}.") from exc
    return await _user_of(rt, claims, "sub")


async def _from_provider(rt: Runtime, keys: ProviderKeys, token: str) -> User:
    settings = rt.settings
    claim = settings.jwt_user_claim
    claims = await verify(
        keys,
        token,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        required=[claim],
    )
    return await _user_of(rt, claims, claim)


async def _user_of(rt: Runtime, claims: dict[str, Any], claim: str) -> User:
    """The user whose id is the token's `claim`, created on first sight (`email` kept)."""
    user_id = claims.get(claim)
    if not isinstance(user_id, str) or not is_user_id(user_id):
        raise Unauthorized(f"Invalid token: {claim!r} must be a user id (1-64 of [A-Za-z0-9._@-]).")
    email = claims.get("email")
    if not isinstance(email, str) or len(email) > MAX_EMAIL_LENGTH:
        email = None
    async with rt.sessions() as db:
        user = await users.ensure_user(db, user_id=user_id, email=email)
        await db.commit()
    return user
