"""Short-lived signed tokens for resuming one conversation's streams.

A browser's `EventSource` cannot send an `Authorization` header. A client that
holds a bearer token asks for a stream token, then opens
`…/resume/{session_id}?token=…`. The token names the user and the
conversation and expires in minutes. It opens that conversation's resume
route and nothing else, and it is worthless without the server's key.

The key is `TURNSTREAM_SECRET_KEY`. If that is unset, it is a random key
kept in Redis (`chat:secret`), shared by every API process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets

from redis.asyncio import Redis

from turnstream import keys
from turnstream.clock import now_ms
from turnstream.live.client import maybe_text

TTL_SECONDS = 300


async def signing_key(redis: Redis, configured: str | None) -> bytes:
    if configured:
        return configured.encode()
    while True:
        await redis.set(keys.SECRET, secrets.token_urlsafe(32), nx=True)
        # None only if the key went between the two commands (a FLUSHALL): set it again,
        # so that every process still signs with the one key Redis holds.
        stored = maybe_text(await redis.get(keys.SECRET))
        if stored is not None:
            return stored.encode()


def issue(key: bytes, *, user_id: str, cid: str, ttl_seconds: int = TTL_SECONDS) -> tuple[str, int]:
    """A token for `user_id` to resume runs of `cid`, and when it expires (ms)."""
    expires = now_ms() + ttl_seconds * 1000
    body = _b64(json.dumps({"u": user_id, "c": cid, "e": expires}, separators=(",", ":")).encode())
    return f"{body}.{_sign(key, body)}", expires


def verify(key: bytes, token: str, *, cid: str) -> str | None:
    """The user the token speaks for, if it is genuine, unexpired and for `cid`; else None."""
    if not token.isascii():
        return None  # ours are base64url; and compare_digest raises on non-ASCII text
    body, _, signature = token.partition(".")
    if not hmac.compare_digest(signature, _sign(key, body)):
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except ValueError:
        return None
    if claims.get("c") != cid or not isinstance(claims.get("e"), int) or claims["e"] < now_ms():
        return None
    user_id = claims.get("u")
    return user_id if isinstance(user_id, str) else None


def _sign(key: bytes, body: str) -> str:
    return _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
