"""The durable record of runs in SQL, which outlives the run's Redis keys."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from turnstream.store.models import Run


def new_run(
    *, session_id: str, conversation_id: str, user_id: str, message_id: str, created_at_ms: int
) -> Run:
    """A queued run's row, for the transaction that starts it."""
    return Run(
        id=session_id,
        conversation_id=conversation_id,
        user_id=user_id,
        message_id=message_id,
        status="queued",
        created_at=_from_ms(created_at_ms),
    )


async def end_run(
    sessions: async_sessionmaker[AsyncSession],
    *,
    session_id: str,
    status: str,
    error: str | None,
    ended_at_ms: int,
) -> None:
    async with sessions() as db, db.begin():
        await db.execute(
            update(Run)
            .where(Run.id == session_id)
            .values(status=status, error=error, ended_at=_from_ms(ended_at_ms))
        )


async def get_run(sessions: async_sessionmaker[AsyncSession], *, session_id: str) -> Run | None:
    async with sessions() as db:
        return await db.get(Run, session_id)


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def to_ms(when: datetime | None) -> int | None:
    return None if when is None else int(when.timestamp() * 1000)


async def session_ids(sessions: async_sessionmaker[AsyncSession], *, cid: str) -> list[str]:
    """Every run of a conversation, newest first: how deletion finds their Redis keys."""
    async with sessions() as db:
        rows = await db.scalars(
            select(Run.id).where(Run.conversation_id == cid).order_by(Run.created_at.desc())
        )
        return list(rows)
