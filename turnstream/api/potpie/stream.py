"""A run's events as potpie's streamed reply: JSON objects one after another, no framing.

potpie-ui reads a reply as a run of JSON objects and takes from each `message`
(text it appends), `tool_calls` (entries it keys by `call_id`) and `thinking`
(which replaces what it showed, so each chunk carries all the reasoning so far):

    delta                     {message: text, citations: [], tool_calls: [], thinking}
    reasoning                 {message: "", ..., thinking: all of it so far}
    tool_call                 {message: "", tool_calls: [{event_type: "call", ...}], ...}
    tool_result               {... tool_calls: [{event_type: "result" | "error", ...}]}
    error                     potpie's error object: {event: "error", status: "error",
                              message, ...}; potpie-ui shows its `message` in the reply
    end                       nothing: the response ends
    queued, start, usage,     nothing
      file, and later types
    (Redis lost, shutdown)    an error object, as potpie answers a stream it cannot go on

It is the same stream as turnstream's: the events come from the run's Redis
stream after a cursor (or from its archive), followed live (runs are not
affected by who reads them). While idle, a newline goes out every
TURNSTREAM_PING_SECONDS: whitespace between objects, which potpie-ui's parsers skip.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import anyio
from redis.exceptions import RedisError
from sse_starlette import EventSourceResponse, ServerSentEvent

from turnstream import metrics
from turnstream.api.potpie.shapes import tool_call, tool_result
from turnstream.events import EventType, StreamEntry, dumps
from turnstream.keys import RunKeys
from turnstream.runtime import Runtime

logger = logging.getLogger("turnstream.api")

Chunk = dict[str, Any]


class ReplyChunks:
    """The chunks of one reply, built from its run's events in order."""

    def __init__(self, k: RunKeys) -> None:
        self.k = k
        self.ended = False
        self.thinking: str | None = None
        self._calls: dict[str, tuple[str, str | None]] = {}  # call id -> name, arguments

    def feed(self, type_: str, data: Mapping[str, Any]) -> list[Chunk]:
        """The chunks for one event (`type_`, its data fields); none after `end`."""
        if self.ended:
            return []
        match type_:
            case EventType.DELTA:
                return [self._chunk(message=str(data.get("text", "")))]
            case EventType.REASONING:
                self.thinking = (self.thinking or "") + str(data.get("text", ""))
                return [self._chunk()]
            case EventType.TOOL_CALL:
                call_id, name = str(data.get("id", "")), str(data.get("name", ""))
                arguments = data.get("arguments")
                self._calls[call_id] = (name, arguments if isinstance(arguments, str) else None)
                return [self._chunk(tool_calls=[tool_call(call_id, *self._calls[call_id])])]
            case EventType.TOOL_RESULT:
                call_id = str(data.get("id", ""))
                name, arguments = self._calls.get(call_id, ("", None))
                content, failed = str(data.get("content", "")), bool(data.get("isError"))
                entry = tool_result(call_id, name, arguments, content, is_error=failed)
                return [self._chunk(tool_calls=[entry])]
            case EventType.ERROR:
                return [self.error(str(data.get("message") or "The run failed."))]
            case EventType.END:
                self.ended = True
        return []

    def frames(self, entries: Sequence[StreamEntry]) -> bytes:
        """What potpie-ui reads of these events, in one piece."""
        return frames([chunk for entry in entries for chunk in self.feed(entry.type, entry.data)])

    def error(self, message: str) -> Chunk:
        """potpie's error object, for a run that failed or a stream that cannot go on."""
        return {
            "event": "error",
            "status": "error",
            **self._chunk(message=message),
            "conversation_id": self.k.cid,
            "run_id": self.k.sid,
        }

    def _chunk(self, message: str = "", tool_calls: list[Chunk] | None = None) -> Chunk:
        return {
            "message": message,
            "citations": [],
            "tool_calls": tool_calls or [],
            "thinking": self.thinking,
        }


def frames(chunks: Sequence[Chunk]) -> bytes:
    return "".join(dumps(chunk) for chunk in chunks).encode()


class _Newline(ServerSentEvent):
    """The keep-alive: potpie-ui's parsers skip whitespace between objects, not SSE comments."""

    def encode(self) -> bytes:
        return b"\n"


def reply_stream(
    rt: Runtime, k: RunKeys, position: str, *, archived: Sequence[StreamEntry] | None = None
) -> EventSourceResponse:
    """The run's reply after `position`, followed live; or, given `archived`, those entries."""
    drain = anyio.Event()  # set when the server shuts down (api/sse.py)
    reply = ReplyChunks(k)
    body = _live(rt, k, position, reply, drain) if archived is None else _replay(archived, reply)
    return EventSourceResponse(
        metrics.sse_client(body),
        ping=rt.settings.ping_seconds,
        ping_message_factory=_Newline,
        headers={"X-Session-Id": k.sid, "X-Accel-Buffering": "no"},
        shutdown_event=drain,
        shutdown_grace_period=rt.settings.drain_seconds,
    )


async def _live(
    rt: Runtime, k: RunKeys, position: str, reply: ReplyChunks, drain: anyio.Event
) -> AsyncIterator[bytes]:
    try:
        async for batch in rt.hub.follow(k, position, stop=drain):
            body = reply.frames(batch)
            if body:  # all that is ready goes out in one write
                yield body
    except RedisError as exc:
        # Mid-stream there is no status left to change: say so; the run goes on.
        logger.warning("potpie stream of %s interrupted: %s", k.sid, exc)
        metrics.backend_error(exc)
        yield frames([reply.error("Redis unavailable; reload to resume.")])
        return
    if drain.is_set() and not reply.ended:
        yield frames([reply.error("Server shutting down; reload to resume.")])


async def _replay(archived: Sequence[StreamEntry], reply: ReplyChunks) -> AsyncIterator[bytes]:
    yield reply.frames(archived)
