"""A run's events as a Server-Sent Events response (SPEC §5): live, or read back from SQL.

When the server shuts down, sse-starlette sets each response's `shutdown_event`
(its `AppStatus`, at uvicorn's SIGTERM): a live stream then ends with a
`server_shutdown` notice, no `id`, so the client resumes on another process,
and is cut only if it has not ended within TURNSTREAM_DRAIN_SECONDS.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
from redis.exceptions import RedisError
from sse_starlette import EventSourceResponse, ServerSentEvent

from turnstream import events, metrics
from turnstream.events import StreamEntry, dumps
from turnstream.keys import RunKeys
from turnstream.runtime import Runtime

logger = logging.getLogger("turnstream.api")


# Frames per network write when replaying an archive.
_REPLAY_BATCH = 500

# How the OpenAPI document declares such a response (`ok=` of errors.documented).
SESSION_HEADER: dict[str, Any] = {
    "X-Session-Id": {
        "description": "The run's session id: resume, inspect or stop it with it",
        "schema": {"type": "string"},
        "required": True,
    }
}
# One event of the stream (OpenAPI before 3.2 has a stream's `schema` describe each event).
EVENT_STREAM: dict[str, Any] = {
    "schema": {
        "type": "object",
        "description": "One event of the run; docs/protocol.md, 'Events', has every field. "
        "`end` is the last, exactly once. A `: ping` comment comes every 15 s. An `error` "
        "without `id` is a notice (Redis lost, server shutting down): resume from the last "
        "`id`.",
        "required": ["event", "data"],
        "properties": {
            "id": {
                "type": "string",
                "pattern": r"^\d+-\d+$",
                "description": "The event's cursor: resume from it for the events after it",
            },
            "event": {"type": "string", "enum": [t.value for t in events.EventType]},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "description": "One JSON object: `seq`, `type`, `ts` and the type's fields",
            },
        },
    },
    "example": 'id: 1796041446076-0\r\nevent: delta\r\ndata: {"seq":3,"type":"delta",'
    '"ts":1796041446076,"text":"and"}\r\n\r\n',
}


def event_stream(
    rt: Runtime, k: RunKeys, cursor: str, *, archived: Sequence[StreamEntry] | None = None
) -> EventSourceResponse:
    """The run's events after `cursor`, followed live; or, given `archived`, those entries.

    Archived entries (runs/archiver.py) keep their ids and fields: their frames are
    the bytes the live stream sent.
    """
    drain = anyio.Event()
    body = _events(rt, k, cursor, drain) if archived is None else _replay(archived)
    return EventSourceResponse(
        metrics.sse_client(body),
        ping=rt.settings.ping_seconds,
        ping_message_factory=lambda: ServerSentEvent(comment="ping"),
        headers={"X-Session-Id": k.sid, "X-Accel-Buffering": "no"},
        shutdown_event=drain,
        shutdown_grace_period=rt.settings.drain_seconds,
    )


async def _events(
    rt: Runtime, k: RunKeys, cursor: str, drain: anyio.Event
) -> AsyncIterator[bytes | ServerSentEvent]:
    ended = False
    try:
        async for batch in rt.hub.follow(k, cursor, stop=drain):
            # All entries that are ready go out in one network write.
            yield b"".join(entry.sse_frame for entry in batch)
            ended = batch[-1].is_end
    except RedisError as exc:
        # Mid-stream there is no status code left to change: say so, and let the client resume.
        logger.warning("stream of %s interrupted: %s", k.sid, exc)
        metrics.backend_error(exc)
        yield notice("Redis unavailable; resume later.", "redis_unavailable")
        return
    if drain.is_set() and not ended:
        yield notice("Server shutting down; resume on another.", "server_shutdown")


def notice(message: str, code: str) -> ServerSentEvent:
    """An `error` event that is not the run's: no `id`, no `seq`; the client resumes."""
    event = events.error(message, code)
    data = {"type": event.type.value, **event.data}
    return ServerSentEvent(event=event.type.value, data=dumps(data))


async def _replay(archived: Sequence[StreamEntry]) -> AsyncIterator[bytes | ServerSentEvent]:
    for start in range(0, len(archived), _REPLAY_BATCH):
        yield b"".join(entry.sse_frame for entry in archived[start : start + _REPLAY_BATCH])
