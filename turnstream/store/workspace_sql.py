"""The workspace in SQL: each file a row of `workspace_files`, its bytes in the row.

A write takes the conversation row first (the update that moves its totals), so
the writers of one workspace go one at a time on SQLite and PostgreSQL alike:
two writes of one path both land, whole, one after the other (`version` says
which is the newer), and the limits are checked against totals no concurrent
write can move. Paths are checked (store/paths.py) before anything is touched.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import undefer

from turnstream.errors import AccessDenied, FileNotFound, PathConflict, WorkspaceFull
from turnstream.store.models import Conversation, WorkspaceFile, utcnow
from turnstream.store.paths import check_path, check_prefix, parents
from turnstream.store.workspace import FileInfo, Limits, Listing, NewFile, media_type


def _info(row: WorkspaceFile) -> FileInfo:
    return FileInfo(row.path, row.size, row.media_type, row.sha256, row.version, row.modified_at)


class SqlFileStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def listing(self, cid: str, *, prefix: str = "") -> Listing:
        prefix = check_prefix(prefix)
        query = select(WorkspaceFile).where(WorkspaceFile.conversation_id == cid)
        if prefix:
            query = query.where(WorkspaceFile.path.startswith(prefix, autoescape=True))
        async with self.sessions() as db:
            rows = (await db.scalars(query.order_by(WorkspaceFile.path))).all()
        items = [_info(row) for row in rows]
        return Listing(items, len(items), sum(i.size for i in items))

    async def read(self, cid: str, path: str) -> tuple[FileInfo, bytes]:
        path = check_path(path)
        async with self.sessions() as db:
            row = await db.scalar(
                select(WorkspaceFile)
                .options(undefer(WorkspaceFile.data))
                .where(WorkspaceFile.conversation_id == cid, WorkspaceFile.path == path)
            )
        if row is None:
            raise FileNotFound(path)
        return _info(row), row.data

    async def contents(self, cid: str) -> dict[str, bytes]:
        query = (
            select(WorkspaceFile.path, WorkspaceFile.data)
            .where(WorkspaceFile.conversation_id == cid)
            .order_by(WorkspaceFile.path)
        )
        async with self.sessions() as db:
            return {path: data for path, data in await db.execute(query)}

    async def write(
        self, cid: str, files: Sequence[NewFile], *, limits: Limits, uploaded: bool
    ) -> list[FileInfo]:
        wanted = {check_path(f.path): f for f in files}  # a path named twice: the last wins
        for f in wanted.values():
            if len(f.data) > limits.file_bytes:
                raise WorkspaceFull(
                    f"{f.path!r} has {len(f.data):,} bytes, over the limit for one file",
                    limit=limits.file_bytes,
                    setting="TURNSTREAM_WORKSPACE_FILE_BYTES",
                )
        now = utcnow()
        async with self.sessions() as db, db.begin():
            total_bytes, total_files = await _lock(db, cid)
            existing = await _rows(db, cid, list(wanted))
            await _check_clashes(db, cid, list(wanted))
            total_bytes += sum(len(f.data) for f in wanted.values())
            total_bytes -= sum(row.size for row in existing.values())
            total_files += len(wanted) - len(existing)
            _check_totals(total_bytes, total_files, limits)
            out = []
            for path, f in wanted.items():
                row = existing.get(path)
                if row is None:
                    row = WorkspaceFile(conversation_id=cid, path=path, version=0)
                    db.add(row)
                row.data = f.data
                row.size = len(f.data)
                row.sha256 = hashlib.sha256(f.data).hexdigest()
                row.media_type = media_type(path, f.media_type)
                row.version += 1
                row.uploaded = uploaded
                row.modified_at = now
                out.append(row)
            await db.flush()
            await _set_totals(db, cid, total_bytes, total_files)
            return [_info(row) for row in out]

    async def delete(self, cid: str, path: str) -> FileInfo:
        path = check_path(path)
        async with self.sessions() as db, db.begin():
            total_bytes, total_files = await _lock(db, cid)
            row = (await _rows(db, cid, [path])).get(path)
            if row is None:
                raise FileNotFound(path)
            info = _info(row)
            await db.execute(
                delete(WorkspaceFile).where(
                    WorkspaceFile.conversation_id == cid, WorkspaceFile.path == path
                )
            )
            await _set_totals(db, cid, total_bytes - info.size, total_files - 1)
        return info

    async def take_uploads(self, cid: str, db: AsyncSession | None = None) -> list[FileInfo]:
        if db is None:
            async with self.sessions() as db, db.begin():
                return await self.take_uploads(cid, db)
        await _lock(db, cid)  # the conversation's row first, as every workspace write
        rows = (
            await db.scalars(
                update(WorkspaceFile)
                .where(WorkspaceFile.conversation_id == cid, WorkspaceFile.uploaded)
                .values(uploaded=False)
                .returning(WorkspaceFile)
            )
        ).all()
        return sorted((_info(row) for row in rows), key=lambda i: i.path)


async def _lock(db: AsyncSession, cid: str) -> tuple[int, int]:
    """Take the conversation row (its lock serialises the workspace's writers); its totals."""
    result = await db.execute(
        update(Conversation)
        .where(Conversation.id == cid)
        .values(workspace_files=Conversation.workspace_files)
        .returning(Conversation.workspace_bytes, Conversation.workspace_files)
    )
    totals = result.one_or_none()
    if totals is None:
        raise AccessDenied()  # deleted meanwhile: as any route says of a gone conversation
    return int(totals[0]), int(totals[1])


async def _set_totals(db: AsyncSession, cid: str, total_bytes: int, total_files: int) -> None:
    await db.execute(
        update(Conversation)
        .where(Conversation.id == cid)
        .values(workspace_bytes=total_bytes, workspace_files=total_files)
    )


async def _rows(db: AsyncSession, cid: str, paths: list[str]) -> dict[str, WorkspaceFile]:
    rows = await db.scalars(
        select(WorkspaceFile).where(
            WorkspaceFile.conversation_id == cid, WorkspaceFile.path.in_(paths)
        )
    )
    return {row.path: row for row in rows}


async def _check_clashes(db: AsyncSession, cid: str, paths: list[str]) -> None:
    """PathConflict when a path is a folder of another file, or has a file as a folder."""
    new = set(paths)
    for path in paths:
        for parent in parents(path):
            if parent in new:
                raise PathConflict(path, parent)
    above = {parent for path in paths for parent in parents(path)}
    if above:
        clash = await db.scalar(
            select(WorkspaceFile.path)
            .where(WorkspaceFile.conversation_id == cid, WorkspaceFile.path.in_(above))
            .limit(1)
        )
        if clash is not None:
            raise PathConflict(next(p for p in paths if clash in parents(p)), clash)
    for path in paths:
        below = await db.scalar(
            select(WorkspaceFile.path)
            .where(
                WorkspaceFile.conversation_id == cid,
                WorkspaceFile.path.startswith(path + "/", autoescape=True),
            )
            .limit(1)
        )
        if below is not None:
            raise PathConflict(path, below)


def _check_totals(total_bytes: int, total_files: int, limits: Limits) -> None:
    if total_files > limits.files:
        raise WorkspaceFull(
            f"The workspace would hold {total_files:,} files, over its limit",
            limit=limits.files,
            setting="TURNSTREAM_WORKSPACE_FILES",
        )
    if total_bytes > limits.total_bytes:
        raise WorkspaceFull(
            f"The workspace would hold {total_bytes:,} bytes, over its limit",
            limit=limits.total_bytes,
            setting="TURNSTREAM_WORKSPACE_BYTES",
        )
