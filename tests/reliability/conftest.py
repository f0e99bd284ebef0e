"""A production-shaped deployment for fault tests: API processes and workers as OS processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from servers import Process, RedisTarget, Server, create_token

GROUP = "turnstream-workers"  # the consumer group of turnstream.runs.broker


class Cluster:
    """`serve --no-worker` API processes and `turnstream worker`s sharing one Redis and database.

    Each process logs to its own file under the test's tmp_path; everything is
    stopped (SIGTERM, then SIGKILL) when the test ends.
    """

    def __init__(self, env: dict[str, str], logs: Path, redis: RedisTarget) -> None:
        self.env = env
        self.logs = logs
        self.redis = redis
        self.processes: list[Process] = []

    def api(self) -> Server:
        return self.apis(1)[0]

    def apis(self, count: int) -> list[Server]:
        """`count` API processes, started together: each takes seconds to start."""
        servers = []
        for _ in range(count):
            log = self.logs / f"api{len(self.processes)}.log"
            servers.append(Server(self.env, log, "--no-worker"))
            self.processes.append(servers[-1])
        for server in servers:
            server.wait_ready()
        return servers

    def worker(self, **env: str) -> Process:
        log = self.logs / f"worker{len(self.processes)}.log"
        process = Process(["worker"], {**self.env, **env}, log)
        self.processes.append(process)
        return process

    def token(self, user_id: str = "alice") -> dict[str, str]:
        """Bearer headers for a new token of `user_id`."""
        token = create_token(self.env["TURNSTREAM_DATABASE_URL"], user_id)
        return {"Authorization": f"Bearer {token}"}

    def pending(self) -> int:
        """Queue messages delivered to a worker and not acknowledged yet."""
        with self.redis.client() as r:
            return int(r.xpending(self.env["TURNSTREAM_QUEUE_NAME"], GROUP)["pending"])

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


@pytest.fixture
def cluster(tmp_path, app_redis, migrated_postgres_url) -> Iterator[Callable[..., Cluster]]:
    """`cluster(**env)` -> a deployment on Redis (one node, or a Redis Cluster: `app_redis`)
    and PostgreSQL, with no processes yet.

    The demo agent writes 120 words 40 ms apart (about 5 s); leases are short so
    that a lost worker is noticed in a few seconds. `env` overrides TURNSTREAM_* variables.
    """
    made: list[Cluster] = []

    def make(**env: str) -> Cluster:
        full = {
            **app_redis.env(),
            "TURNSTREAM_DATABASE_URL": migrated_postgres_url,
            "TURNSTREAM_DEMO_WORDS": "120",
            "TURNSTREAM_DEMO_DELAY_MS": "40",
            "TURNSTREAM_LEASE_SECONDS": "3",
            "TURNSTREAM_REAPER_INTERVAL": "0.5",
            "TURNSTREAM_QUEUE_NAME": f"turnstream:test:{tmp_path.name}",
            **env,
        }
        redis = RedisTarget(full["TURNSTREAM_REDIS_URL"], app_redis.cluster)
        made.append(Cluster(full, tmp_path, redis))
        return made[-1]

    try:
        yield make
    finally:
        for c in made:
            c.stop()
