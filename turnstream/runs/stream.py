"""Reading a run's stream: everything after a cursor, then live until the `end` event."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis

from turnstream.events import StreamEntry, cursor_key
from turnstream.keys import RunKeys
from turnstream.runs.state import RunStatus

_BATCH = 500
# Below the Redis client's socket timeout (runtime.SOCKET_TIMEOUT), so a quiet stream never
# looks like a dead connection.
BLOCK_MS = 2000


async def follow(
    redis: Redis, k: RunKeys, cursor: str, *, block_ms: int = BLOCK_MS
) -> AsyncIterator[StreamEntry]:
    """Yield the entries after `cursor` (exclusive) until `end`.

    Also returns when the run has ended (or expired) and nothing newer is left:
    a cursor at or past the end gets an empty, finished stream, never a hang.
    """
    last = cursor
    while True:
        entries = _entries(await redis.xread({k.stream: last}, count=_BATCH, block=block_ms))
        if not entries:
            status = await redis.get(k.status)
            if status is None or not RunStatus(status).active:
                entries = _entries(await redis.xread({k.stream: last}, count=_BATCH))
                if not entries:
                    return
        for entry_id, fields in entries:
            entry = StreamEntry.from_redis(entry_id, fields)
            last = entry.id
            yield entry
            if entry.is_end:
                return


async def expired(redis: Redis, k: RunKeys, cursor: str) -> str | None:
    """If entries after `cursor` were trimmed away, the cursor to resync from; else None."""
    trimmed_through = await redis.hget(k.run, "trimmed_through")
    if trimmed_through and cursor_key(cursor) < cursor_key(trimmed_through):
        return trimmed_through
    return None


def _entries(reply: Any) -> list[tuple[str, dict[str, str]]]:
    """XREAD's entries for our single stream, whether RESP2 (list) or RESP3 (dict) shaped."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return next(iter(reply.values()))[0] if reply else []
    return reply[0][1]
