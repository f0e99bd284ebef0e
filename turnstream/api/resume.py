"""What a resume answers: a run's events after a cursor (docs/protocol.md, "Cursors and resuming").

    the run in Redis, cursor kept       its stream, followed live until `end`
    the run in Redis, cursor trimmed    running: 409 with the cursor to resync from;
                                        ended: its archive
    the run gone from Redis             its archive; without one, 404

The archive (runs/archiver.py) holds every event of an ended run with its
stream id and fields, so a replay from it sends the frames the live stream
sent. A malformed cursor gets 400, one past the run's newest event 409
(CursorAhead), either way.
"""

from __future__ import annotations

from dataclasses import dataclass

from sse_starlette import EventSourceResponse

from turnstream.api.sse import event_stream
from turnstream.errors import CursorAhead, CursorExpired, InvalidCursor, SessionNotFound
from turnstream.events import StreamEntry, cursor_key, parse_cursor
from turnstream.keys import RunKeys
from turnstream.live.stream import expired
from turnstream.runs import archiver
from turnstream.runtime import Runtime

MAX_SESSION_ID = 160  # the length of `runs.id` (store/models.py)


async def resume_stream(
    rt: Runtime, k: RunKeys, *, user_id: str, cursor: str | None
) -> EventSourceResponse:
    """The events of `user_id`'s run `k` after `cursor`; raises 404, 400 or 409 as above."""
    source = await resume_source(rt, k, user_id=user_id, cursor=cursor)
    return event_stream(rt, k, source.position, archived=source.archived)


@dataclass(frozen=True)
class Source:
    """Where a resume reads from: the live stream after `position`, or `archived` entries."""

    position: str
    archived: list[StreamEntry] | None


async def resume_source(rt: Runtime, k: RunKeys, *, user_id: str, cursor: str | None) -> Source:
    """Where the events of `user_id`'s run `k` after `cursor` are; raises 404, 400 or 409."""
    if len(k.sid) > MAX_SESSION_ID:
        raise SessionNotFound(k.cid)
    record = await rt.runs.get(k)
    if record is not None and record.user_id != user_id:
        record = None
    archived: list[StreamEntry] | None = None
    if record is not None:
        newest = record.last_id
    else:
        archived = await archiver.replay(rt, k, user_id=user_id)
        if archived is None:
            raise SessionNotFound(k.cid)
        newest = archived[-1].id
    position = checked_cursor(cursor)
    if cursor_key(position) > cursor_key(newest):
        # No entry of this run can be newer than its newest: the cursor is not one this run
        # sent, or Redis lost what came after (a failover). Waiting after it would silently
        # skip every event still to come, `end` included.
        raise CursorAhead(session_id=k.sid, newest=newest)
    if record is not None:
        resync = await expired(rt.redis, k, position)
        if resync is None:
            return Source(position, None)
        if not record.status.active:
            archived = await archiver.replay(rt, k, user_id=user_id)
        if archived is None:
            raise CursorExpired(session_id=k.sid, resync_cursor=resync)
    return Source(position, _after(archived or [], position))


def checked_cursor(raw: str | None) -> str:
    """`raw` as a normalised cursor ("0-0" for none); InvalidCursor if it is malformed."""
    position = parse_cursor(raw)
    if position is None:
        raise InvalidCursor("A cursor is a stream entry id such as 1704123456789-0.")
    return position


def _after(archived: list[StreamEntry], position: str) -> list[StreamEntry]:
    after = cursor_key(position)
    return [entry for entry in archived if cursor_key(entry.id) > after]
