"""The AI SDK's chat request: the JSON body `DefaultChatTransport` POSTs, read and checked.

    {"id": <conversation id>, "messages": [UIMessage, …], "trigger": "submit-message"
     | "regenerate-message", "messageId": …, …any fields of the transport's `body`}

The server's stored history is authoritative. Of `messages`, only the newest
one is read, and only for "submit-message": it must be the user's, and its
text parts are the new message. Every message is still checked to be a UI
message as OPENAPI_BODY describes it (a user's with a text part that is not
blank), so that a body the document calls invalid is refused (400) and one it
allows is not. A "submit-message" whose newest message is not the user's, or
with a `messageId` (an edit of a sent message: useChat's
`sendMessage({messageId})`), brings no new message the stored history can
follow: 409 -- unless `messageId` names an assistant message whose tool parts
carry the user's answers to approval requests (state `approval-responded`,
`approval: {id, approved, reason?}`): that is how useChat's
`addToolApprovalResponse` sends them, and the request decides them instead of
sending a message (routes/chat.py). For "regenerate-message", `messageId` (the
reply to replace) is not used: a regenerate always answers the last user
message again, as `POST …/regenerate` does.

Checked in this order, each answer before anything is said about what follows:
a body that is not a JSON object (400), an `id` the caller does not own (403),
then the rest (400, 409, or 413 for a message over the limit).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from turnstream.api.schemas import WHITESPACE, has_lone_surrogate
from turnstream.errors import AccessDenied, InvalidMessage, MessageTooLong, NotANewMessage

# The whole history comes along with every request; only its newest message is used.
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_REASON_CHARS = 2000  # as ApprovalDecision's (POST …/approvals/{id})

_TEXT = {"type": "string", "pattern": "^[^\\x00]*$", "description": "No NUL"}
_PART = {
    "type": "object",
    "required": ["type"],
    "properties": {"type": {"type": "string"}, "text": _TEXT},
    "description": "A UI message part; of the newest message, its `text` parts are read",
}
_ROLES = ["system", "user", "assistant"]
# What a user's message needs: a text part that is not blank.
_NOT_BLANK = f"[^{WHITESPACE}]"
_USER_TEXT = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"const": "text"}, "text": {"type": "string", "pattern": _NOT_BLANK}},
}
_UI_MESSAGE = {
    "type": "object",
    "required": ["id", "role", "parts"],
    "properties": {
        "id": {"type": "string"},
        "role": {"type": "string", "enum": _ROLES},
        "parts": {"type": "array", "items": _PART},
    },
    "anyOf": [
        {"properties": {"role": {"enum": ["system", "assistant"]}}},
        {"properties": {"parts": {"contains": _USER_TEXT}}},
    ],
    "description": "A user's message has a text part that is not blank",
}
# The request body as OpenAPI shows it, checked by `_check_shape` (the route reads it
# itself, in the order above). What a schema cannot say, the description does.
OPENAPI_BODY: dict[str, Any] = {
    "required": True,
    "description": "The AI SDK `DefaultChatTransport` request; `id` is the conversation id. "
    "For `submit-message` the newest of `messages` must be the user's and `messageId` "
    "absent or null (else 409 `Not a new message`); or `messageId` names the assistant "
    "message whose tool parts answer approval requests (`state: approval-responded`, "
    "`approval: {id, approved, reason?}`), and those answers are decided.",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["id", "messages", "trigger"],
                "properties": {
                    "id": {"type": "string", "description": "The conversation id"},
                    "messages": {"type": "array", "minItems": 1, "items": _UI_MESSAGE},
                    "trigger": {"type": "string", "enum": ["submit-message", "regenerate-message"]},
                    "messageId": {"type": ["string", "null"]},
                },
            },
            "example": {
                "id": "01a22c69-8d88-7980-940a-0d3026308d1a",
                "messages": [
                    {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "Hi"}]}
                ],
                "trigger": "submit-message",
            },
        }
    },
}


class Trigger(enum.StrEnum):
    SUBMIT = "submit-message"  # a new user message: the newest of `messages`
    REGENERATE = "regenerate-message"  # answer the last user message again


@dataclass(frozen=True)
class ApprovalAnswer:
    """The user's answer to one approval request, from a tool part's `approval`."""

    approval_id: str
    approved: bool
    reason: str


@dataclass(frozen=True)
class ChatRequest:
    conversation_id: str
    trigger: Trigger
    text: str  # the new message ("" for a regenerate, or for answers)
    answers: tuple[ApprovalAnswer, ...] = ()  # when set, decide these instead of a message


async def read_chat_request(
    request: Request, *, max_chars: int, owns: Callable[[str], Awaitable[bool]]
) -> ChatRequest:
    """The request, if the caller `owns` its conversation; else AccessDenied (403).

    InvalidMessage (400) for a body that cannot be used, MessageTooLong (413) for
    a message over `max_chars` or a body over MAX_BODY_BYTES.
    """
    body = await _read_capped(request, max_chars)
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidMessage("The body is not valid JSON.") from exc
    if not isinstance(payload, dict):
        raise InvalidMessage("The body must be a JSON object {id, messages, trigger}.")
    cid = payload.get("id")
    if not isinstance(cid, str) or not await owns(cid):
        raise AccessDenied()
    raw_trigger = payload.get("trigger")
    if raw_trigger not in tuple(Trigger):
        raise InvalidMessage('"trigger" must be "submit-message" or "regenerate-message".')
    trigger = Trigger(raw_trigger)
    _check_shape(payload)
    if trigger is Trigger.REGENERATE:
        return ChatRequest(cid, trigger, "")
    message_id = payload.get("messageId")
    if message_id is not None:
        answers = _approval_answers(payload["messages"], message_id)
        if answers:
            return ChatRequest(cid, trigger, "", answers)
        # useChat's sendMessage({messageId}): an edit, which would cut the client's history
        # short while the stored one kept the old turn.
        raise NotANewMessage(
            "Editing a sent message (messageId) is not supported: the stored history stays "
            "as it is. Send a new message, or regenerate the last reply.",
            conversation_id=cid,
        )
    newest = payload["messages"][-1]
    if newest["role"] != "user":
        raise NotANewMessage(
            f"The newest of `messages` is the {newest['role']}'s, so there is no new question "
            "to answer. Send the user's message last, or regenerate the last reply.",
            conversation_id=cid,
        )
    return ChatRequest(cid, trigger, _checked(_text_of(newest), max_chars))


def _check_shape(payload: dict[str, Any]) -> None:
    """The body as OPENAPI_BODY's schema has it, every message of the history included."""
    message_id = payload.get("messageId")
    if message_id is not None and not isinstance(message_id, str):
        raise InvalidMessage('"messageId" must be a string or null.')
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidMessage('"messages" must be a list of UI messages ending with the new one.')
    for message in messages:
        if not (
            isinstance(message, dict)
            and isinstance(message.get("id"), str)
            and message.get("role") in _ROLES
            and isinstance(message.get("parts"), list)
            and all(_is_part(part) for part in message["parts"])
        ):
            raise InvalidMessage(
                'Each of "messages" must be a UI message: {"id", "role", "parts": '
                '[{"type", …}]}, its role "system", "user" or "assistant".'
            )
        if message["role"] == "user" and not _text_of(message).strip():
            raise InvalidMessage("A user's message is empty: it needs a text part with text.")


def _is_part(part: Any) -> bool:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        return False
    if "text" not in part:
        return True
    return isinstance(part["text"], str) and "\x00" not in part["text"]


def _approval_answers(
    messages: list[dict[str, Any]], message_id: str
) -> tuple[ApprovalAnswer, ...]:
    """The answers in the tool parts of assistant message `message_id`: none for another message."""
    named = next((m for m in messages if m["id"] == message_id), None)
    if named is None or named["role"] != "assistant":
        return ()
    return tuple(
        _answer(part.get("approval"))
        for part in named["parts"]
        if (part["type"].startswith("tool-") or part["type"] == "dynamic-tool")
        and part.get("state") == "approval-responded"
    )


def _answer(approval: Any) -> ApprovalAnswer:
    """A part's `approval`, as addToolApprovalResponse leaves it: {id, approved, reason?}."""
    reason = approval.get("reason") if isinstance(approval, dict) else None
    if not (
        isinstance(approval, dict)
        and isinstance(approval.get("id"), str)
        and 0 < len(approval["id"]) <= 64
        and isinstance(approval.get("approved"), bool)
        and (reason is None or _fits(reason, MAX_REASON_CHARS))
    ):
        raise InvalidMessage(
            'An "approval-responded" tool part needs "approval": {"id", "approved": true or '
            f'false, "reason" (up to {MAX_REASON_CHARS} characters)}}.'
        )
    return ApprovalAnswer(approval["id"], approval["approved"], reason or "")


def _fits(text: Any, max_chars: int) -> bool:
    return isinstance(text, str) and len(text) <= max_chars and not has_lone_surrogate(text)


def _text_of(message: dict[str, Any]) -> str:
    """A message's text parts, joined by newlines."""
    return "\n".join(part.get("text", "") for part in message["parts"] if part["type"] == "text")


def _checked(text: str, max_chars: int) -> str:
    """The rules of every new message (as `POST …/message/`)."""
    if "\x00" in text:
        raise InvalidMessage("The message contains a NUL character.")
    if has_lone_surrogate(text):
        raise InvalidMessage("The message is not valid Unicode (it holds a lone surrogate).")
    if len(text) > max_chars:
        raise MessageTooLong(max_chars)
    return text


async def _read_capped(request: Request, max_chars: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise MessageTooLong(max_chars)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise MessageTooLong(max_chars)
        chunks.append(chunk)
    return b"".join(chunks)
