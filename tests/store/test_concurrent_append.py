"""The foundation acceptance test: two OS processes append to one conversation at once.

Each process (append_worker.py) appends 200 messages in concurrent batches of
10; both wait on a start signal in Redis so that they really overlap. No
message may be lost and the sequences must be exactly 0..399. Runs on a SQLite
file (WAL) and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from pathlib import Path

from helpers import eventually
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from turnstream.store.chats import ChatStore
from turnstream.store.views import ConversationView

WORKER = Path(__file__).with_name("append_worker.py")
TAGS = ("A", "B")
PER_PROCESS = 200
BATCH = 10


async def test_two_processes_appending_to_one_conversation_lose_nothing(
    database_url: str,
    redis_url: str,
    redis: Redis,
    store: ChatStore,
    sessions: async_sessionmaker[AsyncSession],
    conversation: ConversationView,
) -> None:
    cid = conversation.id
    if database_url.startswith("sqlite"):
        async with sessions() as db:
            mode = (await db.execute(text("PRAGMA journal_mode"))).scalar_one()
        assert mode.lower() == "wal"
    await store.load(cid=cid)  # cached: both processes also race to patch the cached copy

    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            database_url,
            redis_url,
            cid,
            tag,
            str(PER_PROCESS),
            str(BATCH),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for tag in TAGS
    ]
    try:
        # Both processes are up and connected: start them together.
        async def all_ready() -> bool:
            exited = [p.returncode for p in procs if p.returncode is not None]
            assert not exited, f"a worker exited before the start: {exited}"
            return int(await redis.get(f"{cid}:ready") or 0) >= len(TAGS)

        await eventually(all_ready, timeout=30, what="the workers to get ready", interval=0.01)
        await redis.set(f"{cid}:go", "1")
        outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 60)
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()

    results = {}
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
        result = json.loads(out.decode().strip().splitlines()[-1])
        results[result["tag"]] = result

    # The two processes really ran at the same time.
    assert max(r["started"] for r in results.values()) < min(r["ended"] for r in results.values())

    stored = await store.messages(cid=cid, limit=10 * PER_PROCESS)
    assert len(stored) == len(TAGS) * PER_PROCESS
    assert [m.sequence for m in stored] == list(range(len(TAGS) * PER_PROCESS))
    assert len({m.id for m in stored}) == len(stored)
    for tag in TAGS:
        mine = [m.content for m in stored if m.session_id == tag]
        assert sorted(mine) == sorted(f"{tag}-{i}" for i in range(PER_PROCESS))
        # Each process's batches are in order: batch n was appended after batch n-1.
        batches = [int(c.split("-")[1]) // BATCH for c in mine]
        assert batches == sorted(batches)
    # What each append returned is what the database holds.
    by_id = {m.id: (m.sequence, m.content) for m in stored}
    for result in results.values():
        assert len(result["messages"]) == PER_PROCESS
        for mid, sequence, content in result["messages"]:
            assert by_id[mid] == (sequence, content)
    # And the appends interleaved rather than running one process after the other.
    tags_in_order = [m.session_id for m in stored]
    switches = sum(a != b for a, b in itertools.pairwise(tags_in_order))
    assert switches > 1

    # The cache, patched or invalidated by both processes, agrees with the database.
    loaded = await store.load(cid=cid)
    assert loaded is not None
    assert [(m.id, m.sequence) for m in loaded.messages] == [(m.id, m.sequence) for m in stored]
    assert loaded.version == len(stored)
