"""The workspace's SQL store on SQLite and PostgreSQL: whole writes, limits, concurrent writers.

Two engines stand for two processes: each has its own connections, so their
writes really race in the database, as an API process's upload and a worker's
tool do.
"""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from turnstream.errors import AccessDenied, FileNotFound, PathConflict, WorkspaceFull
from turnstream.store.db import create_engine, session_factory
from turnstream.store.models import Conversation, WorkspaceFile
from turnstream.store.views import NewMessage
from turnstream.store.workspace import FileChange, Limits, NewFile, Workspace, announcing_uploads
from turnstream.store.workspace_sql import SqlFileStore

ROOMY = Limits(file_bytes=1 << 20, total_bytes=1 << 24, files=100)


@pytest.fixture
def files(sessions: async_sessionmaker[AsyncSession]) -> SqlFileStore:
    return SqlFileStore(sessions)


async def _totals(sessions, cid: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """The totals kept on the conversation row, and the same counted from the files."""
    async with sessions() as db:
        kept = (
            await db.execute(
                select(Conversation.workspace_bytes, Conversation.workspace_files).where(
                    Conversation.id == cid
                )
            )
        ).one()
        counted = (
            await db.execute(
                select(func.coalesce(func.sum(WorkspaceFile.size), 0), func.count()).where(
                    WorkspaceFile.conversation_id == cid
                )
            )
        ).one()
    return (int(kept[0]), int(kept[1])), (int(counted[0]), int(counted[1]))


async def test_a_write_stores_the_bytes_and_a_rewrite_bumps_the_version(files, cid) -> None:
    (first,) = await files.write(cid, [NewFile("a/b.csv", b"x,y\n")], limits=ROOMY, uploaded=True)
    assert (first.version, first.size, first.media_type) == (1, 4, "text/csv")
    assert first.sha256 == hashlib.sha256(b"x,y\n").hexdigest()
    (second,) = await files.write(cid, [NewFile("a/b.csv", b"new")], limits=ROOMY, uploaded=True)
    assert second.version == 2
    info, data = await files.read(cid, "a/b.csv")
    assert data == b"new" and info == second
    listing = await files.listing(cid)
    assert [i.path for i in listing.items] == ["a/b.csv"] and listing.bytes == 3


async def test_contents_reads_every_file_of_one_workspace_only(files, store, cid) -> None:
    other = (await store.create(user_id="alice", title=None, metadata=None)).id
    written = [NewFile("b.bin", bytes(range(256))), NewFile("a/x.txt", b"x")]
    await files.write(cid, written, limits=ROOMY, uploaded=False)
    await files.write(other, [NewFile("secret.txt", b"no")], limits=ROOMY, uploaded=False)

    assert await files.contents(cid) == {"a/x.txt": b"x", "b.bin": bytes(range(256))}
    assert await files.contents(other) == {"secret.txt": b"no"}


async def test_limits_refuse_the_whole_write_and_keep_the_totals_true(files, sessions, cid) -> None:
    tight = Limits(file_bytes=10, total_bytes=20, files=2)

    async def refused(batch: list[NewFile], limits: Limits = tight) -> str:
        with pytest.raises(WorkspaceFull) as full:
            await files.write(cid, batch, limits=limits, uploaded=False)
        return full.value.setting

    await files.write(cid, [NewFile("a", b"1" * 10)], limits=tight, uploaded=False)
    assert await refused([NewFile("b", b"2" * 11)]) == "TURNSTREAM_WORKSPACE_FILE_BYTES"
    assert await refused([NewFile("b", b"2"), NewFile("c", b"3")]) == "TURNSTREAM_WORKSPACE_FILES"
    await files.write(cid, [NewFile("b", b"2" * 10)], limits=tight, uploaded=False)  # 20: full
    assert await refused([NewFile("a", b"1" * 11)]) == "TURNSTREAM_WORKSPACE_FILE_BYTES"
    # Replacing a file counts its new size, not both: 10 + 10 is over 15, 0 + 10 is not.
    assert (
        await refused([NewFile("a", b"1" * 10)], Limits(10, 15, 2)) == "TURNSTREAM_WORKSPACE_BYTES"
    )
    await files.write(cid, [NewFile("a", b"")], limits=Limits(10, 15, 2), uploaded=False)
    kept, counted = await _totals(sessions, cid)
    assert kept == counted == (10, 2)


async def test_a_file_and_a_folder_cannot_share_a_name(files, cid) -> None:
    await files.write(cid, [NewFile("a/b", b"1")], limits=ROOMY, uploaded=False)
    for path in ("a", "a/b/c"):
        with pytest.raises(PathConflict):
            await files.write(cid, [NewFile(path, b"2")], limits=ROOMY, uploaded=False)
    with pytest.raises(PathConflict):
        await files.write(
            cid, [NewFile("x", b"1"), NewFile("x/y", b"2")], limits=ROOMY, uploaded=False
        )
    # `a_b` and `a%` are not under `a/`: LIKE's wildcards are escaped.
    await files.write(
        cid, [NewFile("a_b", b"1"), NewFile("a%", b"2")], limits=ROOMY, uploaded=False
    )
    assert [i.path for i in (await files.listing(cid)).items] == ["a%", "a/b", "a_b"]


async def test_delete_takes_the_file_and_its_bytes_off_the_totals(files, sessions, cid) -> None:
    await files.write(cid, [NewFile("a", b"123"), NewFile("b", b"4")], limits=ROOMY, uploaded=False)
    deleted = await files.delete(cid, "a")
    assert deleted.path == "a" and deleted.size == 3
    with pytest.raises(FileNotFound):
        await files.delete(cid, "a")
    with pytest.raises(FileNotFound):
        await files.read(cid, "a")
    kept, counted = await _totals(sessions, cid)
    assert kept == counted == (1, 1)


async def test_a_deleted_conversation_is_no_workspace(files, store, cid) -> None:
    await files.write(cid, [NewFile("a", b"1")], limits=ROOMY, uploaded=False)
    await store.delete(cid=cid)
    assert (await files.listing(cid)).items == []
    with pytest.raises(AccessDenied):
        await files.write(cid, [NewFile("b", b"2")], limits=ROOMY, uploaded=False)


async def test_uploads_are_announced_once_in_the_next_user_message(files, store, cid) -> None:
    await files.write(cid, [NewFile("data.csv", b"1,2\n")], limits=ROOMY, uploaded=True)
    await files.write(cid, [NewFile("made.md", b"# x")], limits=ROOMY, uploaded=False)
    first = NewMessage(id="m1", role="user", content="plot it")
    await store.append(cid=cid, message=first, also=announcing_uploads(files, cid, first))
    assert [f["path"] for f in first.files or []] == ["data.csv"]
    assert first.files is not None and first.files[0]["mediaType"] == "text/csv"
    second = NewMessage(id="m2", role="user", content="again")
    await store.append(cid=cid, message=second, also=announcing_uploads(files, cid, second))
    assert second.files is None
    stored = await store.messages(cid=cid, limit=10)
    assert [m.files for m in stored] == [first.files, None]


async def test_uploads_stay_unannounced_when_the_message_is_not_stored(files, store, cid) -> None:
    await files.write(cid, [NewFile("data.csv", b"1,2\n")], limits=ROOMY, uploaded=True)
    lost = NewMessage(id="m1", role="user", content="x" * 10)
    announce = announcing_uploads(files, cid, lost)

    async def then_fail(db: AsyncSession) -> None:
        await announce(db)
        raise RuntimeError("the message's write failed")

    with pytest.raises(RuntimeError):
        await store.append(cid=cid, message=lost, also=then_fail)
    assert [u.path for u in await files.take_uploads(cid)] == ["data.csv"]


async def test_the_workspace_of_a_run_reports_each_change(files, cid) -> None:
    changes: list[FileChange] = []

    async def record(change: FileChange) -> None:
        changes.append(change)

    workspace = Workspace(files, cid, ROOMY, on_change=record)
    await workspace.write("out/r.md", b"# hi", "text/markdown")
    await workspace.delete("out/r.md")
    assert [(c.info.path, c.info.version, c.deleted) for c in changes] == [
        ("out/r.md", 1, False),
        ("out/r.md", 1, True),
    ]


async def test_writers_in_two_processes_lose_nothing_and_never_mix_a_file(
    database_url, files, sessions, cid
) -> None:
    """An upload and a run's writes at once, through two engines: both kept, each file whole,
    and every write of the one shared path got its own version."""
    other_engine = create_engine(database_url)
    other = SqlFileStore(session_factory(other_engine))
    try:

        async def uploads() -> None:
            for i in range(15):
                await files.write(
                    cid,
                    [NewFile(f"up/{i}.txt", b"u" * 100), NewFile("shared", b"U" * 5000)],
                    limits=ROOMY,
                    uploaded=True,
                )

        async def run_writes() -> None:
            for i in range(15):
                await other.write(
                    cid, [NewFile(f"run/{i}.txt", b"r" * 100)], limits=ROOMY, uploaded=False
                )
                await other.write(
                    cid, [NewFile("shared", b"R" * 7000)], limits=ROOMY, uploaded=False
                )

        await asyncio.gather(uploads(), run_writes())
    finally:
        await other_engine.dispose()
    listing = await files.listing(cid)
    paths = {i.path for i in listing.items}
    assert paths == {f"up/{i}.txt" for i in range(15)} | {f"run/{i}.txt" for i in range(15)} | {
        "shared"
    }
    info, data = await files.read(cid, "shared")
    assert info.version == 30
    assert data in (b"U" * 5000, b"R" * 7000)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    kept, counted = await _totals(sessions, cid)
    assert kept == counted == (3000 + len(data), 31)
