"""A run's events → the messages that store it: one builder, for the executor and the reaper.

A run answers one user message in one or more **steps**. A step is text (and
reasoning), then zero or more tool calls, then their results. The next step
begins with the first `delta`, `reasoning` or `tool_call` after a
`tool_result` for a call the run made (the AI SDK stream, api/ui_stream.py,
draws its steps by the same rule). Each step is stored as OpenAI chat
messages, in order:

    assistant {content: the step's text or None, tool_calls: its calls or None}
    tool {tool_call_id, content}   one per call: results in the order they came,
                                   then a stand-in for each call left without one

A call that never got its result (the run was stopped, failed, or lost its
worker mid-step) gets a stand-in `tool` message saying so, so that the stored
transcript is always one a provider accepts. A run that waits for approvals is
stored `partial` without them: its waiting calls are answered when it goes on
(store/history.py leaves a call without an answer out of a transcript). The
run's last assistant message carries the run's `message_id` (the `end` event's
`messageId`) and the run's status; a run that wrote no text and called no tool
stores one empty assistant message under it. Every other message gets a new
UUIDv7 and is `complete`, except a tool message whose tool failed (`isError`) or
that stands in for a missing result: `error`, or `cancelled` when the run was
stopped.

The workspace files the run wrote or deleted (`file` events) are stored on its
last assistant message (`files`: path, size, mediaType, sha256, version, and
`deleted` for a deletion; not the links, which expire), the newest event of
each path winning. Reasoning is not stored. A tool call without an id or a name, a second call
with an id already used in the run, a result for no known call and a second
result for one call are left out: none of them can be part of a valid
transcript. The executor feeds the builder the agent's events as they come;
the reaper feeds it the run's stream. Both call `messages`, so a run is stored
the same way whoever ends it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from turnstream.events import EventType, dumps
from turnstream.ids import uuid7
from turnstream.live.status import RunStatus
from turnstream.store.views import MessageStatus, NewMessage

_MESSAGE_STATUS: dict[RunStatus, MessageStatus] = {
    RunStatus.COMPLETED: "complete",
    RunStatus.CANCELLED: "cancelled",
    RunStatus.ERROR: "error",
    RunStatus.WAITING: "partial",  # stored while it waits for approvals, then replaced
}

CANCELLED_CALL = "Cancelled: the run was stopped before this tool call returned."
FAILED_CALL = "Failed: the run ended before this tool call returned."

# The event types that begin a new step when they follow a tool_result.
_STEP_STARTS = frozenset({EventType.DELTA, EventType.REASONING, EventType.TOOL_CALL})


@dataclass
class _Result:
    call_id: str
    content: str
    is_error: bool


@dataclass
class _Step:
    parts: list[str] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)  # OpenAI `tool_calls` entries
    results: list[_Result] = field(default_factory=list)  # in the order they came

    def is_empty(self) -> bool:
        return not self.calls and not any(self.parts)


class Reply:
    """The run so far, step by step, and its token usage."""

    def __init__(self) -> None:
        self.steps: list[_Step] = [_Step()]
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.first_prompt_tokens = 0
        self.context_estimate: int | None = None  # of the history the agent was given
        self._step_of_call: dict[str, _Step] = {}  # every call of the run stored, by id
        self._called: set[str] = set()  # every call id the run sent, stored or not
        self._answered: set[str] = set()
        self._after_result = False
        self._files: dict[str, dict[str, Any]] = {}  # by path: the newest `file` event's data

    def add(self, type: str, data: dict[str, Any]) -> None:
        """Take one event; events of other types (queued, start, error, end) change nothing."""
        if type == EventType.DELTA:
            self.add_text(data["text"])
            return
        if type in _STEP_STARTS and self._after_result:
            self._next_step()
        if type == EventType.TOOL_CALL:
            self._call(data)
        elif type == EventType.TOOL_RESULT:
            self._after_result = self._after_result or str(data.get("id", "")) in self._called
            self._result(data)
        elif type == EventType.USAGE:
            # The first call's prompt is the history the run was given, as the model counts it.
            self.first_prompt_tokens = self.first_prompt_tokens or int(data.get("prompt_tokens", 0))
            self.prompt_tokens += int(data.get("prompt_tokens", 0))
            self.completion_tokens += int(data.get("completion_tokens", 0))
        elif type == EventType.FILE and isinstance(data.get("path"), str):
            self._files.pop(data["path"], None)  # re-inserted last: in the order last changed
            self._files[data["path"]] = {k: v for k, v in data.items() if k != "url"}

    def add_text(self, text: str) -> None:
        """Take a `delta`'s text: the executor's path for plain text, with no event made."""
        if self._after_result:
            self._next_step()
        self.steps[-1].parts.append(text)

    def _next_step(self) -> None:
        self.steps.append(_Step())
        self._after_result = False

    def _call(self, data: dict[str, Any]) -> None:
        call_id, name, arguments = data.get("id"), data.get("name"), data.get("arguments")
        self._called.add(str(data.get("id", "")))  # as api/ui_stream.py counts calls
        if not isinstance(call_id, str) or not isinstance(name, str) or not call_id or not name:
            return
        if call_id in self._step_of_call:
            return
        if not isinstance(arguments, str):
            arguments = "" if arguments is None else dumps(arguments)
        function = {"name": name, "arguments": arguments}
        self.steps[-1].calls.append({"id": call_id, "type": "function", "function": function})
        self._step_of_call[call_id] = self.steps[-1]

    def _result(self, data: dict[str, Any]) -> None:
        call_id = data.get("id")
        if not isinstance(call_id, str) or call_id in self._answered:
            return
        step = self._step_of_call.get(call_id)
        if step is None:
            return
        self._answered.add(call_id)
        content = data.get("content")
        text = content if isinstance(content, str) else "" if content is None else dumps(content)
        step.results.append(_Result(call_id, text, bool(data.get("isError"))))

    def messages(self, status: RunStatus, *, message_id: str, session_id: str) -> list[NewMessage]:
        """The run as OpenAI messages in order, for a run that ended with `status`."""
        out: list[NewMessage] = []
        last = -1  # the index of the last assistant message
        for step in self.steps:
            if step.is_empty():
                continue
            last = len(out)
            out.append(
                NewMessage(
                    id=uuid7(),
                    role="assistant",
                    content="".join(step.parts) or None,
                    tool_calls=step.calls or None,
                    session_id=session_id,
                )
            )
            out.extend(self._tool_messages(step, status, session_id))
        if last < 0:
            last = len(out)
            out.append(NewMessage(role="assistant", content="", session_id=session_id))
        out[last] = out[last].model_copy(
            update={
                "id": message_id,
                "status": _MESSAGE_STATUS[status],
                "files": list(self._files.values()) or None,
            }
        )
        return out

    @staticmethod
    def _tool_messages(step: _Step, status: RunStatus, session_id: str) -> list[NewMessage]:
        def tool(call_id: str, content: str, message_status: MessageStatus) -> NewMessage:
            return NewMessage(
                id=uuid7(),
                role="tool",
                content=content,
                tool_call_id=call_id,
                status=message_status,
                session_id=session_id,
            )

        out = [
            tool(r.call_id, r.content, "error" if r.is_error else "complete") for r in step.results
        ]
        if status is RunStatus.WAITING:
            return out  # its unanswered calls wait for the user: no stand-ins yet
        answered = {r.call_id for r in step.results}
        cancelled = status is RunStatus.CANCELLED
        for call in step.calls:
            if call["id"] not in answered:
                if cancelled:
                    out.append(tool(call["id"], CANCELLED_CALL, "cancelled"))
                else:
                    out.append(tool(call["id"], FAILED_CALL, "error"))
        return out
