"""store/archive.py on SQLite and PostgreSQL: a run's events in SQL, whole or not at all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from turnstream.events import StreamEntry, dumps
from turnstream.store import archive, runlog
from turnstream.store.archive import RunEnd
from turnstream.store.models import Run, RunEvents

LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


def _entries(first: int, last: int, *, ms: int = 1_700_000_000_000) -> list[StreamEntry]:
    """Stream entries with seq `first`..`last`: ids `<ms + seq>-0`, one `end` if last is 9."""
    out = []
    for seq in range(first, last + 1):
        type_, data = "delta", {"text": f'w{seq} with spaces, "quotes" and ünïcode\u2028'}
        if seq == 9:
            type_, data = "end", {"status": "completed", "messageId": "m"}
        out.append(StreamEntry(f"{ms + seq}-0", type_, seq, ms + seq, dumps(data)))
    return out


async def _run(sessions, cid: str, user_id: str, sid: str = "conversation:alice:r1") -> str:
    row = runlog.new_run(
        session_id=sid,
        conversation_id=cid,
        user_id=user_id,
        message_id="m",
        created_at_ms=1_700_000_000_000,
    )
    async with sessions() as db, db.begin():
        db.add(row)
    return sid


async def _append(sessions, **kwargs) -> str | None:
    """archive.append in a transaction of its own."""
    async with sessions() as db, db.begin():
        return await archive.append(db, **kwargs)


async def _rows(sessions) -> int:
    async with sessions() as db:
        return await db.scalar(select(func.count()).select_from(RunEvents))


async def test_entries_come_back_with_the_same_ids_fields_and_frames(sessions, cid, user_id):
    sid = await _run(sessions, cid, user_id)
    written = _entries(1, 9)
    assert await _append(sessions, session_id=sid, entries=written[:5]) == written[4].id
    assert await _append(sessions, session_id=sid, entries=written[5:]) == written[-1].id
    read = await archive.read(sessions, session_id=sid, since=LONG_AGO)
    assert read == written
    assert [e.sse_frame for e in read] == [e.sse_frame for e in written]
    assert await _rows(sessions) == 2


async def test_entries_written_twice_are_kept_once_and_a_gap_is_refused(sessions, cid, user_id):
    sid = await _run(sessions, cid, user_id)
    written = _entries(1, 9)
    await _append(sessions, session_id=sid, entries=written[:4])
    # Overlapping (a worker and a reaper both ending the run): only the new ones are added.
    assert await _append(sessions, session_id=sid, entries=written[2:6]) == written[5].id
    assert await _append(sessions, session_id=sid, entries=written[:6]) == written[5].id
    # Entries that would leave a hole (seq 7 missing) are not added.
    assert await _append(sessions, session_id=sid, entries=written[7:]) == written[5].id
    assert await archive.read(sessions, session_id=sid, since=LONG_AGO) == written[:6]
    # A first chunk must start at seq 1: a run whose head was trimmed before archiving.
    other = await _run(sessions, cid, user_id, "conversation:alice:r2")
    assert await _append(sessions, session_id=other, entries=written[3:]) is None
    assert await archive.read(sessions, session_id=other, since=LONG_AGO) == []
    # A run without a row in `runs` gets no archive.
    nobody = "conversation:alice:nobody"
    assert await _append(sessions, session_id=nobody, entries=written) is None


async def test_the_end_is_written_with_the_run_row_and_newest_answers(sessions, cid, user_id):
    assert await archive.newest(sessions, cid=cid, since=LONG_AGO) is None
    sid = await _run(sessions, cid, user_id)
    written = _entries(1, 9)
    await _append(sessions, session_id=sid, entries=written[:8])
    assert await archive.newest(sessions, cid=cid, since=LONG_AGO) is None  # not ended
    end = RunEnd("completed", None, 1_700_000_000_500)
    await _append(sessions, session_id=sid, entries=written[7:], end=end)
    run = await runlog.get_run(sessions, session_id=sid)
    assert (run.status, runlog.to_ms(run.ended_at)) == ("completed", end.ended_at_ms)
    found = await archive.newest(sessions, cid=cid, since=LONG_AGO)
    assert found is not None
    assert (found.session_id, found.status, found.last_id, found.last_ts) == (
        sid,
        "completed",
        written[-1].id,
        written[-1].ts,
    )
    assert (found.created_at_ms, found.ended_at_ms) == (1_700_000_000_000, end.ended_at_ms)
    # Only archives within the retention count.
    future = datetime.now(UTC) + timedelta(seconds=5)
    assert await archive.newest(sessions, cid=cid, since=future) is None
    assert await archive.read(sessions, session_id=sid, since=future) == []


async def test_prune_deletes_archives_past_their_retention(sessions, cid, user_id):
    sid = await _run(sessions, cid, user_id)
    await _append(sessions, session_id=sid, entries=_entries(1, 9))
    await archive.prune(sessions, before=datetime.now(UTC) - timedelta(days=1))
    assert await _rows(sessions) == 1
    await archive.prune(sessions, before=datetime.now(UTC) + timedelta(seconds=5))
    assert await _rows(sessions) == 0
    async with sessions() as db:
        assert await db.get(Run, sid) is not None  # the run's record stays


async def test_deleting_the_conversation_deletes_its_archive(store, sessions, cid, user_id):
    kept = await store.create(user_id=user_id)
    await _append(sessions, session_id=await _run(sessions, cid, user_id), entries=_entries(1, 9))
    other = await _run(sessions, kept.id, user_id, "conversation:alice:kept")
    await _append(sessions, session_id=other, entries=_entries(1, 9))
    assert await _rows(sessions) == 2
    await store.delete(cid=cid)
    assert await _rows(sessions) == 1
    assert len(await archive.read(sessions, session_id=other, since=LONG_AGO)) == 9
