"""A conversation's Claude Code session in SQL: its transcript, and which session it resumes.

The Claude Agent SDK mirrors the transcript Claude Code writes (one JSON object a
line) to a session store of the application's choosing, and materializes it again
before a resume (agents/claude_sessions.py adapts this module to its interface).
Here that transcript is kept per conversation:

    claude_session_entries  one row an entry, in append order (`position`), keyed by
                            the conversation and the SDK's key (project, session,
                            subpath: "" for the main transcript, else a subagent's);
                            an entry's `uuid` is stored once per key
    claude_sessions         one row a conversation: the session its next turn resumes
                            and the run whose reply it ends with, the entries' bytes
                            (at most `limit`), and `full` once a write went past it

Both go with their conversation (a foreign key, ON DELETE CASCADE). Nothing here
reads or changes an entry: Claude Code compacts its own context inside the
transcript. Writes to a conversation's entries lock its `claude_sessions` row
first (the row lock in PostgreSQL, the write lock in SQLite), so the size check
and the uuid check hold across processes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from turnstream.store.models import ClaudeSession, ClaudeSessionEntry, Message, utcnow

Entry = dict[str, Any]  # one transcript line, opaque: it has a `type`, most have a `uuid`
_UUID_CHARS = 64  # claude_session_entries.uuid


@dataclass(frozen=True)
class Key:
    """Where entries are kept within a conversation (the SDK's `SessionKey`)."""

    project_key: str
    session_id: str
    subpath: str = ""  # "": the main transcript


@dataclass(frozen=True)
class Kept:
    """What a conversation keeps of its Claude session, read before a turn."""

    session_id: str | None  # the session its next turn resumes; None: none yet
    through_run: str | None  # the run whose reply that session ends with
    full: bool  # a write went past the limit: the entries are not whole
    # The run of the message just before the newest user message (None: no such
    # message, or the newest is no user message): the session must end with that run.
    answered_last: str | None


class ClaudeSessions:
    """One conversation's Claude session transcript, at most `limit` bytes of entries."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], cid: str, *, limit: int):
        self.sessions = sessions
        self.cid = cid
        self.limit = limit

    async def kept(self) -> Kept:
        async with self.sessions() as db:
            row = (
                await db.execute(
                    select(
                        ClaudeSession.session_id, ClaudeSession.through_run, ClaudeSession.full
                    ).where(ClaudeSession.conversation_id == self.cid)
                )
            ).one_or_none()
            newest = (
                await db.execute(
                    select(Message.role, Message.session_id)
                    .where(Message.conversation_id == self.cid)
                    .order_by(Message.sequence.desc())
                    .limit(2)
                )
            ).all()
        answered = newest[1].session_id if len(newest) == 2 and newest[0].role == "user" else None
        if row is None:
            return Kept(None, None, False, answered)
        return Kept(row.session_id, row.through_run, row.full, answered)

    async def start(self) -> None:
        """Forget the conversation's session and its entries: a new one is mirrored next."""
        async with self.sessions() as db, db.begin():
            await _lock(db, self.cid)
            await db.execute(
                delete(ClaudeSessionEntry).where(ClaudeSessionEntry.conversation_id == self.cid)
            )
            await db.execute(
                update(ClaudeSession)
                .where(ClaudeSession.conversation_id == self.cid)
                .values(session_id=None, through_run=None, bytes=0, full=False, updated_at=utcnow())
            )

    async def append(self, key: Key, entries: list[Entry]) -> bool:
        """Store the entries not stored yet (by `uuid`), in order; False, storing nothing,
        when they would take the conversation past the limit (it is then `full`)."""
        rows = _rows(entries)
        if not rows:
            return True
        async with self.sessions() as db, db.begin():
            stored, full = await _lock(db, self.cid)
            if full:
                return False
            uuids = [r["uuid"] for r in rows if r["uuid"] is not None]
            if uuids:
                there = set(
                    await db.scalars(
                        select(ClaudeSessionEntry.uuid).where(
                            *_where(self.cid, key), ClaudeSessionEntry.uuid.in_(uuids)
                        )
                    )
                )
                rows = [r for r in rows if r["uuid"] is None or r["uuid"] not in there]
            size = sum(r["size"] for r in rows)
            over = stored + size > self.limit
            changes: dict[str, Any] = {"full": True} if over else {"bytes": stored + size}
            await db.execute(
                update(ClaudeSession)
                .where(ClaudeSession.conversation_id == self.cid)
                .values(updated_at=utcnow(), **changes)
            )
            if over:
                return False
            if rows:
                where = {
                    "conversation_id": self.cid,
                    "project_key": key.project_key,
                    "session_id": key.session_id,
                    "subpath": key.subpath,
                }
                await db.execute(insert(ClaudeSessionEntry), [{**where, **r} for r in rows])
        return True

    async def load(self, key: Key) -> list[Entry] | None:
        """The key's entries in append order; None if it has none. ValueError: an entry is
        not a JSON object with a `type`."""
        async with self.sessions() as db:
            texts = list(
                await db.scalars(
                    select(ClaudeSessionEntry.entry)
                    .where(*_where(self.cid, key))
                    .order_by(ClaudeSessionEntry.position)
                )
            )
        if not texts:
            return None
        entries = [json.loads(text) for text in texts]
        if not all(isinstance(e, dict) and isinstance(e.get("type"), str) for e in entries):
            raise ValueError("an entry is not a JSON object with a type")
        return entries

    async def subpaths(self, project_key: str, session_id: str) -> list[str]:
        """The subpaths (subagents' transcripts) kept under a session."""
        key = Key(project_key, session_id)
        async with self.sessions() as db:
            found = await db.scalars(
                select(ClaudeSessionEntry.subpath)
                .where(*_where(self.cid, key, subpaths=True), ClaudeSessionEntry.subpath != "")
                .distinct()
            )
            return sorted(found)

    async def delete(self, key: Key) -> None:
        """Delete a key's entries: a main transcript's with its subpaths'."""
        where = _where(self.cid, key, subpaths=not key.subpath)
        async with self.sessions() as db, db.begin():
            stored, _full = await _lock(db, self.cid)
            size = await db.scalar(
                select(func.coalesce(func.sum(ClaudeSessionEntry.size), 0)).where(*where)
            )
            await db.execute(delete(ClaudeSessionEntry).where(*where))
            await db.execute(
                update(ClaudeSession)
                .where(ClaudeSession.conversation_id == self.cid)
                .values(bytes=stored - int(size or 0), updated_at=utcnow())
            )

    async def remember(self, *, session_id: str, through_run: str) -> bool:
        """The conversation's next turn resumes `session_id`, which ends with the reply of
        `through_run`; False (nothing changed) if the session went past the limit."""
        async with self.sessions() as db, db.begin():
            result = await db.execute(
                update(ClaudeSession)
                .where(ClaudeSession.conversation_id == self.cid, ClaudeSession.full.is_(False))
                .values(session_id=session_id, through_run=through_run, updated_at=utcnow())
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]


async def _lock(db: AsyncSession, cid: str) -> tuple[int, bool]:
    """Make the conversation's row if it has none, lock it; its (bytes, full)."""
    upsert = pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
    await db.execute(
        upsert(ClaudeSession)
        .values(conversation_id=cid, bytes=0, full=False, updated_at=utcnow())
        .on_conflict_do_nothing()
    )
    row = (
        await db.execute(
            update(ClaudeSession)
            .where(ClaudeSession.conversation_id == cid)
            .values(bytes=ClaudeSession.bytes)
            .returning(ClaudeSession.bytes, ClaudeSession.full)
        )
    ).one()
    return int(row.bytes), bool(row.full)


def _where(cid: str, key: Key, *, subpaths: bool = False) -> list[Any]:
    """The conditions for a key's entries; `subpaths`: every subpath of its session."""
    entry = ClaudeSessionEntry
    where = [
        entry.conversation_id == cid,
        entry.project_key == key.project_key,
        entry.session_id == key.session_id,
    ]
    return where if subpaths else [*where, entry.subpath == key.subpath]


def _rows(entries: list[Entry]) -> list[dict[str, Any]]:
    """The entries as rows: JSON text, its size, the uuid; a uuid repeated in the batch once."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for entry in entries:
        uuid = entry.get("uuid")
        # Longer than the column takes: kept without the check (no CLI uuid is).
        uuid = uuid if isinstance(uuid, str) and 0 < len(uuid) <= _UUID_CHARS else None
        if uuid is not None:
            if uuid in seen:
                continue
            seen.add(uuid)
        text = json.dumps(entry, ensure_ascii=False, separators=(",", ":"))
        rows.append({"uuid": uuid, "entry": text, "size": len(text.encode())})
    return rows
