"""Real turnstream processes for tests: `serve` and `worker` as OS processes on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from helpers import free_port

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


class Server(Process):
    def __init__(self, env: dict[str, str], log: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            ["serve", "--port", str(self.port), "--log-level", "warning", *extra], env, log
        )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.output()}")


def create_token(database_url: str, user_id: str) -> str:
    async def make() -> str:
        engine = create_engine(database_url)
        try:
            async with session_factory(engine)() as db:
                return await users.create_token(db, user_id=user_id)
        finally:
            await engine.dispose()

    return asyncio.run(make())
