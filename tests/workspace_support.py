"""A run's workspace for tool tests: conversations in a fresh SQLite database, and the
ToolContext a tool call gets, recording each change the workspace reports (the run
turns those into `file` events)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from turnstream.agents.tools import ToolContext
from turnstream.config import Settings
from turnstream.store.db import create_engine, session_factory
from turnstream.store.migrate import upgrade
from turnstream.store.models import Conversation, User
from turnstream.store.workspace import FileChange, Limits, Workspace
from turnstream.store.workspace_sql import SqlFileStore


@dataclass
class Workspaces:
    files: SqlFileStore
    limits: Limits
    settings: Settings | None
    changes: list[FileChange] = field(default_factory=list)

    def context(self, cid: str, user_id: str = "alice", call: str = "call_1") -> ToolContext:
        """What a tool call of a run in conversation `cid` gets."""

        async def record(change: FileChange) -> None:
            self.changes.append(change)

        workspace = Workspace(self.files, cid, self.limits, on_change=record)
        return ToolContext(user_id, cid, "s1", call, workspace=workspace, settings=self.settings)


@contextlib.asynccontextmanager
async def workspaces(
    database_url: str,
    limits: Limits,
    settings: Settings | None = None,
    owners: dict[str, str] | None = None,
) -> AsyncIterator[Workspaces]:
    """Conversations (id -> owner; default c1 of alice's) and their workspaces."""
    owners = owners or {"c1": "alice"}
    await asyncio.to_thread(upgrade, database_url)
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    async with sessions() as db, db.begin():
        for user in sorted(set(owners.values())):
            db.add(User(id=user))
        await db.flush()
        for cid, user in owners.items():
            db.add(Conversation(id=cid, user_id=user))
    try:
        yield Workspaces(SqlFileStore(sessions), limits, settings)
    finally:
        await engine.dispose()
