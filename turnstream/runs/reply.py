"""The assistant reply as a run's events build it up."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from turnstream.events import EventType


@dataclass
class Reply:
    parts: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, type: str, data: dict[str, Any]) -> None:
        if type == EventType.DELTA:
            self.parts.append(data["text"])
        elif type == EventType.TOOL_CALL:
            function = {"name": data["name"], "arguments": data.get("arguments", "")}
            self.tool_calls.append({"id": data["id"], "type": "function", "function": function})
        elif type == EventType.USAGE:
            self.prompt_tokens += int(data.get("prompt_tokens", 0))
            self.completion_tokens += int(data.get("completion_tokens", 0))

    @property
    def text(self) -> str:
        return "".join(self.parts)
