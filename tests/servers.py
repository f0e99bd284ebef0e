"""Real processes for tests: `serve`, `worker` and a Redis of a test's own, on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import redis
from helpers import free_port, wait_until
from redis.backoff import NoBackoff
from redis.retry import Retry

from turnstream.store import users
from turnstream.store.db import create_engine, session_factory


class Process:
    """A child process in its own process group, so a kill takes its children too."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "turnstream", *args],
            env={**os.environ, **env},
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 15) -> None:
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(5)
        self._log_file.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class Server(Process):
    """`turnstream serve` on a free port; `with Server(...) as server:` waits until it is ready."""

    def __init__(self, env: dict[str, str], log: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            ["serve", "--port", str(self.port), "--log-level", "warning", *extra], env, log
        )

    def wait_ready(self, timeout: float = 30) -> None:
        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.output()}")
            try:
                return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_until(healthy, timeout=timeout, what=f"{self.url}/health to answer 200")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the server's log:\n{self.output()}") from None

    def __enter__(self) -> Server:
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self


def create_token(database_url: str, user_id: str) -> str:
    async def make() -> str:
        engine = create_engine(database_url)
        try:
            async with session_factory(engine)() as db:
                return await users.create_token(db, user_id=user_id)
        finally:
            await engine.dispose()

    return asyncio.run(make())


class RedisServer:
    """A `redis-server` of the test's own, with AOF on, that a test may stop and start again.

    Needs the binary scripts/test finds (TURNSTREAM_TEST_REDIS_SERVER).
    """

    def __init__(self, binary: str, data_dir: Path) -> None:
        self.binary = binary
        self.dir = data_dir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.fsync = "everysec"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.dir),
                "--save", "",
                "--appendonly", "yes",
                "--appendfsync", self.fsync,
                "--logfile", str(self.dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

        def answers() -> bool:
            try:
                with redis.Redis(port=self.port, socket_timeout=1) as client:
                    return bool(client.ping())
            except redis.RedisError:
                return False

        try:
            wait_until(answers, timeout=10, what=f"redis-server on port {self.port} to answer PING")
        except AssertionError as exc:
            log = (self.dir / "redis.log").read_text()
            raise AssertionError(f"{exc}; its log:\n{log}") from None

    def stop(self) -> None:
        """A clean shutdown: the AOF is flushed, as with `systemctl restart redis`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(redis.RedisError):
            # No retries: redis-py would retry the SHUTDOWN that closed its connection (4 s).
            with redis.Redis(
                port=self.port, socket_timeout=5, retry=Retry(NoBackoff(), 0)
            ) as client:
                client.shutdown(nosave=True)  # nosave: no RDB; the AOF is flushed regardless
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
