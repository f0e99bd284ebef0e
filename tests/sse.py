"""Parsing SSE as a client sees it, for tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


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
