"""The wire format of run events (SPEC §5), in one module.

An agent yields `Event`s. The run writes each one into its Redis stream as the
fields `type`, `seq`, `ts` and `data` (JSON); a client receives each stream
entry as one SSE event whose `id` is the entry id (the cursor) and whose data
is a flat JSON object: `seq`, `type`, `ts` and the event's own fields.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any


class EventType(enum.StrEnum):
    QUEUED = "queued"  # the run was accepted
    START = "start"  # a worker claimed it
    DELTA = "delta"  # {"text"}: reply text
    REASONING = "reasoning"  # {"text"}: model reasoning, not part of the reply
    TOOL_CALL = "tool_call"  # {"id", "name", "arguments"}
    TOOL_RESULT = "tool_result"  # {"id", "content", "isError"}
    USAGE = "usage"  # {"prompt_tokens", "completion_tokens"}
    FILE = "file"  # {"path", "size", "mediaType", "sha256", "version", "url", "deleted"?}
    # {"approvalId", "toolCallId", "name", "arguments", "expiresAt"}: the call waits for the
    # user; the run holds no worker until every call of its step is decided
    APPROVAL_REQUEST = "approval_request"
    APPROVAL = "approval"  # {"approvalId", "toolCallId", "approved", "reason"}: decided
    # {"summarizedThrough", "tokensBefore", "tokensAfter", "model"} or, when the summary
    # failed, {"summarizedThrough": null, "droppedThrough", "error", ...}: context/compaction.py
    COMPACTION = "compaction"
    ERROR = "error"  # {"message", "code"}
    END = "end"  # {"status", "messageId"}: always the last event, exactly once


@dataclass(frozen=True)
class Event:
    type: EventType
    data: dict[str, Any] = field(default_factory=dict)


def queued(session_id: str) -> Event:
    return Event(EventType.QUEUED, {"sessionId": session_id})


def start(worker: str) -> Event:
    return Event(EventType.START, {"worker": worker})


def delta(text: str) -> Event:
    return Event(EventType.DELTA, {"text": text})


def reasoning(text: str) -> Event:
    return Event(EventType.REASONING, {"text": text})


def tool_call(id: str, name: str, arguments: str) -> Event:
    return Event(EventType.TOOL_CALL, {"id": id, "name": name, "arguments": arguments})


def tool_result(id: str, content: str, *, is_error: bool = False) -> Event:
    """The result of tool call `id`; `is_error` when the tool failed (content says how)."""
    return Event(EventType.TOOL_RESULT, {"id": id, "content": content, "isError": is_error})


def usage(prompt_tokens: int, completion_tokens: int) -> Event:
    return Event(
        EventType.USAGE,
        {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
    )


def file(entry: dict[str, Any], url: str | None, *, deleted: bool = False) -> Event:
    """A workspace file the run wrote, `url` its signed download link; or one it deleted
    (`deleted`, no link)."""
    fields = ("path", "size", "mediaType", "sha256", "version")
    data = {name: entry[name] for name in fields} | {"url": url}
    return Event(EventType.FILE, data | {"deleted": True} if deleted else data)


def approval_request(
    approval_id: str, call_id: str, name: str, arguments: str, expires_at: int
) -> Event:
    """Tool call `call_id` waits for the user's decision until `expires_at` (ms)."""
    data = {"approvalId": approval_id, "toolCallId": call_id, "name": name}
    return Event(
        EventType.APPROVAL_REQUEST, data | {"arguments": arguments, "expiresAt": expires_at}
    )


def approval(approval_id: str, call_id: str, *, approved: bool, reason: str) -> Event:
    data = {"approvalId": approval_id, "toolCallId": call_id, "approved": approved}
    return Event(EventType.APPROVAL, data | {"reason": reason})


def compaction(
    *,
    tokens_before: int,
    tokens_after: int,
    summarized_through: str | None = None,
    model: str | None = None,
    dropped_through: str | None = None,
    error: str | None = None,
) -> Event:
    """The history was compacted before the agent ran: the oldest turns, through message
    `summarized_through`, are a stored summary now (written by `model`; None: a note), or,
    when the summary failed (`error`), left out of this turn through `dropped_through`."""
    data: dict[str, Any] = {
        "summarizedThrough": summarized_through,
        "tokensBefore": tokens_before,
        "tokensAfter": tokens_after,
    }
    if dropped_through is None:
        data["model"] = model
    else:
        data |= {"droppedThrough": dropped_through, "error": error}
    return Event(EventType.COMPACTION, data)


def error(message: str, code: str) -> Event:
    return Event(EventType.ERROR, {"message": message, "code": code})


def end(status: str, message_id: str) -> Event:
    return Event(EventType.END, {"status": status, "messageId": message_id})


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class StreamEntry:
    """One entry read back from a run's stream.

    The data stays JSON text until someone asks for it: relaying an entry to a
    client splices that text into the SSE frame, built once however many
    clients follow the run.
    """

    id: str
    type: str
    seq: int
    ts: int
    raw: str  # the event's data, a JSON object as `dumps` wrote it

    @classmethod
    def from_redis(cls, entry_id: str | bytes, fields: dict[Any, Any]) -> StreamEntry:
        f = {_text(k): _text(v) for k, v in fields.items()}
        return cls(_text(entry_id), f["type"], int(f["seq"]), int(f["ts"]), f["data"])

    @classmethod
    def from_notice(cls, payload: str) -> StreamEntry:
        """An entry as the append script publishes it: id, type, seq, ts and data, one per line.

        JSON written by `dumps` never holds a raw newline, so the data is the rest.
        """
        entry_id, type_, seq, ts, raw = payload.split("\n", 4)
        return cls(entry_id, type_, int(seq), int(ts), raw)

    @cached_property
    def data(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.raw)
        return parsed

    def sse_data(self) -> str:
        """The SSE `data:` line: seq, type and ts, then the event's own fields, flat."""
        head = f'{{"seq":{self.seq},"type":{json.dumps(self.type)},"ts":{self.ts}'
        return head + ("," + self.raw[1:] if self.raw != "{}" else "}")

    @cached_property
    def sse_frame(self) -> bytes:
        """The whole SSE event (SPEC §5); its `id` is the stream entry id, the cursor."""
        return f"id: {self.id}\r\nevent: {self.type}\r\ndata: {self.sse_data()}\r\n\r\n".encode()

    @property
    def is_end(self) -> bool:
        return self.type == EventType.END


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


# A cursor as sent: a stream entry id ("<ms>-<n>", "<ms>" meaning "<ms>-0"), or empty for
# "from the start", as "0" and "0-0" are. 19 digits keep each number under 2**64, as Redis
# needs, so that the OpenAPI document (routes/runs.py) states the whole rule.
CURSOR_PATTERN = r"^(\d{1,19}(-\d{1,19})?)?$"
_CURSOR = re.compile(CURSOR_PATTERN)


def parse_cursor(raw: str | None) -> str | None:
    """Return a normalised cursor, or None when it is malformed."""
    if raw is None or raw == "":
        return "0-0"
    if not _CURSOR.match(raw):
        return None
    ms, _, n = raw.partition("-")
    return f"{int(ms)}-{int(n or 0)}"


def cursor_key(cursor: str) -> tuple[int, int]:
    ms, _, n = cursor.partition("-")
    return int(ms), int(n or 0)
