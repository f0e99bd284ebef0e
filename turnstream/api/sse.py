"""A run's events as a Server-Sent Events response (SPEC §5)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from redis.exceptions import RedisError
from sse_starlette import EventSourceResponse, ServerSentEvent

from turnstream import events
from turnstream.events import dumps
from turnstream.keys import RunKeys
from turnstream.runtime import Runtime

logger = logging.getLogger("turnstream.api")


def event_stream(rt: Runtime, k: RunKeys, cursor: str) -> EventSourceResponse:
    return EventSourceResponse(
        _events(rt, k, cursor),
        ping=rt.settings.ping_seconds,
        ping_message_factory=lambda: ServerSentEvent(comment="ping"),
        headers={"X-Session-Id": k.sid, "X-Accel-Buffering": "no"},
    )


async def _events(rt: Runtime, k: RunKeys, cursor: str) -> AsyncIterator[bytes | ServerSentEvent]:
    try:
        async for batch in rt.hub.follow(k, cursor):
            # All entries that are ready go out in one network write.
            yield b"".join(entry.sse_frame for entry in batch)
    except RedisError as exc:
        # Mid-stream there is no status code left to change: say so, and let the client resume.
        logger.warning("stream of %s interrupted: %s", k.sid, exc)
        notice = events.error("Redis unavailable; resume later.", "redis_unavailable")
        data = {"type": notice.type.value, **notice.data}
        yield ServerSentEvent(event=notice.type.value, data=dumps(data))
