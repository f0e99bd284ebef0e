"""Short-lived signed tokens: stream tokens, and the links of workspace files.

A browser's `EventSource` cannot send an `Authorization` header. A client that
holds a bearer token asks for a stream token, then opens
`…/resume/{session_id}?token=…`. The token names the user and the
conversation and expires in minutes. It opens that conversation's resume
route and nothing else, and it is worthless without the server's key.

A file link (`…/files/{path}?token=…`, in `file` events and listings) is the
same kind of token with the file's path in it, so that `<a href>` and
`<img src>` work: it opens that one file of that conversation, and a stream
token opens no file (nor a file link a stream).

The key is `TURNSTREAM_SECRET_KEY`. If that is unset, it is a random key
kept in Redis (`chat:secret`), shared by every API process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from urllib.parse import quote

from redis.asyncio import Redis

from turnstream import keys
from turnstream.clock import now_ms
from turnstream.config import Settings
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


def issue(
    key: bytes,
    *,
    user_id: str,
    cid: str,
    path: str | None = None,
    ttl_seconds: int = TTL_SECONDS,
) -> tuple[str, int]:
    """A token for `user_id` to resume runs of `cid` (or to read its file `path`), and when it
    expires (ms)."""
    expires = now_ms() + ttl_seconds * 1000
    claims: dict[str, str | int] = {"u": user_id, "c": cid, "e": expires}
    if path is not None:
        claims["p"] = path
    body = _b64(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode())
    return f"{body}.{_sign(key, body)}", expires


def verify(key: bytes, token: str, *, cid: str, path: str | None = None) -> str | None:
    """The user the token speaks for, if it is genuine, unexpired and for `cid` (and exactly
    for file `path`, or for no file when `path` is None); else None."""
    if not token.isascii():
        return None  # ours are base64url; and compare_digest raises on non-ASCII text
    body, _, signature = token.partition(".")
    if not hmac.compare_digest(signature, _sign(key, body)):
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except ValueError:
        return None
    if not isinstance(claims, dict) or claims.get("c") != cid or claims.get("p") != path:
        return None
    if not isinstance(claims.get("e"), int) or claims["e"] < now_ms():
        return None
    user_id = claims.get("u")
    return user_id if isinstance(user_id, str) else None


def _sign(key: bytes, body: str) -> str:
    return _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def file_links(
    redis: Redis, settings: Settings, *, user_id: str, cid: str, paths: list[str]
) -> list[str]:
    """The signed download links of workspace files: the API's file route with a file token
    each, valid for `file_link_seconds`.

    Relative to the server, as the page and the AI SDK use them (the Python client joins
    them to its base URL).
    """
    key = await signing_key(redis, settings.secret_key)
    ttl = settings.file_link_seconds
    links = []
    for path in paths:
        token, _ = issue(key, user_id=user_id, cid=cid, path=path, ttl_seconds=ttl)
        links.append(f"/api/v1/conversations/{cid}/files/{quote(path)}?token={token}")
    return links
