"""One process of test_concurrent_append.py: append COUNT messages to one conversation.

    python append_worker.py DATABASE_URL REDIS_URL CID TAG COUNT BATCH

It connects, says it is ready (INCR `{CID}:ready` in Redis), waits for the
`{CID}:go` key so that every worker starts together, then appends the messages
`TAG-0` … `TAG-{COUNT-1}` in concurrent batches of BATCH. It prints one JSON
line: when its first and last appends ran, and the (id, sequence, content) of
each message as append returned it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from redis.asyncio import Redis

from turnstream.store.chats import ChatStore
from turnstream.store.db import create_engine, session_factory
from turnstream.store.views import NewMessage

# Run as a script, not under pytest: put tests/ on the path for the shared helpers.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import eventually


async def main(
    database_url: str, redis_url: str, cid: str, tag: str, count: int, batch: int
) -> None:
    engine = create_engine(database_url)
    redis = Redis.from_url(redis_url, decode_responses=True)
    store = ChatStore(session_factory(engine), redis, cache_ttl=3600)
    try:
        # Open the connections before the start, so the start measures appends only.
        async with engine.connect():
            pass
        await redis.incr(f"{cid}:ready")
        start = f"{cid}:go"
        await eventually(
            lambda: redis.exists(start), timeout=30, what=f"{tag}: {start}", interval=0.002
        )

        started = time.time()
        appended = []
        for first in range(0, count, batch):
            appended += await asyncio.gather(
                *(
                    store.append(
                        cid=cid,
                        message=NewMessage(role="user", content=f"{tag}-{i}", session_id=tag),
                    )
                    for i in range(first, min(first + batch, count))
                )
            )
        ended = time.time()
    finally:
        await redis.aclose()
        await engine.dispose()

    result = {
        "tag": tag,
        "started": started,
        "ended": ended,
        "messages": [[m.id, m.sequence, m.content] for m in appended],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    db_url, redis_url, cid, tag, count, batch = sys.argv[1:]
    asyncio.run(main(db_url, redis_url, cid, tag, int(count), int(batch)))
