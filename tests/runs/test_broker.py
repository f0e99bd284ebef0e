"""The run queue when its Redis cannot be reached: the outage's own error, not taskiq's."""

from __future__ import annotations

import pytest
from helpers import free_port
from redis.exceptions import ConnectionError as RedisConnectionError

from turnstream.config import Settings
from turnstream.runs.broker import kick, make_broker


@pytest.mark.parametrize("cluster", [False, True], ids=["one-node", "cluster"])
async def test_a_kick_to_an_unreachable_queue_is_a_connection_error(tmp_path, cluster):
    """taskiq wraps it in SendTaskError, which the API would answer 500; a ConnectionError
    is answered 503 "Redis unavailable", as any other request meeting the outage."""
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        redis_cluster=cluster,
        data_dir=tmp_path,
        database_url=f"sqlite+aiosqlite:///{tmp_path}/ts.db",
    )
    broker = make_broker(settings, in_process=False)
    try:
        with pytest.raises(RedisConnectionError):
            await kick(broker, "c1", "conversation:alice:s1")
    finally:
        await broker.shutdown()
