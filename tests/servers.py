"""Real processes for tests: `serve`, `worker`, and a Redis or a Redis Cluster of a test's
own, on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis
from helpers import free_port, free_ports, wait_until
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


@dataclass(frozen=True)
class RedisTarget:
    """The Redis a test's app and processes run on: one node, or a Redis Cluster, which
    `url` names any node of (the client finds the others)."""

    url: str
    cluster: bool

    def env(self) -> dict[str, str]:
        """The TURNSTREAM_* variables that point a `serve` or `worker` at it."""
        return {
            "TURNSTREAM_REDIS_URL": self.url,
            "TURNSTREAM_REDIS_CLUSTER": "true" if self.cluster else "false",
        }

    def client(self) -> redis.Redis | redis.RedisCluster:
        """A blocking client, for a test to look at what the app wrote."""
        if self.cluster:
            return redis.RedisCluster.from_url(self.url, decode_responses=True)
        return redis.Redis.from_url(self.url, decode_responses=True)


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
        self.proc = _start_redis(self.binary, self.port, self.dir, aof=True, fsync=self.fsync)

    def stop(self) -> None:
        """A clean shutdown: the AOF is flushed, as with `systemctl restart redis`."""
        if self.proc is not None:
            _shut_down(self.port, self.proc)

    def kill(self) -> None:
        """SIGKILL: a crash."""
        assert self.proc is not None
        _kill(self.proc)


class RedisClusterNodes:
    """A Redis Cluster of `redis-server`s of a test's (or a pytest worker's) own, on loopback.

    `masters` masters with `replicas` replicas each, made with `redis-cli --cluster
    create`. With `aof`, each node keeps an AOF, and `stop()` then `start()` (or `kill()`
    then `start()`) is a restart of every node that keeps the data: what RedisServer is
    to one node. Each node's bus port (`cluster-port`) is a free port of its own, so
    nodes of several pytest workers never collide.
    """

    def __init__(
        self, binary: str, data_dir: Path, *, masters: int = 3, replicas: int = 0, aof: bool = False
    ) -> None:
        self.binary = binary
        self.dir = data_dir
        self.replicas = replicas
        self.aof = aof
        self.fsync = "everysec"
        nodes = masters * (1 + replicas)
        ports = free_ports(2 * nodes)
        self.ports = ports[:nodes]
        self.bus_ports = dict(zip(self.ports, ports[nodes:], strict=True))  # kept at a restart
        self.url = f"redis://127.0.0.1:{self.ports[0]}/0"
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self._created = False

    def start(self) -> None:
        """Start every node; the first time, make them a cluster. Waits for `cluster_state:ok`."""
        for port in self.ports:
            self.procs[port] = _start_redis(
                self.binary, port, self.dir / str(port), aof=self.aof, fsync=self.fsync,
                extra=["--cluster-enabled", "yes", "--cluster-port", str(self.bus_ports[port]),
                       "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
                       "--repl-diskless-sync-delay", "0"],
            )  # fmt: skip
        if not self._created:
            nodes = [f"127.0.0.1:{port}" for port in self.ports]
            create = ["redis-cli", "--cluster", "create", *nodes, "--cluster-yes"]
            create += ["--cluster-replicas", str(self.replicas)]
            made = subprocess.run(create, capture_output=True, text=True)
            assert made.returncode == 0, f"{' '.join(create)}:\n{made.stdout}{made.stderr}"
            self._created = True
        wait_until(self._state_ok, timeout=20, what=f"cluster_state:ok on {self.ports}")

    def _state_ok(self) -> bool:
        try:
            for port in self.ports:
                with redis.Redis(port=port, socket_timeout=1) as client:
                    if client.cluster("info")["cluster_state"] != "ok":
                        return False
        except redis.RedisError:
            return False
        return True

    def pid(self, port: int) -> int:
        return self.procs[port].pid

    def stop(self) -> None:
        """A clean shutdown of every node (the AOF flushed), as RedisServer.stop()."""
        for port, proc in self.procs.items():
            _shut_down(port, proc)

    def kill(self) -> None:
        """SIGKILL every node: a crash of the whole cluster."""
        for proc in self.procs.values():
            _kill(proc)


def _start_redis(
    binary: str, port: int, folder: Path, *, aof: bool, fsync: str, extra: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """A `redis-server` on 127.0.0.1:`port`, its files in `folder`, once it answers PING."""
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(folder),
            "--save", "",
            "--appendonly", "yes" if aof else "no",
            "--appendfsync", fsync,
            "--logfile", str(folder / "redis.log"),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_until(
            lambda: _answers(port), timeout=10, what=f"redis-server on port {port} to answer PING"
        )
    except AssertionError as exc:
        log = (folder / "redis.log").read_text()
        raise AssertionError(f"{exc}; its log:\n{log}") from None
    return proc


def _answers(port: int) -> bool:
    try:
        with redis.Redis(port=port, socket_timeout=1) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def _shut_down(port: int, proc: subprocess.Popen[bytes]) -> None:
    """SHUTDOWN, which flushes the AOF; SIGKILL if the server is still there 10 s later."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(redis.RedisError):
        # No retries: redis-py would retry the SHUTDOWN that closed its connection (4 s).
        with redis.Redis(port=port, socket_timeout=5, retry=Retry(NoBackoff(), 0)) as client:
            client.shutdown(nosave=True)  # nosave: no RDB; the AOF is flushed regardless
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        _kill(proc)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)
