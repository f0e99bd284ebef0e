"""A run's events in SQL (`run_events`), for when Redis has trimmed or expired its stream.

runs/archiver.py copies them from the run's stream; resume replays them, and
active-session and task-status answer from them, once Redis has let them go.

A row is a chunk of consecutive stream entries, zlib-compressed, one entry a
line: `<id> <type> <seq> <ts> <data>`, the data as `events.dumps` wrote it (JSON,
which never holds a raw newline). So an entry comes back with the same id,
fields and SSE frame. A run has a few rows: whatever a trim would have dropped
while it ran, the rest before its end, then its `error` and `end`.

The archive checks itself by `seq` (1, 2, 3… in every run): under the run row's
lock, a chunk is added only if it starts right after the newest one, and a
read gives a run's entries only from seq 1 on, without a gap. Writing the same
entries twice (a worker and a reaper racing to end one run) adds them once.

Why chunks rather than a row per event: an event row would repeat the run id
(about 60 bytes), in the table and in its index, for a `delta` of a few bytes;
a chunk compresses the entries together. The demo's 60-word reply (64 events,
3.4 kB of stream fields) is archived in 2 rows of 955 bytes together. Resume
reads the run's rows by primary key and finds the cursor among their entries
(a run has a few rows, and a replay from SQL is the rare path);
active-session and task-status read the conversation's newest run by
`ix_runs_conversation`, then its newest row's `last_id` and `last_ts`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from turnstream.events import StreamEntry
from turnstream.store.models import Run, RunEvents, utcnow


@dataclass(frozen=True)
class RunEnd:
    """How a run ended, for its row in `runs`: written with its last events."""

    status: str
    error: str | None
    ended_at_ms: int


@dataclass(frozen=True)
class ArchivedRun:
    """A run as SQL keeps it once it has ended, with its newest archived entry."""

    session_id: str
    user_id: str
    message_id: str
    status: str
    error: str | None
    created_at_ms: int
    ended_at_ms: int
    last_id: str  # the newest entry's id: the run's cursor
    last_ts: int  # its time (ms): the run's last activity


async def append(
    db: AsyncSession,
    *,
    session_id: str,
    entries: Sequence[StreamEntry],
    end: RunEnd | None = None,
) -> str | None:
    """Add the entries the archive lacks (and, with `end`, the run's end), in `db`'s
    transaction (the run's reply's, as it ends, or one of the archiver's own).

    `entries` are consecutive stream entries; those the archive holds are skipped,
    and nothing is added if the rest would not follow its newest entry. Returns the
    id of the newest entry archived, None if there is none (or the run has no row).
    """
    values: dict[str, Any] = {"id": Run.id}
    if end is not None:
        ended_at = datetime.fromtimestamp(end.ended_at_ms / 1000, UTC)
        values = {"status": end.status, "error": end.error, "ended_at": ended_at}
    # Writing the run row first takes its lock (PostgreSQL) or the write lock
    # (SQLite): two archivers of one run go one at a time.
    found = await db.execute(
        update(Run).where(Run.id == session_id).values(**values).returning(Run.id)
    )
    if found.scalar_one_or_none() is None:
        return None
    newest = (
        await db.execute(
            select(RunEvents.last_seq, RunEvents.last_id)
            .where(RunEvents.run_id == session_id)
            .order_by(RunEvents.first_seq.desc())
            .limit(1)
        )
    ).first()
    last_seq, last_id = (newest.last_seq, newest.last_id) if newest else (0, None)
    fresh = _following(entries, last_seq)
    if not fresh:
        return last_id
    db.add(
        RunEvents(
            run_id=session_id,
            first_seq=fresh[0].seq,
            last_seq=fresh[-1].seq,
            last_id=fresh[-1].id,
            last_ts=fresh[-1].ts,
            events=_encode(fresh),
            created_at=utcnow(),
        )
    )
    return fresh[-1].id


async def read(
    sessions: async_sessionmaker[AsyncSession], *, session_id: str, since: datetime
) -> list[StreamEntry]:
    """The run's archived entries, oldest first: all from seq 1 on, or none.

    Only rows written at `since` or later count (the retention).
    """
    async with sessions() as db:
        rows = await db.scalars(
            select(RunEvents)
            .where(RunEvents.run_id == session_id, RunEvents.created_at >= since)
            .order_by(RunEvents.first_seq)
        )
        out: list[StreamEntry] = []
        for row in rows:
            if row.first_seq != len(out) + 1:
                return []  # a gap: pruned in part, or written before archiving began
            out += _decode(row.events)
    return out


async def newest(
    sessions: async_sessionmaker[AsyncSession], *, cid: str, since: datetime
) -> ArchivedRun | None:
    """The conversation's newest run, if it has ended and has archived entries since `since`."""
    async with sessions() as db:
        run = await db.scalar(
            select(Run)
            .where(Run.conversation_id == cid)
            .order_by(Run.created_at.desc(), Run.id.desc())
            .limit(1)
        )
        if run is None or run.ended_at is None:
            return None
        chunk = (
            await db.execute(
                select(RunEvents.last_id, RunEvents.last_ts)
                .where(RunEvents.run_id == run.id, RunEvents.created_at >= since)
                .order_by(RunEvents.first_seq.desc())
                .limit(1)
            )
        ).first()
    if chunk is None:
        return None
    return ArchivedRun(
        session_id=run.id,
        user_id=run.user_id,
        message_id=run.message_id,
        status=run.status,
        error=run.error,
        created_at_ms=_ms(run.created_at),
        ended_at_ms=_ms(run.ended_at),
        last_id=chunk.last_id,
        last_ts=chunk.last_ts,
    )


async def prune(sessions: async_sessionmaker[AsyncSession], *, before: datetime) -> None:
    """Delete the archived events written before `before` (by `ix_run_events_created`)."""
    async with sessions() as db, db.begin():
        await db.execute(delete(RunEvents).where(RunEvents.created_at < before))


def _following(entries: Sequence[StreamEntry], last_seq: int) -> list[StreamEntry]:
    """The entries that continue an archive ending at `last_seq`, up to the first gap."""
    out: list[StreamEntry] = []
    for entry in entries:
        if entry.seq <= last_seq:
            continue
        if entry.seq != last_seq + len(out) + 1:
            break
        out.append(entry)
    return out


def _encode(entries: Sequence[StreamEntry]) -> bytes:
    lines = "\n".join(f"{e.id} {e.type} {e.seq} {e.ts} {e.raw}" for e in entries)
    return zlib.compress(lines.encode())


def _decode(blob: bytes) -> list[StreamEntry]:
    out = []
    for line in zlib.decompress(blob).decode().split("\n"):
        entry_id, type_, seq, ts, raw = line.split(" ", 4)
        out.append(StreamEntry(entry_id, type_, int(seq), int(ts), raw))
    return out


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)
