"""Parsing SSE as a client sees it, for tests."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import connect_sse


@dataclass(frozen=True)
class SSEEvent:
    id: str
    event: str
    data: dict[str, Any]


def parse_sse(text: str) -> list[SSEEvent]:
    """The events of a whole SSE body; comment lines (`: ping`) are skipped."""
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
        if "data" in fields:
            out.append(
                SSEEvent(fields.get("id", ""), fields.get("event", ""), json.loads(fields["data"]))
            )
    return out


# The end of an SSE frame: a line end followed by an empty line.
_FRAME_END = re.compile(rb"(?:\r\n|\n)(?:\r\n|\n)")


def frame_ends(raw: bytes) -> list[int]:
    """The offsets in `raw` just past each complete SSE frame (events and comments alike)."""
    return [match.end() for match in _FRAME_END.finditer(raw)]


def parse_received(raw: bytes) -> tuple[list[SSEEvent], bytes]:
    """What a client makes of a body cut off anywhere: the events of its complete frames,
    and the bytes of an unfinished last frame, which it must throw away."""
    ends = frame_ends(raw)
    complete = ends[-1] if ends else 0
    return parse_sse(raw[:complete].decode()), raw[complete:]


def follow(client: httpx.Client, method: str, url: str, **kwargs: Any) -> Iterator[tuple]:
    """Iterate (id, event, data) of a live SSE response, skipping `: ping` comments.

    Closing the generator closes the connection: a client going away.
    """
    with connect_sse(client, method, url, **kwargs) as source:
        assert source.response.status_code == 200, source.response.read()
        for event in source.iter_sse():
            if event.data:  # httpx-sse turns a `: ping` comment into an empty event
                yield event.id, event.event, json.loads(event.data)
