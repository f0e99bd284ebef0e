"""A conversation's workspace: files the user uploads and the agent reads, writes and hands back.

    FileStore        the interface every caller uses (the API's routes, the agent's tools)
    SqlFileStore     (store/workspace_sql.py) files as rows in the database, so that every
                     API process and every worker sees the same ones; an object store can
                     take its place behind the same interface
    Workspace        one conversation's files as a run's tools see them: bound to that
                     conversation, within the limits, each change reported (`file` events)

A write of several files (one upload) stores all of them or, past a limit or on
a clash between a file and a folder, none.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from turnstream.config import Settings
from turnstream.errors import FileNotFound
from turnstream.store.views import NewMessage
from turnstream.store.writes import Also

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

OCTET_STREAM = "application/octet-stream"
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][\w.+-]{0,126}/[A-Za-z0-9][\w.+-]{0,126}$")


@dataclass(frozen=True)
class FileInfo:
    path: str
    size: int
    media_type: str
    sha256: str
    version: int
    modified_at: datetime

    def entry(self) -> dict[str, Any]:
        """The file as the API lists it, and as a `file` event and a message name it."""
        return {
            "path": self.path,
            "size": self.size,
            "mediaType": self.media_type,
            "sha256": self.sha256,
            "modifiedAt": self.modified_at.isoformat(),
            "version": self.version,
        }


@dataclass(frozen=True)
class Listing:
    items: list[FileInfo]
    total: int
    bytes: int


@dataclass(frozen=True)
class NewFile:
    path: str
    data: bytes
    media_type: str | None = None  # None or unusable: guessed from the name


@dataclass(frozen=True)
class Limits:
    file_bytes: int
    total_bytes: int
    files: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(
            settings.workspace_file_bytes, settings.workspace_bytes, settings.workspace_files
        )


class FileStore(Protocol):
    """Where workspaces live. Paths are checked (store/paths.py) before anything is touched."""

    async def listing(self, cid: str, *, prefix: str = "") -> Listing: ...

    async def read(self, cid: str, path: str) -> tuple[FileInfo, bytes]: ...

    async def contents(self, cid: str) -> dict[str, bytes]:
        """Every file's bytes by path, in one read (the sandbox copies them all)."""
        ...

    async def write(
        self, cid: str, files: Sequence[NewFile], *, limits: Limits, uploaded: bool
    ) -> list[FileInfo]: ...

    async def delete(self, cid: str, path: str) -> FileInfo: ...

    async def take_uploads(self, cid: str, db: AsyncSession | None = None) -> list[FileInfo]:
        """The uploads no user message has announced yet, marked announced now (in `db`'s
        transaction if given: the message's that announces them)."""
        ...


def media_type(path: str, given: str | None) -> str:
    """`given` when it is a plain `type/subtype`, else a guess from the name."""
    given = (given or "").split(";")[0].strip().lower()
    if _MEDIA_TYPE.match(given) and given != OCTET_STREAM:
        return given
    guessed, _ = mimetypes.guess_type(path, strict=False)
    return guessed or OCTET_STREAM


def announcing_uploads(files: FileStore, cid: str, message: NewMessage) -> Also:
    """The write that names in `message` the uploads no message has announced yet, and marks
    them announced, in the transaction that stores it: the agent hears of each upload
    once, and only from a message that was stored."""

    async def take(db: AsyncSession) -> None:
        uploads = await files.take_uploads(cid, db)
        message.files = [u.entry() for u in uploads] or None

    return take


@dataclass(frozen=True)
class FileChange:
    info: FileInfo
    deleted: bool = False


class Workspace:
    """One conversation's files, as a run's tools see them.

    Bound to the run's conversation when the run starts: a tool holding it can
    reach no other workspace. Each write or deletion is stored when the call
    returns, within the limits, and reported to `on_change` (the run turns it
    into a `file` event).
    """

    def __init__(
        self,
        files: FileStore,
        cid: str,
        limits: Limits,
        on_change: Callable[[FileChange], Awaitable[None]] | None = None,
    ) -> None:
        self._files = files
        self._cid = cid
        self._limits = limits
        self._on_change = on_change

    async def listing(self, prefix: str = "") -> Listing:
        return await self._files.listing(self._cid, prefix=prefix)

    async def read(self, path: str) -> tuple[FileInfo, bytes]:
        return await self._files.read(self._cid, path)

    async def contents(self) -> dict[str, bytes]:
        return await self._files.contents(self._cid)

    async def write(self, path: str, data: bytes, media_type: str | None = None) -> FileInfo:
        (info,) = await self._files.write(
            self._cid, [NewFile(path, data, media_type)], limits=self._limits, uploaded=False
        )
        await self._changed(FileChange(info))
        return info

    async def delete(self, path: str) -> FileInfo:
        info = await self._files.delete(self._cid, path)
        await self._changed(FileChange(info, deleted=True))
        return info

    async def apply(self, writes: Sequence[NewFile], deletions: Sequence[str]) -> list[FileChange]:
        """Store what a command changed: the writes all or none (within the limits), then
        the deletions (a file another call deleted meanwhile is skipped)."""
        changes = [FileChange(info) for info in await self._write_all(writes)]
        for path in deletions:
            try:
                changes.append(FileChange(await self._files.delete(self._cid, path), True))
            except FileNotFound:
                continue
        for change in changes:
            await self._changed(change)
        return changes

    async def _write_all(self, writes: Sequence[NewFile]) -> list[FileInfo]:
        if not writes:
            return []
        return await self._files.write(self._cid, writes, limits=self._limits, uploaded=False)

    async def _changed(self, change: FileChange) -> None:
        if self._on_change is not None:
            await self._on_change(change)
