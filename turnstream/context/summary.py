"""What a summary is made of and how the agent sees it.

The model is asked for a summary of the stretch of the conversation that no
longer fits, with the previous summary first, so the new one covers
everything before the turns that stay. The stretch is rendered as plain text,
each message cut to its share of the budget, so the request itself fits the
model; a tool result is the first to lose its text.
"""

from __future__ import annotations

from typing import Any

from turnstream.context.fit import Turn
from turnstream.store.context import Summary

INSTRUCTIONS = (
    "You write the summary of the earlier part of a conversation between a user and an "
    "AI assistant, which the assistant reads instead of those messages. Keep the user's "
    "goals, preferences and decisions; facts, names, numbers, file names and paths; what "
    "the tools were asked and what they found; open questions and promised next steps. "
    "Write compact notes in the conversation's language. Answer with the summary only."
)
SUMMARY_HEADING = "Summary of the earlier conversation (its messages are not shown here):"
_CHARS_PER_TOKEN = 3  # what the stretch's text may use, per token of the budget


def summary_message(summary: Summary) -> dict[str, Any]:
    """The stored summary as the first message of the history."""
    return {"role": "system", "content": f"{SUMMARY_HEADING}\n{summary.content}"}


def request(previous: Summary | None, head: list[Turn], limit: int) -> list[dict[str, Any]]:
    """The messages that ask a model for the summary of `previous` and the turns `head`."""
    lines = [line for turn in head for message in turn.messages for line in _lines(message)]
    share = max(200, limit * _CHARS_PER_TOKEN // 2 // max(len(lines), 1))
    stretch = "\n".join(line if len(line) <= share else line[:share] + " […]" for line in lines)
    before = f"The summary so far:\n{previous.content}\n\n" if previous else ""
    return [
        {"role": "system", "content": INSTRUCTIONS},
        {"role": "user", "content": f"{before}The conversation after it:\n{stretch}"},
    ]


def _lines(message: dict[str, Any]) -> list[str]:
    role = message.get("role")
    content = message.get("content") or ""
    if role == "tool":
        return [f"tool result: {content}"]
    lines = [f"{role}: {content}"] if content else []
    for call in message.get("tool_calls") or ():
        function = call["function"]
        lines.append(f"{role} calls {function['name']}({function['arguments']})")
    return lines
