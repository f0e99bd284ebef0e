"""The SQL of ChatStore's writes, following its two rules (see `store/chats.py`).

Every write updates the conversation row first, in the transaction that makes
the change: that bumps its `version` for the cache and takes PostgreSQL's row
lock (SQLite's write lock), so writers of one conversation go one at a time.
A message's sequence comes from the row's `next_sequence`, moved in that same
update.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from turnstream.ids import uuid7
from turnstream.store.models import Conversation, Message
from turnstream.store.views import MessageView, NewMessage

# More writes for a write's transaction: a run's row as it starts, its events as it ends,
# the uploads its question announces. They go first, before the conversation's row is
# taken by the write (`also` may take it itself): a run's row, then the conversation's,
# then its workspace's, is the order of every transaction that takes them, so that two
# of them cannot wait on each other.
Also = Callable[[AsyncSession], Awaitable[None]]


async def bump(db: AsyncSession, cid: str, now: datetime, **values: Any) -> int:
    """Bump the conversation's version (plus any other columns); return the new version."""
    result = await db.execute(
        update(Conversation)
        .where(Conversation.id == cid)
        .values(version=Conversation.version + 1, updated_at=now, **values)
        .returning(Conversation.version)
    )
    return result.scalar_one()


async def insert(
    db: AsyncSession, cid: str, message: NewMessage, now: datetime
) -> tuple[MessageView, int]:
    """Insert with the next sequence; return the message and the conversation's new version."""
    result = await db.execute(
        update(Conversation)
        .where(Conversation.id == cid)
        .values(
            next_sequence=Conversation.next_sequence + 1,
            version=Conversation.version + 1,
            updated_at=now,
        )
        .returning(Conversation.next_sequence, Conversation.version)
    )
    next_sequence, version = result.one()
    return await _add(db, cid, message, next_sequence - 1, now), version


async def save_run(
    db: AsyncSession,
    cid: str,
    session_id: str,
    messages: Sequence[NewMessage],
    now: datetime,
    *,
    keep_existing: bool,
    only_if: Callable[[], Awaitable[bool]] | None = None,
) -> tuple[list[MessageView], int, bool]:
    """Store a run's messages with consecutive sequences; return them, the version, and
    whether anything changed.

    Messages already stored for `session_id` are replaced when they are the
    conversation's newest (their sequences are reused); they are kept, and
    returned, with `keep_existing` or when anything came after them, since a
    reply must never move behind a later question. `only_if` is asked once the
    conversation's row is held: when it says no, nothing is stored.
    """
    result = await db.execute(
        update(Conversation)
        .where(Conversation.id == cid)
        .values(version=Conversation.version + 1, updated_at=now)
        .returning(Conversation.next_sequence, Conversation.version)
    )
    next_sequence, version = result.one()
    existing = list(
        await db.scalars(
            select(Message)
            .where(Message.conversation_id == cid, Message.session_id == session_id)
            .order_by(Message.sequence)
        )
    )
    if only_if is not None and not await only_if():
        return [MessageView.model_validate(m) for m in existing], version, False
    start = next_sequence
    if existing:
        first, last = existing[0].sequence, existing[-1].sequence
        is_tail = last == next_sequence - 1 and last - first + 1 == len(existing)
        if keep_existing or not is_tail:
            return [MessageView.model_validate(m) for m in existing], version, False
        for row in existing:
            await db.delete(row)
        await db.flush()  # their sequences and the reply's id are free again
        start = first
    await db.execute(
        update(Conversation)
        .where(Conversation.id == cid)
        .values(next_sequence=start + len(messages))
    )
    views = [await _add(db, cid, m, start + i, now) for i, m in enumerate(messages)]
    return views, version, True


async def _add(
    db: AsyncSession, cid: str, message: NewMessage, sequence: int, now: datetime
) -> MessageView:
    row = Message(
        **message.model_dump(exclude={"id"}),
        id=message.id or uuid7(),
        conversation_id=cid,
        sequence=sequence,
        created_at=now,
    )
    db.add(row)
    await db.flush()
    return MessageView.model_validate(row)
