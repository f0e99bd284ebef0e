"""A conversation's stored messages as potpie-ui's flat history: one message per turn.

turnstream stores a reply as the OpenAI messages its run produced (runs/reply.py):
per step an assistant message (text, tool calls), then one `tool` message per call.
potpie-ui shows a reply as one `AI_GENERATED` message, so a run's messages are
folded into one: their texts joined as the stream sent them (no separator, so the
history's text is the streamed text), each call as a `call` entry and each result as
a `result` (or `error`) entry of `tool_calls`, keyed by `call_id` as potpie-ui
merges them. The folded message has the id and time of the run's last assistant
message (the `end` event's `messageId`). System and developer messages are not shown.

The running reply is left out: potpie-ui resumes it from its start after loading
the history (routes.py, `active-session`), and a run stores its messages a moment
before its status turns terminal, so they would otherwise be shown twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from turnstream.api.potpie.shapes import iso, tool_call, tool_result
from turnstream.store.views import MessageView

_REPLY_ROLES = ("assistant", "tool")


def flat(stored: Iterable[MessageView], *, running: str | None) -> list[dict[str, Any]]:
    """potpie-ui's messages, in order, without the messages of session `running`."""
    out: list[dict[str, Any]] = []
    group: list[MessageView] = []
    for message in stored:
        if running is not None and message.session_id == running:
            continue
        if group and not _same_reply(group[0], message):
            out.append(_reply(group))
            group = []
        if message.role in _REPLY_ROLES:
            group.append(message)
        elif message.role == "user":
            out.append(_message(message, "HUMAN", message.content or "", []))
    if group:
        out.append(_reply(group))
    return out


def _same_reply(first: MessageView, message: MessageView) -> bool:
    return message.role in _REPLY_ROLES and message.session_id == first.session_id


def _reply(group: list[MessageView]) -> dict[str, Any]:
    """One run's messages (or a lone assistant message) as one AI_GENERATED message."""
    assistants = [m for m in group if m.role == "assistant"] or group
    calls: dict[str, tuple[str, str | None]] = {}  # call id -> name, arguments
    entries: list[dict[str, Any]] = []
    for message in group:
        for call in message.tool_calls or []:
            call_id, function = str(call.get("id", "")), call.get("function") or {}
            calls[call_id] = (str(function.get("name", "")), function.get("arguments"))
            entries.append(tool_call(call_id, *calls[call_id]))
        if message.role == "tool" and message.tool_call_id is not None:
            name, arguments = calls.get(message.tool_call_id, ("", None))
            failed = message.status != "complete"
            content = message.content or ""
            entry = tool_result(message.tool_call_id, name, arguments, content, is_error=failed)
            entries.append(entry)
    text = "".join(m.content or "" for m in group if m.role == "assistant")
    return _message(assistants[-1], "AI_GENERATED", text, entries)


def _message(
    message: MessageView, kind: str, content: str, tool_calls: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "id": message.id,
        "content": content,
        "type": kind,
        "citations": [],
        "tool_calls": tool_calls,
        "created_at": iso(message.created_at),
    }
