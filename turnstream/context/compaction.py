"""The one step between a conversation's stored messages and its agent: a history that fits.

    summary = the newest stored summary (covers the messages through its sequence)
    messages = those after it, read newest first (store/context.py)
    history = [summary as a system message] + the messages as turns (context/fit.py)
    over the budget?  cut old tool results
    still over?       compaction: the oldest turns are summarised, with the summary
                      before them, into a new stored summary; the newest turns that
                      fit half the budget stay, so the next compaction is many turns away

Each stretch of messages is summarised once: later turns start from the stored
summary, and the next compaction summarises it with the stretch after it. A
compaction is told to the run's clients as a `compaction` event. The summary
is written by `summarise` (the OpenAI-compatible endpoint's model,
agents/openai.py). With none configured (the demo agent, or an adapter with no
TURNSTREAM_OPENAI_* settings), the summary is a note saying what was left out,
stored the same way. When the model fails, the oldest turns are left out
for this turn only, nothing is stored, and the event says why.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from turnstream import events
from turnstream.config import Settings
from turnstream.context import budget
from turnstream.context.fit import Fitting, Turn, stored_turns
from turnstream.context.summary import request, summary_message
from turnstream.events import Event
from turnstream.store import context as stored
from turnstream.store.context import Summary

logger = logging.getLogger("turnstream.context")

# Summarises a stretch of a conversation: the request's messages -> the summary's text.
Summarise = Callable[[list[dict[str, Any]]], Awaitable[str]]

# Messages are read newest first until their text has this many characters per token
# of the budget: twice the budget for English, so a compaction has the stretch to
# summarise; steady state never gets there (compaction keeps what is after the
# summary under the budget).
_LOAD_CHARS_PER_TOKEN = 8


@dataclass(frozen=True)
class Prepared:
    history: list[dict[str, Any]]
    estimate: int  # the plain estimate of `history`, recorded beside the model's count
    event: Event | None  # a `compaction` event, when one happened


async def prepare(
    sessions: async_sessionmaker[AsyncSession],
    *,
    cid: str,
    settings: Settings,
    summarise: Summarise | None,
) -> Prepared:
    """The conversation's history for its next run, fitted to the budget."""
    limit = budget.budget(settings)
    load_chars = limit * _LOAD_CHARS_PER_TOKEN

    def enough(newest_first: list[Any]) -> bool:
        return sum(len(m.content or "") for m in newest_first) > load_chars

    loaded = await stored.window(sessions, cid=cid, enough=enough)
    summary = loaded.summary
    lead = [summary_message(summary)] if summary else []
    fitting = Fitting(lead, stored_turns(loaded.messages), budget.scale(loaded.calibration))
    before = fitting.tokens()
    if before > limit:
        fitting.cut_tool_results(
            limit, keep=settings.context_keep_tool_results, chars=settings.context_tool_result_chars
        )
    event = None
    if fitting.tokens() > limit and len(fitting.turns) > 1:
        event = await _compact(sessions, cid, settings, fitting, summary, summarise, before)
    return Prepared(fitting.history(), fitting.raw(), event)


async def _compact(
    sessions: async_sessionmaker[AsyncSession],
    cid: str,
    settings: Settings,
    fitting: Fitting,
    previous: Summary | None,
    summarise: Summarise | None,
    before: int,
) -> Event:
    """Summarise the oldest turns into a stored summary (or leave them out); the event."""
    limit = budget.budget(settings)
    keep = fitting.split(limit // 2 - settings.summary_tokens)
    head, fitting.turns = fitting.turns[:keep], fitting.turns[keep:]
    through = next(t.last for t in reversed(head) if t.last is not None)
    model = settings.summary_model or settings.openai_model
    error = None
    try:
        content = await _summary_text(head, previous, summarise, limit)
    except Exception as exc:  # any failure of the model: this turn goes on without it
        logger.warning("compaction of %s failed, leaving the oldest turns out: %s", cid, exc)
        error = f"{type(exc).__name__}: {exc}"
        content = None
    if content is None:  # the previous summary (if any) stays first; the head is left out
        data: dict[str, Any] = {"dropped_through": through.id, "error": error}
    else:
        summary = await stored.save_summary(
            sessions, cid=cid, through=through, content=content, model=model if summarise else None
        )
        fitting.lead = [summary_message(summary)]
        fitting.lead_tokens = Fitting(fitting.lead, [], 1.0).lead_tokens
        data = {"summarized_through": through.id, "model": summary.model}
    return events.compaction(tokens_before=before, tokens_after=fitting.tokens(), **data)


async def _summary_text(
    head: list[Turn], previous: Summary | None, summarise: Summarise | None, limit: int
) -> str | None:
    """The new summary's text: the model's, or without one a note on what is left out."""
    if summarise is None:
        count = sum(len(t.messages) for t in head)
        note = (
            f"[{count} earlier messages are not shown here: no model was configured to "
            "summarise them. They are kept in the conversation's messages.]"
        )
        return f"{previous.content}\n\n{note}" if previous else note
    text = (await summarise(request(previous, head, limit))).strip()
    if not text:
        raise ValueError("the model wrote an empty summary")
    return text
