"""Reading request bodies with their bounds checked first: a new message's content (from a
form or JSON), and the raw or multipart bodies of workspace uploads. Also these bodies as
the OpenAPI document describes them, since the routes read them themselves."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from urllib.parse import parse_qs

from fastapi import Request
from starlette.datastructures import Headers
from starlette.formparsers import MultiPartException, MultiPartParser

from turnstream.api.schemas import PATH_PATTERN, MessageBody, has_lone_surrogate
from turnstream.errors import InvalidMessage, MessageTooLong

# A message, in any of three forms.
_MESSAGE_FORM = {
    "type": "object",
    "properties": {"content": MessageBody.model_json_schema()["properties"]["content"]},
    "required": ["content"],
}
MESSAGE_BODY = {
    "required": True,
    "description": 'The message: form field `content`, or JSON `{"content": ...}`.',
    # The example fills Swagger UI's "Try it out" (and schemathesis' examples phase).
    "content": {
        media_type: {"schema": schema, "example": {"content": "Hello!"}}
        for media_type, schema in (
            ("application/json", MessageBody.model_json_schema()),
            ("multipart/form-data", _MESSAGE_FORM),
            ("application/x-www-form-urlencoded", _MESSAGE_FORM),
        )
    },
}
# Workspace files: an upload, and one file's raw bytes.
UPLOAD_BODY = {
    "required": True,
    "description": "One or more `file` parts; an optional `path` names where a single file "
    "goes (with several files, the folder they go into). Without it, each part's filename.",
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "file": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "string", "format": "binary"},
                    },
                    "path": {"type": "string", "pattern": rf"^{PATH_PATTERN}/?$"},
                },
                "required": ["file"],
            }
        }
    },
}
RAW_BODY = {
    "required": True,
    "description": "The file's bytes; its Content-Type is kept as the file's media type.",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}


async def read_content(request: Request, *, max_chars: int) -> str:
    """The `content` of a message; MessageTooLong past `max_chars`, InvalidMessage if unusable."""
    # UTF-8 needs at most 4 bytes a character; the rest is room for the envelope.
    max_bytes = max_chars * 4 + 16 * 1024
    body = await read_capped(request, max_bytes, too_large=MessageTooLong(max_chars))
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        content = _from_json(body)
    elif content_type == "application/x-www-form-urlencoded":
        content = _from_urlencoded(body)
    elif content_type == "multipart/form-data":
        content = await _from_multipart(request.headers, body)
    else:
        raise InvalidMessage(
            'Send the message as form field \'content\' or JSON {"content": "..."}.'
        )
    if "\x00" in content:
        raise InvalidMessage("The message contains a NUL character.")
    if has_lone_surrogate(content):
        raise InvalidMessage("The message is not valid Unicode (it holds a lone surrogate).")
    if not content.strip():
        raise InvalidMessage("The message is empty.")
    if len(content) > max_chars:
        raise MessageTooLong(max_chars)
    return content


async def read_capped(request: Request, max_bytes: int, *, too_large: Exception) -> bytes:
    """The whole body; `too_large` as soon as it is known to exceed `max_bytes`."""
    return b"".join([chunk async for chunk in capped_stream(request, max_bytes, too_large)])


async def capped_stream(
    request: Request, max_bytes: int, too_large: Exception
) -> AsyncGenerator[bytes, None]:
    """The body's chunks as they arrive; `too_large` past `max_bytes`, declared or sent."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        yield chunk


def _from_json(body: bytes) -> str:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidMessage("The body is not valid JSON.") from exc
    content = payload.get("content") if isinstance(payload, dict) else None
    if not isinstance(content, str):
        raise InvalidMessage('The JSON body needs a string field "content".')
    return content


def _from_urlencoded(body: bytes) -> str:
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, errors="strict")
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidMessage("The form is not valid UTF-8.") from exc
    values = fields.get("content")
    if not values:
        raise InvalidMessage("The form needs a field 'content'.")
    return values[0]


async def _from_multipart(headers: Headers, body: bytes) -> str:
    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    try:
        form = await _StrictMultiPartParser(headers, stream()).parse()
    except (MultiPartException, UnicodeDecodeError) as exc:
        raise InvalidMessage(f"The multipart form could not be read: {exc}") from exc
    value = form.get("content")
    if not isinstance(value, str):
        raise InvalidMessage("The form needs a text field 'content'.")
    return value


class _StrictMultiPartParser(MultiPartParser):
    """Starlette's parser, except that a text field not valid in its charset is an error.

    Starlette decodes such a field as Latin-1 instead, which would store random
    bytes as mojibake where the other body formats refuse them.
    """

    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None:
            try:
                bytes(part.data).decode(self._charset)
            except UnicodeDecodeError as exc:
                raise MultiPartException(
                    f"The field '{part.field_name}' is not valid {self._charset} text."
                ) from exc
        super().on_part_end()
