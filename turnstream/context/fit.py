"""Fitting a history into a budget, cheapest first, in whole turns.

A turn is a user message and everything after it until the next one: the
assistant's messages, their tool calls and the `tool` messages answering them.
Everything here moves whole turns or shortens one message's text, so a tool
call is never parted from its result, the transcript rules of
`store/history.py` keep holding, and the newest turn (the user message the run
answers) always stays. The steps, each only while the history is over:

1. `cut_tool_results`: tool results older than the newest `keep` are cut,
   oldest first, to their first `chars` characters and a note saying how much
   was cut (the full result stays in the conversation's messages).
2. `split`: the oldest turns go, keeping the newest ones that fit a target;
   context/compaction.py summarises what goes, or leaves it out.

`tighter` is both at once on a live transcript, for the one retry after a
model answered that its input is too long (agents/toolloop.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from turnstream.context.estimate import REQUEST_OVERHEAD, message_tokens
from turnstream.store import history
from turnstream.store.views import MessageView

_LEAD_ROLES = frozenset({"system", "developer"})


@dataclass
class Turn:
    """A turn's OpenAI messages, and the newest stored message in it (None for a turn of a
    live transcript)."""

    messages: list[dict[str, Any]]
    last: MessageView | None = None
    tokens: float = field(init=False)

    def __post_init__(self) -> None:
        self.count()

    def count(self) -> None:
        self.tokens = sum(message_tokens(m) for m in self.messages)


def stored_turns(stored: Sequence[MessageView]) -> list[Turn]:
    """Stored messages, in order, as turns in OpenAI's form (store/history.py)."""
    groups: list[list[MessageView]] = []
    for message in stored:
        if message.role == "user" or not groups:
            groups.append([message])
        else:
            groups[-1].append(message)
    return [Turn(history.to_openai(m.model_dump() for m in g), g[-1]) for g in groups]


def live_turns(messages: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Turn]]:
    """A transcript's leading system messages (a summary among them) and its turns."""
    lead: list[dict[str, Any]] = []
    groups: list[list[dict[str, Any]]] = []
    for message in messages:
        if not groups and message.get("role") in _LEAD_ROLES:
            lead.append(message)
        elif message.get("role") == "user" or not groups:
            groups.append([dict(message)])
        else:
            groups[-1].append(dict(message))
    return lead, [Turn(g) for g in groups]


class Fitting:
    """A history being fitted: messages that always stay first (`lead`), then turns."""

    def __init__(self, lead: list[dict[str, Any]], turns: list[Turn], scale: float) -> None:
        self.lead = lead
        self.turns = turns
        self.scale = scale
        self.lead_tokens = sum(message_tokens(m) for m in lead) + REQUEST_OVERHEAD

    def tokens(self, turns: Iterable[Turn] | None = None) -> int:
        """The calibrated estimate of the lead and the turns (by default all of them)."""
        raw = self.lead_tokens + sum(t.tokens for t in (self.turns if turns is None else turns))
        return int(raw * self.scale) + 1

    def raw(self) -> int:
        """The plain estimate: what a run records beside the model's own count."""
        return int(self.lead_tokens + sum(t.tokens for t in self.turns)) + 1

    def history(self) -> list[dict[str, Any]]:
        return [*self.lead, *(m for t in self.turns for m in t.messages)]

    def cut_tool_results(self, limit: int, *, keep: int, chars: int) -> int:
        """Cut old tool results, oldest first, until the history fits `limit`; how many."""
        results = [
            (turn, message)
            for turn in self.turns
            for message in turn.messages
            if message.get("role") == "tool"
        ]
        cut = 0
        for turn, message in results[: max(len(results) - keep, 0)]:
            if self.tokens() <= limit:
                break
            content = message.get("content") or ""
            if len(content) > chars:
                message["content"] = shortened(content, chars)
                turn.count()
                cut += 1
        return cut

    def split(self, target: int) -> int:
        """The index of the oldest turn to keep: the newest turns within `target` (with
        the lead), and always the newest one."""
        index = len(self.turns) - 1
        while index > 0 and self.tokens(self.turns[index - 1 :]) <= target:
            index -= 1
        return max(index, 0)


def shortened(content: str, chars: int) -> str:
    """A tool result's first `chars` characters and a note saying what was cut."""
    dropped = len(content) - chars
    return (
        f"{content[:chars]}\n[… {dropped:,} characters cut; "
        "the full result is in the conversation's messages]"
    )


def tighter(
    messages: list[dict[str, Any]], *, keep: int, chars: int, factor: float = 0.7
) -> list[dict[str, Any]]:
    """The transcript cut to `factor` of its estimate: old tool results cut, then the
    oldest turns left out (the leading system messages and the newest turn stay)."""
    lead, turns = live_turns(messages)
    fitting = Fitting(lead, turns, 1.0)
    target = int(fitting.tokens() * factor)
    fitting.cut_tool_results(target, keep=keep, chars=chars)
    if fitting.tokens() > target and fitting.turns:
        fitting.turns = fitting.turns[fitting.split(target) :]
    return fitting.history()
