"""The sandbox runner against real bubblewrap: who the command runs as, what it sees of its
environment, the limits it gets, and what turnstream does past one (tests/security/
test_sandbox.py has the escapes people try)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest

from turnstream.config import Settings
from turnstream.sandbox.bwrap import SandboxUnavailable
from turnstream.sandbox.run import Outcome, probe, run_command


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, workspace_files=50, sandbox_timeout_seconds=10)


async def run(settings: Settings, command: str, files: dict[str, bytes] | None = None,
              wall: float = 10.0) -> Outcome:  # fmt: skip
    return await run_command(settings, command, files or {}, wall_seconds=wall)


async def test_a_command_runs_on_a_copy_of_the_workspace_and_its_changes_come_back(
    settings: Settings,
) -> None:
    files = {"data.csv": b"a,b\n1,2\n", "old/notes.txt": b"bye"}
    script = "python3 -c 'print(6*7)'; wc -l < data.csv; rm -r old; mkdir -p out; echo hi > out/x"

    outcome = await run(settings, script, files)

    assert (outcome.exit_code, outcome.limit) == (0, None)
    assert outcome.stdout == b"42\n2\n"
    assert outcome.harvest is not None
    assert outcome.harvest.files == {"data.csv": b"a,b\n1,2\n", "out/x": b"hi\n"}


async def test_the_command_runs_unprivileged_with_a_small_fixed_environment(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TURNSTREAM_CANARY", "worker-secret")

    outcome = await run(settings, "id; grep CapEff /proc/self/status; env | sort; pwd")

    lines = outcome.stdout.decode().splitlines()
    assert lines[0] == "uid=65534(sandbox) gid=65534(sandbox) groups=65534(sandbox)"
    assert lines[1].split() == ["CapEff:", "0000000000000000"]
    names = {line.split("=")[0] for line in lines[2:-1]}
    assert names == {"HOME", "LANG", "PATH", "PWD", "SHLVL", "TMPDIR", "USER", "_"}
    assert "HOME=/workspace" in lines and "TMPDIR=/tmp" in lines
    assert lines[-1] == "/workspace"
    assert b"worker-secret" not in outcome.stdout


async def test_every_limit_is_set_from_the_settings(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        sandbox_cpu_seconds=7,
        sandbox_memory_bytes=512 * 1024 * 1024,
        sandbox_file_bytes=2 * 1024 * 1024,
        sandbox_open_files=100,
        sandbox_processes=20,
    )

    outcome = await run(settings, "ulimit -t -v -f -n -u -c; ulimit -H -t -v -f -n -u")

    values = [line.rsplit(" ", 1)[-1] for line in outcome.stdout.decode().splitlines()]
    soft = ["7", "524288", "2048", "100", "20", "0"]  # and no core files
    assert values == [*soft, *soft[:5]]  # the hard limits too: the command cannot raise them


async def test_a_limit_that_cannot_be_applied_runs_nothing(tmp_path: Path) -> None:
    # Past the kernel's nr_open: no process may have this many open files, so `ulimit` fails.
    settings = Settings(data_dir=tmp_path, sandbox_open_files=1 << 30)

    with pytest.raises(SandboxUnavailable, match="limits could not be applied, so nothing"):
        await run(settings, "echo ran > ran.txt; echo ran")


async def test_past_the_wall_time_the_sandbox_is_killed_and_nothing_is_kept(
    settings: Settings,
) -> None:
    started = time.monotonic()

    outcome = await run(settings, "echo partial > p.txt; echo started; sleep 601", wall=1.0)

    assert time.monotonic() - started < 3
    assert outcome.exit_code is None
    assert outcome.limit == "the wall time of 1 s (TURNSTREAM_SANDBOX_TIMEOUT_SECONDS)"
    assert outcome.stdout == b"started\n"
    assert outcome.harvest is None  # killed: the workspace stays as it was
    assert _processes("sleep 601") == []


async def test_a_stop_kills_the_running_command_within_a_second(settings: Settings) -> None:
    call = asyncio.create_task(run(settings, "sleep 602 & sleep 602"))
    await asyncio.sleep(0.5)
    assert len(_processes("^sleep 602")) == 2

    stopped = time.monotonic()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call

    assert time.monotonic() - stopped < 1.0
    assert _processes("sleep 602") == []


async def test_without_bubblewrap_nothing_runs(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")

    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        await run(settings, "true")
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        await asyncio.to_thread(probe, settings)


def test_the_probe_passes_where_bubblewrap_works(settings: Settings) -> None:
    probe(settings)


def _processes(pattern: str) -> list[str]:
    """This machine's processes whose command line matches (bwrap's holds the command too)."""
    found = subprocess.run(["pgrep", "-a", "-f", pattern], capture_output=True)
    return found.stdout.decode().splitlines()
