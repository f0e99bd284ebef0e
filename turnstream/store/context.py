"""What fitting a history to the model reads and writes in SQL (turnstream/context/).

Every read here costs what the answer holds, not what the conversation holds:
messages are read newest first through the `(conversation_id, sequence)` index
and only back to the stored summary (or until the caller has enough), in the
session that found the summary and then the newest runs' token counts; a
message by id and the last user message are each one index lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from turnstream.ids import uuid7
from turnstream.store.models import ContextSummary, Message, Run, utcnow
from turnstream.store.views import MessageView

_PAGE = 64  # messages per read, newest first
_CALIBRATION_RUNS = 5  # how many of the newest runs to look at for a measured prompt


@dataclass(frozen=True)
class Summary:
    """A stored summary: what a model (or, `model` None, a note) says of the messages
    through `through_sequence`."""

    id: str
    through_sequence: int
    through_message_id: str
    content: str
    model: str | None


@dataclass(frozen=True)
class Window:
    """What a run's history is made of: the newest summary, the messages after it (read
    back until the caller had enough), and the newest run's (estimate, measured) tokens."""

    summary: Summary | None
    messages: list[MessageView]
    calibration: tuple[int, int] | None


async def window(
    sessions: async_sessionmaker[AsyncSession],
    *,
    cid: str,
    enough: Callable[[list[MessageView]], bool],
) -> Window:
    """The newest summary, then the messages after it: newest first, a page at a time,
    until none are left or `enough(the messages read so far, newest first)`; in order."""
    async with sessions() as db:
        row = await db.scalar(
            select(ContextSummary)
            .where(ContextSummary.conversation_id == cid)
            .order_by(ContextSummary.through_sequence.desc())
            .limit(1)
        )
        summary = None if row is None else _summary(row)
        after = summary.through_sequence if summary else -1
        newest_first: list[MessageView] = []
        while True:
            below = newest_first[-1].sequence if newest_first else None
            page = await _page(db, cid, after, below)
            newest_first += page
            if len(page) < _PAGE or enough(newest_first):
                break
        return Window(summary, newest_first[::-1], await _calibration(db, cid))


async def _page(db: AsyncSession, cid: str, after: int, below: int | None) -> list[MessageView]:
    """Up to a page of messages after sequence `after` (and before `below`), newest first;
    read as plain rows (no ORM objects to build)."""
    table = Message.__table__
    query = select(table).where(table.c.conversation_id == cid, table.c.sequence > after)
    if below is not None:
        query = query.where(table.c.sequence < below)
    rows = await db.execute(query.order_by(table.c.sequence.desc()).limit(_PAGE))
    return [MessageView.model_validate(dict(r._mapping)) for r in rows]


async def save_summary(
    sessions: async_sessionmaker[AsyncSession],
    *,
    cid: str,
    through: MessageView,
    content: str,
    model: str | None,
) -> Summary:
    row = ContextSummary(
        id=uuid7(),
        conversation_id=cid,
        through_sequence=through.sequence,
        through_message_id=through.id,
        content=content,
        model=model,
        created_at=utcnow(),
    )
    async with sessions() as db, db.begin():
        db.add(row)
    return _summary(row)


async def message(
    sessions: async_sessionmaker[AsyncSession], *, cid: str, message_id: str
) -> MessageView | None:
    async with sessions() as db:
        row = await db.get(Message, message_id)
    return None if row is None or row.conversation_id != cid else MessageView.model_validate(row)


async def last_user_message(
    sessions: async_sessionmaker[AsyncSession], *, cid: str
) -> MessageView | None:
    async with sessions() as db:
        row = await db.scalar(
            select(Message)
            .where(Message.conversation_id == cid, Message.role == "user")
            .order_by(Message.sequence.desc())
            .limit(1)
        )
    return None if row is None else MessageView.model_validate(row)


async def _calibration(db: AsyncSession, cid: str) -> tuple[int, int] | None:
    """(estimate, measured prompt tokens) of the newest of the last few runs that has both."""
    rows = await db.execute(
        select(Run.context_estimate, Run.context_tokens)
        .where(Run.conversation_id == cid)
        .order_by(Run.created_at.desc())
        .limit(_CALIBRATION_RUNS)
    )
    for estimate, tokens in rows:
        if estimate and tokens:
            return estimate, tokens
    return None


async def note_context(
    sessions: async_sessionmaker[AsyncSession], *, session_id: str, estimate: int, tokens: int
) -> None:
    """Record the estimate of the history a run was given and the model's count of it."""
    async with sessions() as db, db.begin():
        await db.execute(
            update(Run)
            .where(Run.id == session_id)
            .values(context_estimate=estimate, context_tokens=tokens)
        )


def _summary(row: ContextSummary) -> Summary:
    return Summary(row.id, row.through_sequence, row.through_message_id, row.content, row.model)
