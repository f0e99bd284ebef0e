"""The AI SDK's chat request: the JSON body `DefaultChatTransport` POSTs, read and checked.

    {"id": <conversation id>, "messages": [UIMessage, …], "trigger": "submit-message"
     | "regenerate-message", "messageId": …, …any fields of the transport's `body`}

The server's stored history is authoritative. Of `messages`, only the newest
one is read, and only for "submit-message": it must be the user's, and its
text parts are the new message. A "submit-message" with a `messageId` is an
edit of a sent message (useChat's `sendMessage({messageId})`), which the
stored history cannot follow: 400. For "regenerate-message", `messageId` (the
reply to replace) is not used: a regenerate always answers the last user
message again, as `POST …/regenerate` does.

Checked in this order, each answer before anything is said about what follows:
a body that is not a JSON object (400), an `id` the caller does not own (403),
then the rest (400, or 413 for a message over the limit).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from turnstream.api.schemas import has_lone_surrogate
from turnstream.errors import AccessDenied, InvalidMessage, MessageTooLong

# The whole history comes along with every request; only its newest message is used.
MAX_BODY_BYTES = 16 * 1024 * 1024

# The request body as OpenAPI shows it (the route reads it itself, in the order above).
OPENAPI_BODY: dict[str, Any] = {
    "required": True,
    "description": "The AI SDK `DefaultChatTransport` request; `id` is the conversation id.",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["id", "messages", "trigger"],
                "properties": {
                    "id": {"type": "string", "description": "The conversation id"},
                    "messages": {"type": "array", "items": {"type": "object"}},
                    "trigger": {"type": "string", "enum": ["submit-message", "regenerate-message"]},
                    "messageId": {"type": "string"},
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
class ChatRequest:
    conversation_id: str
    trigger: Trigger
    text: str  # the new message ("" for a regenerate)


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
    if trigger is Trigger.REGENERATE:
        return ChatRequest(cid, trigger, "")
    if payload.get("messageId") is not None:
        # useChat's sendMessage({messageId}): an edit, which would cut the client's history
        # short while the stored one kept the old turn.
        raise InvalidMessage(
            "Editing a sent message (messageId) is not supported: the stored history stays "
            "as it is. Send a new message, or regenerate the last reply."
        )
    return ChatRequest(
        cid, trigger, _checked(_newest_user_text(payload.get("messages")), max_chars)
    )


def _newest_user_text(messages: Any) -> str:
    """The text parts of the newest message, which must be the user's, joined by newlines."""
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        raise InvalidMessage('"messages" must be a list of UI messages ending with the new one.')
    newest = messages[-1]
    if newest.get("role") != "user":
        raise InvalidMessage("The newest message must be the user's (role 'user').")
    parts = newest.get("parts")
    if not isinstance(parts, list):
        raise InvalidMessage('The newest message needs its "parts".')
    texts = [
        part["text"]
        for part in parts
        if isinstance(part, dict)
        and part.get("type") == "text"
        and isinstance(part.get("text"), str)
    ]
    return "\n".join(texts)


def _checked(text: str, max_chars: int) -> str:
    """The rules of every new message (as `POST …/message/`)."""
    if "\x00" in text:
        raise InvalidMessage("The message contains a NUL character.")
    if has_lone_surrogate(text):
        raise InvalidMessage("The message is not valid Unicode (it holds a lone surrogate).")
    if not text.strip():
        raise InvalidMessage("The message is empty.")
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
