"""What every benchmark needs: child processes, Redis, a `turnstream serve`, ports,
/proc readings, percentiles, RESP, machine info, wrk, and the results file.

The scripts beside this module import it as `from support import ...` (Python puts a
script's own folder first on `sys.path`). Every child runs in its own process group, so
stopping it takes its children too; `Proc.stop_all()` in a `finally` leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # bench the working tree, installed or not


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------- processes


class Proc:
    """A child in its own process group, its output in a log file."""

    live: list[Proc] = []

    def __init__(
        self, name: str, args: Sequence[str], log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            list(args),
            env={**os.environ, **(env or {})},
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        Proc.live.append(self)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        if not self._log.closed:
            self._log.close()
        if self in Proc.live:
            Proc.live.remove(self)

    def output(self, tail: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def rss_kb(self) -> int:
        return proc_rss_kb(self.pid)

    @classmethod
    def stop_all(cls) -> None:
        """The last started first: a server's clients go before it (the database last)."""
        for p in reversed(list(cls.live)):
            p.stop()


def wait_for(check: Any, timeout: float, what: str, proc: Proc | None = None) -> None:
    """Poll `check()` until it is true; a dead `proc` or the deadline raises."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.output()}")
        time.sleep(0.05)
    tail = f":\n{proc.output()}" if proc is not None else ""
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s{tail}")


def http_ok(port: int, path: str = "/health") -> bool:
    """True when GET `path` answers 200 (a raw socket: no client library to warm up)."""
    with socket.create_connection((HOST, port), 1) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        return s.recv(64).startswith(b"HTTP/1.1 200")


# ------------------------------------------------------------------------- services


def apt_binary(name: str, package: str) -> str:
    """The path of a Debian tool, installed with apt-get when missing."""
    found = shutil.which(name)
    if found:
        return found
    log(f"{name} missing: apt-get install -y {package}")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True)
    return shutil.which(name) or f"/usr/bin/{name}"


def start_redis(workdir: Path, *extra: str) -> tuple[Proc, str]:
    """A throwaway redis-server on a free loopback port, without persistence."""
    port = free_port()
    args = [
        apt_binary("redis-server", "redis-server"),
        *("--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"),
        *("--dir", str(workdir), "--maxclients", "20000", "--daemonize", "no"),
        *("--loglevel", "warning", *extra),
    ]
    proc = Proc("redis", args, workdir / f"redis-{port}.log")

    def pong() -> bool:
        with socket.create_connection((HOST, port), 0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")

    wait_for(pong, 15, "redis-server", proc)
    return proc, f"redis://{HOST}:{port}/0"


def start_postgres(work: Path) -> str:
    """A throwaway PostgreSQL (fsync off, as in the tests), run as the `postgres` user."""
    bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    data, sock = work / "pg" / "data", work / "pg" / "sock"
    sock.mkdir(parents=True)
    work.chmod(0o755)  # the postgres user must reach it
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_pg:
        shutil.chown(work / "pg", "postgres")
        shutil.chown(sock, "postgres")
    initdb = [*as_pg, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
    subprocess.run([*initdb, "--no-sync"], check=True, capture_output=True, cwd="/")
    port = free_port()
    options = ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-k", str(sock)]
    proc = Proc("postgres", [*as_pg, str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                             *options], work / "postgres.log")  # fmt: skip
    wait_for(lambda: b"ready to accept" in proc.log_path.read_bytes(), 30, "postgres", proc)
    return f"postgresql+asyncpg://postgres@{HOST}:{port}/postgres"


async def create_conversations(port: int, token: str, n: int) -> list[str]:
    """`n` conversations of the token's user, through the API, 16 requests at a time."""
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", limits=limits) as client:
        sem = asyncio.Semaphore(16)

        async def one(_i: int) -> str:
            async with sem:
                r = await client.post("/api/v1/conversations", headers=headers)
                r.raise_for_status()
                return str(r.json()["id"])

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def bare_taskiq_worker(work: Path, env: dict[str, str], broker: str, concurrency: str) -> Proc:
    """A bare `taskiq worker` of `broker` ("module:attribute"), started as turnstream's
    worker runs: one process, acknowledging a task once it has run."""
    args = [
        *(sys.executable, "-m", "taskiq", "worker", broker),
        *("--workers", "1", "--ack-type", "when_executed", "--max-async-tasks", concurrency),
        "--wait-tasks-timeout=5",
    ]
    return Proc("bare-worker", args, work / "bare-worker.log", env)


def taskiq_listening(proc: Proc) -> Callable[[], bool]:
    """Whether a `taskiq worker` process has started listening, from its log."""
    return lambda: b"Listening started" in proc.log_path.read_bytes()


def turnstream_env(workdir: Path, redis_url: str, **settings: str) -> dict[str, str]:
    """Environment for a turnstream process on this Redis and a SQLite file in `workdir`."""
    return {
        "TURNSTREAM_REDIS_URL": redis_url,
        "TURNSTREAM_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/turnstream.db",
        "TURNSTREAM_DATA_DIR": str(workdir / "data"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "bench")]),
        **{f"TURNSTREAM_{k.upper()}": v for k, v in settings.items()},
    }


def turnstream(workdir: Path, env: dict[str, str], *args: str, name: str = "turnstream") -> Proc:
    """`python -m turnstream ARGS` as a child, logging to `workdir/NAME.log`."""
    cmd = [sys.executable, "-m", "turnstream", *args]
    return Proc(name, cmd, workdir / f"{name}.log", env)


def serve(workdir: Path, env: dict[str, str], *args: str, name: str = "serve") -> tuple[Proc, int]:
    """`turnstream serve` on a free port, once /health answers."""
    port = free_port()
    proc = turnstream(
        workdir, env, "serve", "--port", str(port), "--log-level", "warning", *args, name=name
    )
    wait_for(lambda: http_ok(port), 60, name, proc)
    return proc, port


def create_token(env: dict[str, str], user: str = "bench") -> str:
    """A bearer token for `user`, made by `turnstream token create` (migrates SQLite)."""
    out = subprocess.run(
        [sys.executable, "-m", "turnstream", "token", "create", user],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


# ------------------------------------------------------------------------- /proc


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def proc_rss_kb(pid: int) -> int:
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, summed over all cores."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]  # idle + iowait
    total = sum(parts[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


# ------------------------------------------------------------------------- numbers


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-quantile (0..1, nearest rank) of `values`."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values: Iterable[float]) -> dict[str, float | int | None]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": percentile(ordered, 0.50),
        "p95": percentile(ordered, 0.95),
        "p99": percentile(ordered, 0.99),
        "max": ordered[-1] if ordered else None,
    }


def rounded(values: dict[str, Any]) -> dict[str, Any]:
    """Floats to 2 decimals (a summary's figures, say)."""
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in values.items()}


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def resp(*args: str | bytes | int) -> bytes:
    """One Redis command in RESP, for pipelines too large for a client library's overhead."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


# ------------------------------------------------------------------------- wrk

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
_LAT = re.compile(r"^\s+(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def wrk(
    url: str, *, connections: int, seconds: float, headers: dict[str, str] | None = None
) -> dict[str, float]:
    """Drive `url` with wrk (one thread: it takes little CPU); req/s and latency in ms."""
    cmd = [apt_binary("wrk", "wrk"), "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if rps is None:
        raise RuntimeError(f"wrk gave no figures:\n{out}")
    result = {"rps": float(rps.group(1)), "non_2xx": float(errors.group(1)) if errors else 0.0}
    for pct, value, unit in _LAT.findall(out):
        result[f"p{pct}_ms"] = float(value) * _UNITS[unit]
    return result


# ------------------------------------------------------------------------- reporting


def machine_info() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "sse-starlette",
                 "redis", "hiredis", "taskiq", "taskiq-redis", "sqlalchemy"):  # fmt: skip
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    git = {"cwd": ROOT, "capture_output": True, "text": True, "check": False}
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], **git).stdout.strip()  # type: ignore[call-overload]
    dirty = subprocess.run(["git", "status", "--porcelain", "turnstream"], **git).stdout  # type: ignore[call-overload]
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
        "versions": versions,
        "commit": head + ("+dirty" if dirty.strip() else ""),
        "note": "2 shared cores: compare ratios measured in the same run, not absolute figures",
    }


def fmt(value: Any, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A plain text table, columns as wide as their widest cell."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def write_results(name: str, doc: dict[str, Any]) -> Path:
    """bench/results/NAME.json, with the machine it ran on."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine_info(), **doc}, indent=2, default=str) + "\n")
    log(f"wrote {path.relative_to(ROOT)}")
    return path
