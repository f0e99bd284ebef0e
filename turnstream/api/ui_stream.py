"""A run's events as the AI SDK's UI message stream (npm `ai`, major 7): a pure translation.

The `/chat` routes (routes/chat.py) feed each native event (SPEC §5) to a
`UIMessageStream` and send the chunks it returns, each as one SSE frame
`data: {json}`, then `data: [DONE]` once the run has ended:

    (the response opens)      start {messageId}
    queued, start, usage      nothing
    delta                     [start-step] [reasoning-end] [text-start] text-delta
    reasoning                 [start-step] [text-end] [reasoning-start] reasoning-delta
    tool_call                 [start-step] [text-end | reasoning-end] tool-input-available
    tool_result               tool-output-available, or tool-output-error when isError;
                              nothing for a denied call (its `approval` said so)
    approval_request          tool-approval-request {approvalId, toolCallId}
    approval                  tool-approval-response {approvalId, approved, reason};
                              tool-output-denied too when denied
    file                      file {url, mediaType}: the signed link; nothing for a deletion
    compaction                data-compaction {data: the event's fields}, transient
    error                     [text-end | reasoning-end] error {errorText}
    end                       [text-end | reasoning-end] [finish-step] [abort] finish; [DONE]
    (Redis lost mid-stream)   error {errorText}, and no [DONE]: the run goes on; reconnect
    (the server shuts down)   the same
    (the run waits on calls)  [finish-step] finish "tool-calls"; [DONE] (`pause`, below)

Steps are not in the native events; they are derived from their order. A step
is text and reasoning, then tool calls, then their results; the next step
begins at the first delta, reasoning or tool_call after a tool_result. `end`
maps its status to `finish.finishReason`: completed -> "stop", error ->
"error", cancelled -> "interrupted" (after an `abort` chunk), so that a
client does not send anything automatically after a stopped run.

Part ids (`text-0`, `reasoning-1`, …) count up within one response, so a
replay of the same run yields the same chunks.

Approvals follow the AI SDK's own flow: a response ends (`pause`) once the run
waits on calls the client was asked about, as a `streamText` response ends at
a `tool-approval-request`; the client's answers come back in the next request,
and its response continues the same assistant message. So that response must
not repeat what the client has: `after_approvals` names the approvals it
answers, and everything through the `approval_request`s they were asked in is
translated (the state must be the same as a replay's) but not sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from turnstream.events import EventType, dumps

Chunk = dict[str, Any]

# The response header that tells the AI SDK which stream format it reads.
HEADER = "x-vercel-ai-ui-message-stream"
VERSION = "v1"
DONE = b"data: [DONE]\n\n"

_FINISH_REASON = {"completed": "stop", "error": "error", "cancelled": "interrupted"}


def frame(chunk: Chunk) -> bytes:
    """One chunk as an SSE frame, as the AI SDK writes them."""
    return f"data: {dumps(chunk)}\n\n".encode()


class UIMessageStream:
    """The chunks of one assistant message, built from a run's events in order."""

    def __init__(self, message_id: str, *, after_approvals: frozenset[str] = frozenset()) -> None:
        self.message_id = message_id
        self.ended = False
        self.requested: set[str] = set()  # approval ids asked so far
        self.awaiting: set[str] = set()  # of those, the ones no `approval` has decided yet
        self._quiet_until = set(after_approvals)  # nothing is sent until these were asked
        self._quiet_group = False  # inside the `approval_request`s that asked them
        self._denied: set[str] = set()  # tool call ids: their error result is not sent
        self._in_step = False
        self._after_result = False  # a tool_result came in this step: the next output starts one
        self._text: str | None = None  # the id of the open text part
        self._reasoning: str | None = None  # the id of the open reasoning part
        self._parts = 0
        self._tool_calls: set[str] = set()

    def start(self) -> list[Chunk]:
        """The first chunk of the response, before any event."""
        return [{"type": "start", "messageId": self.message_id}]

    def feed(self, type_: str, data: Mapping[str, Any]) -> list[Chunk]:
        """The chunks for one native event (`type_`, its data fields)."""
        if self.ended:
            return []
        chunks = self._translate(type_, data)
        return [] if self._quiet(type_, data) else chunks

    def pause(self) -> list[Chunk]:
        """The end of a response whose run now waits on the user's answers (then `[DONE]`)."""
        self.ended = True
        out = self._close_parts()
        if self._in_step:
            out.append({"type": "finish-step"})
        out.append({"type": "finish", "finishReason": "tool-calls"})
        return out

    def _quiet(self, type_: str, data: Mapping[str, Any]) -> bool:
        """Whether this event's chunks are what the client already has (`after_approvals`)."""
        if not self._quiet_until or type_ == EventType.END:
            return False
        asked = type_ == EventType.APPROVAL_REQUEST
        if asked and data.get("approvalId") in self._quiet_until:
            self._quiet_group = True
            return True
        if self._quiet_group and not asked:  # the first event after that group
            self._quiet_until.clear()
            return False
        return True

    def _translate(self, type_: str, data: Mapping[str, Any]) -> list[Chunk]:
        match type_:
            case EventType.DELTA:
                return self._delta(str(data.get("text", "")))
            case EventType.REASONING:
                return self._reasoning_delta(str(data.get("text", "")))
            case EventType.TOOL_CALL:
                return self._tool_call(data)
            case EventType.TOOL_RESULT:
                return self._tool_result(data)
            case EventType.APPROVAL_REQUEST:
                return self._approval_request(data)
            case EventType.APPROVAL:
                return self._approval(data)
            case EventType.FILE:
                if data.get("deleted") or not data.get("url"):
                    return []
                return [{"type": "file", "url": data["url"], "mediaType": data.get("mediaType")}]
            case EventType.COMPACTION:  # a transient data part: not kept in the message
                return [{"type": "data-compaction", "data": dict(data), "transient": True}]
            case EventType.ERROR:
                return [*self._close_parts(), {"type": "error", "errorText": _error_text(data)}]
            case EventType.END:
                return self._end(str(data.get("status", "")))
        return []  # queued, start, usage, and any type added later

    def cut(self, text: str) -> list[Chunk]:
        """An `error` chunk for a response that ends before the run's `end` (no `[DONE]`)."""
        self.ended = True
        return [{"type": "error", "errorText": text}]

    def _delta(self, text: str) -> list[Chunk]:
        out = self._step()
        out += self._close_reasoning()
        if self._text is None:
            self._text = self._new_id("text")
            out.append({"type": "text-start", "id": self._text})
        out.append({"type": "text-delta", "id": self._text, "delta": text})
        return out

    def _reasoning_delta(self, text: str) -> list[Chunk]:
        out = self._step()
        out += self._close_text()
        if self._reasoning is None:
            self._reasoning = self._new_id("reasoning")
            out.append({"type": "reasoning-start", "id": self._reasoning})
        out.append({"type": "reasoning-delta", "id": self._reasoning, "delta": text})
        return out

    def _tool_call(self, data: Mapping[str, Any]) -> list[Chunk]:
        out = self._step()
        out += self._close_parts()
        call_id = str(data.get("id", ""))
        self._tool_calls.add(call_id)
        out.append(
            {
                "type": "tool-input-available",
                "toolCallId": call_id,
                "toolName": str(data.get("name", "")),
                "input": _arguments(data.get("arguments")),
            }
        )
        return out

    def _tool_result(self, data: Mapping[str, Any]) -> list[Chunk]:
        call_id = str(data.get("id", ""))
        if call_id not in self._tool_calls or call_id in self._denied:
            # The AI SDK fails the whole stream on an output for a call it never saw, and
            # a denied call's part already says `output-denied`.
            return []
        out = self._close_parts()
        self._after_result = True
        content = str(data.get("content", ""))
        if data.get("isError"):
            out.append({"type": "tool-output-error", "toolCallId": call_id, "errorText": content})
        else:
            out.append({"type": "tool-output-available", "toolCallId": call_id, "output": content})
        return out

    def _approval_request(self, data: Mapping[str, Any]) -> list[Chunk]:
        approval_id, call_id = str(data.get("approvalId", "")), str(data.get("toolCallId", ""))
        if call_id not in self._tool_calls:
            return []
        self.requested.add(approval_id)
        self.awaiting.add(approval_id)
        return [{"type": "tool-approval-request", "approvalId": approval_id, "toolCallId": call_id}]

    def _approval(self, data: Mapping[str, Any]) -> list[Chunk]:
        approval_id, call_id = str(data.get("approvalId", "")), str(data.get("toolCallId", ""))
        if approval_id not in self.requested:
            return []
        self.awaiting.discard(approval_id)
        approved, reason = bool(data.get("approved")), str(data.get("reason") or "")
        response = {"type": "tool-approval-response", "approvalId": approval_id}
        out: list[Chunk] = [
            response | {"approved": approved} | ({"reason": reason} if reason else {})
        ]
        if not approved:
            self._denied.add(call_id)
            out.append({"type": "tool-output-denied", "toolCallId": call_id})
        return out

    def _end(self, status: str) -> list[Chunk]:
        self.ended = True
        out = self._close_parts()
        if self._in_step:
            out.append({"type": "finish-step"})
        if status == "cancelled":
            out.append({"type": "abort", "reason": "The run was stopped."})
        out.append({"type": "finish", "finishReason": _FINISH_REASON.get(status, "other")})
        return out

    def _step(self) -> list[Chunk]:
        """`start-step` (after `finish-step` for the previous one) when output begins a step."""
        if self._in_step and not self._after_result:
            return []
        out = [*self._close_parts(), {"type": "finish-step"}] if self._in_step else []
        self._in_step, self._after_result = True, False
        out.append({"type": "start-step"})
        return out

    def _close_parts(self) -> list[Chunk]:
        return self._close_text() + self._close_reasoning()

    def _close_text(self) -> list[Chunk]:
        if self._text is None:
            return []
        chunk, self._text = {"type": "text-end", "id": self._text}, None
        return [chunk]

    def _close_reasoning(self) -> list[Chunk]:
        if self._reasoning is None:
            return []
        chunk, self._reasoning = {"type": "reasoning-end", "id": self._reasoning}, None
        return [chunk]

    def _new_id(self, kind: str) -> str:
        part_id = f"{kind}-{self._parts}"
        self._parts += 1
        return part_id


def translate(message_id: str, events: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Chunk]:
    """Every chunk of a whole run, `start` first: for tests and for reading one at a glance."""
    stream = UIMessageStream(message_id)
    out = stream.start()
    for type_, data in events:
        out += stream.feed(type_, data)
    return out


def _arguments(raw: Any) -> Any:
    """A tool call's `input`: its JSON arguments parsed; the text itself if they do not parse."""
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _error_text(data: Mapping[str, Any]) -> str:
    return str(data.get("message") or "The run failed.")
