"""Run one command in a sandbox on a copy of the workspace, and say what came of it.

    run_command   copy the files in, run `bash -c command` under bubblewrap within
                  the limits, read back what the command left (files.py)
    probe         `serve` and `worker` start only if a sandbox can be made here

Three limits are watched from here: the wall time, the output (stdout and
stderr together) and the workspace's size while the command writes it. Past
one, the sandbox is killed (bwrap, whose death kills the sandbox's PID 1, which
takes its PID namespace with it) and nothing is read back: the workspace stays as it was.
The kernel applies the others (CPU time, address space, file size, open files,
processes); a command stopped by one of those ends on its own, and what it
left is read back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import tempfile
from asyncio import FIRST_COMPLETED
from asyncio.subprocess import Process
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from turnstream.config import Settings
from turnstream.errors import WorkspaceFull
from turnstream.sandbox import files, memory
from turnstream.sandbox.bwrap import SandboxUnavailable, call_identity, command_line
from turnstream.store.workspace import Limits

WATCH_SECONDS = 0.25  # how often the workspace's size is measured while the command runs
PROBE_SECONDS = 10.0
READ_CHUNK = 64 * 1024


@dataclass
class Outcome:
    exit_code: int | None  # None: killed by turnstream (see `limit`)
    stdout: bytes
    stderr: bytes
    limit: str | None = None  # the limit that stopped the command, as a sentence
    harvest: files.Harvest | None = None  # None: killed, nothing read back
    harvest_error: str | None = None  # why nothing was read back although it ended


@dataclass
class _Call:
    settings: Settings
    budget: int  # output bytes
    out: dict[str, bytearray] = field(default_factory=dict)
    seen: int = 0
    limit: str | None = None
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self, why: str) -> None:
        if self.limit is None:
            self.limit = why
        self.stopped.set()


async def run_command(
    settings: Settings, command: str, workspace: Mapping[str, bytes], *, wall_seconds: float
) -> Outcome:
    """Run `command` on a copy of `workspace` (path → bytes) within the settings' limits."""
    identity = call_identity()
    call_dir = Path(tempfile.mkdtemp(prefix="turnstream-sandbox-"))
    try:
        await asyncio.to_thread(files.prepare, call_dir, workspace, identity)
        (report, report_w), (info, info_w) = os.pipe(), os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *command_line(
                    settings,
                    call_dir,
                    command,
                    identity=identity,  # root runs bwrap as the call's own user
                    report_fd=report_w,
                    info_fd=info_w,
                ),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={},  # the sandbox reads its processes' environments in /proc
                pass_fds=(report_w, info_w),
                start_new_session=True,
            )
        finally:
            os.close(report_w)
            os.close(info_w)
        outcome = await _supervise(settings, proc, call_dir, (report, info), wall_seconds)
        if outcome.exit_code is not None:
            limits = Limits.of(settings)
            try:
                outcome.harvest = await asyncio.to_thread(files.harvest, call_dir, limits)
            except WorkspaceFull as exc:
                outcome.harvest_error = str(exc)
        return outcome
    finally:
        await asyncio.shield(asyncio.to_thread(files.remove, call_dir))


async def _supervise(
    settings: Settings, proc: Process, call_dir: Path, fds: tuple[int, int], wall_seconds: float
) -> Outcome:
    """Wait for the command and its output; kill it past a limit, or when cancelled (a stop)."""
    report, info = fds
    call = _Call(settings, settings.sandbox_output_bytes)
    readers = [asyncio.create_task(_read(call, proc.stdout, "stdout")),
               asyncio.create_task(_read(call, proc.stderr, "stderr"))]  # fmt: skip
    watcher = asyncio.create_task(_watch(call, call_dir, info))
    reported = asyncio.create_task(asyncio.to_thread(_read_report, report))
    ended = asyncio.create_task(proc.wait())
    try:
        stopped = asyncio.create_task(call.stopped.wait())
        await asyncio.wait({ended, stopped}, timeout=wall_seconds, return_when=FIRST_COMPLETED)
        stopped.cancel()
        if not ended.done():
            setting = "TURNSTREAM_SANDBOX_TIMEOUT_SECONDS"
            call.stop(f"the wall time of {wall_seconds:g} s ({setting})")
    finally:
        _kill(proc)  # past a limit, or cancelled; a no-op once it has ended
        watcher.cancel()
        # The readers drain the pipes to their end: a pipe left full would keep the
        # process from being reported as ended.
        await asyncio.gather(ended, *readers, watcher, return_exceptions=True)
    if call.limit is None and not await reported:
        stderr = bytes(call.out.get("stderr", b"")).decode(errors="replace").strip()
        raise SandboxUnavailable(
            f"the sandbox's limits could not be applied, so nothing was run: {stderr[-300:]}"
        )
    killed = call.limit is not None
    return Outcome(
        exit_code=None if killed else proc.returncode,
        stdout=bytes(call.out.get("stdout", b"")),
        stderr=bytes(call.out.get("stderr", b"")),
        limit=call.limit,
    )


def _read_report(fd: int) -> bool:
    """True once the sandbox said its limits hold (it writes before the command starts)."""
    try:
        return os.read(fd, 64) == b"limits\n"
    finally:
        os.close(fd)


async def _read(call: _Call, stream: asyncio.StreamReader | None, name: str) -> None:
    """Keep the output up to the budget; past it, stop the command and drop the rest."""
    assert stream is not None
    kept = call.out.setdefault(name, bytearray())
    while chunk := await stream.read(READ_CHUNK):
        room = max(call.budget - call.seen, 0)
        kept += chunk[:room]
        call.seen += len(chunk)
        if call.seen > call.budget:
            setting = "TURNSTREAM_SANDBOX_OUTPUT_BYTES"
            call.stop(f"more than {call.budget:,} bytes of output ({setting})")


async def _watch(call: _Call, call_dir: Path, info: int) -> None:
    """Measure the workspace copy and the processes' memory while the command runs; stop it
    past a limit."""
    limits = Limits.of(call.settings)
    pid = await asyncio.to_thread(memory.read_child_pid, info)
    namespace = memory.namespace_of(pid) if pid is not None else None
    most = call.settings.sandbox_total_memory_bytes
    while True:
        await asyncio.sleep(WATCH_SECONDS)
        passed = await asyncio.to_thread(files.measure, call_dir, limits)
        if passed is not None:
            return call.stop(f"the workspace holding {passed}")
        if namespace and await asyncio.to_thread(memory.resident_bytes, namespace) > most:
            setting = "TURNSTREAM_SANDBOX_TOTAL_MEMORY_BYTES"
            return call.stop(f"more than {most:,} bytes of memory in all ({setting})")


def _kill(proc: Process) -> None:
    """Kill bwrap: its child, the sandbox's PID 1, dies with it (--die-with-parent), and the
    kernel kills the rest of the sandbox with its PID 1."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def probe(settings: Settings) -> None:
    """Run `true` in a sandbox; SandboxUnavailable naming the cause and the fix if it fails."""
    try:
        outcome = asyncio.run(run_command(settings, "true", {}, wall_seconds=PROBE_SECONDS))
    except OSError as exc:
        raise SandboxUnavailable(f"bubblewrap could not be started: {exc}") from None
    if outcome.exit_code != 0:
        why = (outcome.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
        raise SandboxUnavailable(
            f"bubblewrap cannot make its sandbox here ({why}); in a container, allow user "
            "namespaces (docs/sandbox.md, Containers)"
        )
