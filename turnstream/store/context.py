"""What fitting a history to the model reads and writes in SQL (turnstream/context/).

Every read here costs what the answer holds, not what the conversation holds:
messages are read newest first through the `(conversation_id, sequence)` index
and only back to the stored summary (or until the caller has enough); the
newest summary, a message by id, the last user message and the newest runs
are each one index lookup.
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


async def latest_summary(sessions: async_sessionmaker[AsyncSession], *, cid: str) -> Summary | None:
    async with sessions() as db:
        row = await db.scalar(
            select(ContextSummary)
            .where(ContextSummary.conversation_id == cid)
            .order_by(ContextSummary.through_sequence.desc())
            .limit(1)
        )
    return None if row is None else _summary(row)


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


async def newest_messages(
    sessions: async_sessionmaker[AsyncSession],
    *,
    cid: str,
    after_sequence: int,
    enough: Callable[[list[MessageView]], bool],
) -> list[MessageView]:
    """The messages after `after_sequence`, in order: read newest first, a page at a time,
    until there are none left or `enough(the messages read so far, newest first)`."""
    newest_first: list[MessageView] = []
    below: int | None = None
    async with sessions() as db:
        while True:
            query = select(Message).where(
                Message.conversation_id == cid, Message.sequence > after_sequence
            )
            if below is not None:
                query = query.where(Message.sequence < below)
            rows = list(await db.scalars(query.order_by(Message.sequence.desc()).limit(_PAGE)))
            newest_first += [MessageView.model_validate(r) for r in rows]
            if len(rows) < _PAGE or enough(newest_first):
                break
            below = rows[-1].sequence
    return newest_first[::-1]


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


async def calibration(
    sessions: async_sessionmaker[AsyncSession], *, cid: str
) -> tuple[int, int] | None:
    """(estimate, measured prompt tokens) of the newest of the last few runs that has both."""
    async with sessions() as db:
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
    sessions: async_sessionmaker[AsyncSession],
    *,
    session_id: str,
    estimate: int | None = None,
    tokens: int | None = None,
) -> None:
    """Record a run's history estimate (before its agent runs) or the model's count of it."""
    values = {"context_estimate": estimate} if estimate is not None else {}
    values |= {"context_tokens": tokens} if tokens is not None else {}
    async with sessions() as db, db.begin():
        await db.execute(update(Run).where(Run.id == session_id).values(**values))


def _summary(row: ContextSummary) -> Summary:
    return Summary(row.id, row.through_sequence, row.through_message_id, row.content, row.model)
