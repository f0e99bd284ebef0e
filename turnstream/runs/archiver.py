"""A run's events copied from its Redis stream to SQL (store/archive.py), and read back.

With `TURNSTREAM_ARCHIVE_RETENTION` > 0, a run is created with `archived_through`
in its hash ("0-0"): the newest entry SQL holds. The trim in `_prelude.lua`
never drops an entry past it, so no event is lost to the hot buffer:

    while it runs    its stream is over `stream_maxlen`: beside each lease renewal,
                     the executor's watcher has what the trim waits to drop copied
                     (`KeepUp`), and the archived script trims it
    end_run          before the finish script, in the reply's transaction: every
                     entry so far (`unarchived`); after it: `error` and `end`, with
                     the run's end in `runs`, in one transaction (`save_end`)

So a client that sees `end` finds every event before it in SQL, and `end`
itself a moment later. Until then the stream holds the tail (it is the newest:
no trim drops it, and it is kept `stream_ttl`), and `replay` takes it from
there. Only a process that dies between the finish script and `save_end` leaves
an archive without its end: such a run is replayed from Redis while its stream
is kept, and from then on not at all (404), as before archives.

Retention: archives written longer than `archive_retention` ago are not read,
and every process's reaper loop deletes them (`prune`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import datetime, timedelta

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from turnstream.errors import DatabaseUnavailable
from turnstream.events import StreamEntry
from turnstream.keys import RunField, RunKeys
from turnstream.live.client import entries, maybe_text
from turnstream.live.record import RunRecord
from turnstream.live.status import RunStatus
from turnstream.runs.reply import Reply
from turnstream.runtime import Runtime
from turnstream.store import archive, runlog
from turnstream.store.archive import RunEnd
from turnstream.store.models import utcnow

logger = logging.getLogger("turnstream.archive")

PRUNE_SECONDS = 600  # how often each process deletes archives past their retention


async def save(rt: Runtime, k: RunKeys, end: RunEnd | None = None) -> None:
    """Copy the entries SQL lacks from the run's stream to SQL; with `end`, end its row too.

    A run created without archiving (no `archived_through`) only gets its end recorded.
    """
    events = await unarchived(rt, k)
    if events.through is None:
        if end is not None:
            await runlog.end_run(
                rt.sessions,
                session_id=k.sid,
                status=end.status,
                error=end.error,
                ended_at_ms=end.ended_at_ms,
            )
        return
    async with rt.sessions() as db, db.begin():
        await events.write(db, end)
    await events.mark(rt)


@dataclasses.dataclass
class Unarchived:
    """The entries of a run's stream that SQL lacks: `write` them in a transaction, then
    `mark` them archived in Redis (which lets the trim drop them)."""

    k: RunKeys
    through: str | None  # the newest entry SQL holds; None: the run is not archived
    entries: list[StreamEntry]
    newest: str | None = None

    async def write(self, db: AsyncSession, end: RunEnd | None = None) -> None:
        if self.through is not None:
            self.newest = await archive.append(
                db, session_id=self.k.sid, entries=self.entries, end=end
            )

    async def mark(self, rt: Runtime) -> None:
        if self.newest is not None and self.newest != self.through:
            await rt.runs.archived(self.k, self.newest)


async def unarchived(rt: Runtime, k: RunKeys) -> Unarchived:
    """What of the run's stream is not in SQL yet."""
    through = maybe_text(await rt.redis.hget(k.run, RunField.ARCHIVED_THROUGH))
    if through is None:
        return Unarchived(k, None, [])
    return Unarchived(k, through, entries(await rt.redis.xrange(k.stream, f"({through}", "+")))


async def save_end(
    rt: Runtime, k: RunKeys, status: RunStatus, error: tuple[str, str] | None, ended_at: int
) -> None:
    """After the finish script: its `error` and `end` into SQL, with the run's end."""
    await save(rt, k, RunEnd(status.value, error[0] if error else None, ended_at))


class KeepUp:
    """A running run's archiving, beside its lease renewals (the executor's watcher).

    `poke` copies what the stream holds beyond `stream_maxlen` to SQL (then the
    archived script trims it), in a task of its own: a slow database never holds
    up a lease renewal. One at a time; an outage only delays it (logged; the
    stream grows meanwhile). `wait` waits for the one under way, if any. The run's
    own mark decides, not this process's setting: a run created by a process that
    archives is archived by every worker.
    """

    def __init__(self, rt: Runtime, k: RunKeys) -> None:
        self.rt, self.k = rt, k
        self.task: asyncio.Task[None] | None = None

    def poke(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._keep_up())

    async def wait(self) -> None:
        if self.task is not None:
            await self.task

    async def _keep_up(self) -> None:
        try:
            if await self.rt.redis.xlen(self.k.stream) > self.rt.settings.stream_maxlen:
                await save(self.rt, self.k)
        except (RedisError, SQLAlchemyError, DatabaseUnavailable) as exc:
            logger.warning("run %s: its events could not be archived yet (%s)", self.k.sid, exc)


async def replay(rt: Runtime, k: RunKeys, *, user_id: str) -> list[StreamEntry] | None:
    """Every event of the ended run `k` of `user_id`, from its archive; None without one.

    While the archive lacks `end` (it goes in just after the finish script), the tail
    comes from the stream. None too if the events cannot be had whole, up to `end`.
    """
    if not rt.runs.archive:
        return None
    run = await runlog.get_run(rt.sessions, session_id=k.sid)
    if run is None or run.conversation_id != k.cid or run.user_id != user_id:
        return None
    events = await archive.read(rt.sessions, session_id=k.sid, since=_oldest_kept(rt))
    if events and not events[-1].is_end:
        for entry in entries(await rt.redis.xrange(k.stream, f"({events[-1].id}", "+")):
            if entry.seq != events[-1].seq + 1:
                break
            events.append(entry)
    return events if events and events[-1].is_end else None


async def so_far(rt: Runtime, k: RunKeys) -> list[StreamEntry]:
    """Every event the live run `k` has written: what SQL holds of them, then the stream's."""
    through = maybe_text(await rt.redis.hget(k.run, RunField.ARCHIVED_THROUGH))
    if through is None or through == "0-0":
        return entries(await rt.redis.xrange(k.stream))
    archived = await archive.read(rt.sessions, session_id=k.sid, since=_oldest_kept(rt))
    last = archived[-1].seq if archived else 0  # SQL may hold a little past `through`
    tail = entries(await rt.redis.xrange(k.stream, f"({through}", "+"))
    return archived + [entry for entry in tail if entry.seq > last]


async def reply_so_far(rt: Runtime, k: RunKeys) -> Reply:
    """The live run `k`'s reply as its events make it: what ends or goes on stores it whole."""
    reply = Reply()
    for entry in await so_far(rt, k):
        reply.add(entry.type, entry.data)
    return reply


async def newest(rt: Runtime, cid: str) -> RunRecord | None:
    """The conversation's newest run from SQL, if it has ended within the retention."""
    if not rt.runs.archive:
        return None
    run = await archive.newest(rt.sessions, cid=cid, since=_oldest_kept(rt))
    if run is None:
        return None
    record = RunRecord.from_log(
        session_id=run.session_id,
        conversation_id=cid,
        user_id=run.user_id,
        message_id=run.message_id,
        status=run.status,
        created_at=run.created_at_ms,
        ended_at=run.ended_at_ms,
        error=run.error,
    )
    return dataclasses.replace(record, last_id=run.last_id, last_activity=run.last_ts)


async def prune(rt: Runtime) -> None:
    """Delete the archives past their retention."""
    if rt.runs.archive:
        await archive.prune(rt.sessions, before=_oldest_kept(rt))


def _oldest_kept(rt: Runtime) -> datetime:
    return utcnow() - timedelta(seconds=rt.settings.archive_retention)
