"""The escapes people try from the bash tool's sandbox, against real bubblewrap.

Each ends in an error or an empty result for the model, with the host untouched:
secrets of the host (files, the database, Redis's files, the worker's
environment, another conversation's files), writes outside /workspace and /tmp,
links that lead out of the workspace (never followed when the files are read
back, by `read_file` or by the download route), the kernel's ways out (mount,
unshare, ptrace, chroot), the bombs (fork, memory, CPU, disk, files, output),
processes left behind, and the network. tests/reliability/test_sandbox_load.py
has a bomb beside another run's stream.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sse import parse_sse
from workspace_support import Workspaces, workspaces

from turnstream.agents.sandbox_tools import bash
from turnstream.agents.workspace_tools import read_file
from turnstream.config import Settings
from turnstream.errors import FileNotFound
from turnstream.store.workspace import Limits

CANARY = "canary-7f3a9c"
HOG = "python3 -c 'import time; a = bytearray(300 * 1024**2); time.sleep(8)'"


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Secrets where a worker keeps them: an env variable, the database, Redis's AOF."""
    monkeypatch.setenv("TURNSTREAM_OPENAI_API_KEY", CANARY)
    data = tmp_path / "data"
    data.mkdir()
    (data / "turnstream.db").write_text(CANARY)
    (data / "appendonly.aof").write_text(CANARY)
    return data


@pytest.fixture
async def spaces(sqlite_url: str, host: Path) -> AsyncIterator[Workspaces]:
    settings = Settings(
        data_dir=host,
        sandbox_timeout_seconds=10,
        sandbox_processes=32,
        sandbox_total_memory_bytes=512 * 1024 * 1024,
        workspace_files=100,
    )
    owners = {"c1": "alice", "c2": "bob"}
    async with workspaces(sqlite_url, Limits.of(settings), settings, owners) as made:
        bob = made.context("c2", "bob").workspace
        assert bob is not None
        await bob.write("bobs-secret.txt", CANARY.encode())
        made.changes.clear()
        yield made


async def sh(spaces: Workspaces, command: str, cid: str = "c1", **args: Any) -> dict[str, Any]:
    context = spaces.context(cid, "alice" if cid == "c1" else "bob")
    result: dict[str, Any] = json.loads(await bash(command, ctx=context, **args))
    return result


def shown(result: dict[str, Any]) -> str:
    return json.dumps(result)


async def test_host_secrets_are_not_there_to_read(spaces: Workspaces, host: Path) -> None:
    database, aof = host / "turnstream.db", host / "appendonly.aof"
    reads = [
        "cat /etc/shadow",
        f"cat {database} {aof}",
        f"ls {host} {Path.home()} /root /home",
        "cat /proc/1/environ /proc/self/environ; env",
        "cat /proc/*/environ",
        "grep -rs canary /etc /tmp /workspace",
    ]
    result = await sh(spaces, "; ".join(reads))

    assert result["limit"] is None  # every read ran to its end
    assert CANARY not in shown(result)
    assert "No such file or directory" in result["stderr"]
    # Only the sandbox's own user is named; the host's accounts are not listed.
    passwd = await sh(spaces, "cat /etc/passwd")
    assert passwd["stdout"] == "sandbox:x:65534:65534:sandbox:/workspace:/bin/bash\n"


async def test_turnstreams_code_and_the_repository_are_not_there(spaces: Workspaces) -> None:
    import turnstream

    code = Path(turnstream.__file__).parent
    result = await sh(spaces, f"ls {code} {Path.cwd()}; python3 -c 'import turnstream'")

    assert result["exitCode"] != 0
    assert "ModuleNotFoundError" in result["stderr"]


async def test_another_conversations_files_are_nowhere(spaces: Workspaces) -> None:
    # Bob's call holds his copy on disk while Alice's looks for it everywhere it could be.
    bobs = asyncio.create_task(sh(spaces, "sleep 1.5; cat bobs-secret.txt", cid="c2"))
    await asyncio.sleep(0.3)
    search = "find / -path /proc -prune -o -path /usr -prune -o -print 2>/dev/null; ls /proc"

    alice = await sh(spaces, search)

    assert "bobs-secret" not in alice["stdout"] and "turnstream-sandbox" not in alice["stdout"]
    assert CANARY not in shown(alice)
    assert (await bobs)["stdout"] == CANARY  # it was there for Bob, all along


async def test_nothing_outside_the_workspace_and_tmp_can_be_written(spaces: Workspaces) -> None:
    places = ["/etc/x", "/x", "/usr/x", "/usr/bin/x", "/dev/x", "/opt/x", "/workspace/../x"]
    writes = "; ".join(f"echo x > {p}" for p in places)

    result = await sh(spaces, f"{writes}; echo ok > /tmp/t && cat /tmp/t")

    assert result["stdout"] == "ok\n"
    refusals = result["stderr"].splitlines()
    assert len(refusals) == len(places)
    assert all(r.endswith(("Read-only file system", "No such file or directory")) for r in refusals)
    assert result["files"] == []  # /tmp is not kept


async def test_links_out_of_the_workspace_are_never_followed(spaces: Workspaces) -> None:
    links = (
        "ln -s /etc/passwd passwd; ln -s / root; ln -s ../../ up; "
        "ln -s /tmp/turnstream-sandbox-x/workspace/bobs-secret.txt bob; "
        "mkdir d; ln -s /etc d/etc; ln /etc/passwd hard; echo in > a; ln a hard-a"
    )
    result = await sh(spaces, links)

    assert "Invalid cross-device link" in result["stderr"]  # no hard link to the host's files
    skipped = {entry["path"] for entry in result["notStored"]}
    assert skipped == {"passwd", "root", "up", "bob", "d/etc"}
    assert result["files"] == [
        {"path": "a", "change": "written"},
        {"path": "hard-a", "change": "written"},  # a plain copy of the file it shares
    ]
    ctx = spaces.context("c1")
    for name in ("passwd", "root/etc/passwd", "d/etc/passwd", "bob"):
        with pytest.raises(FileNotFound):
            await read_file(name, ctx=ctx)


async def test_the_download_route_serves_no_link(api) -> None:
    async with api(tools="sandbox") as (http, headers, _):
        cid = (await http.post("/api/v1/conversations", headers=headers)).json()["id"]
        command = {"command": "ln -s /etc/passwd passwd; ln -s / root; echo fine > ok.txt"}
        sent = await http.post(
            f"/api/v1/conversations/{cid}/message/",
            data={"content": f"/tool bash {json.dumps(command)}"},
            headers=headers,
        )
        (result,) = [e.data for e in parse_sse(sent.text) if e.event == "tool_result"]
        assert "passwd" in result["content"] and result["isError"] is False

        base = f"/api/v1/conversations/{cid}/files"
        listing = (await http.get(base, headers=headers)).json()
        assert [item["path"] for item in listing["items"]] == ["ok.txt"]
        for path in ("passwd", "root/etc/passwd"):
            assert (await http.get(f"{base}/{path}", headers=headers)).status_code == 404


async def test_the_kernels_ways_out_are_closed(spaces: Workspaces) -> None:
    ptrace = (
        "import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); "
        f"print(libc.ptrace(16, {os.getpid()}, 0, 0), os.strerror(ctypes.get_errno()))"
    )
    attempts = [
        "mount -t tmpfs none /workspace",
        "unshare --user --map-root-user true",
        "unshare --net true",
        "/usr/sbin/chroot / true",
        f"python3 -c '{ptrace}'",  # the worker's own process: not in the sandbox's PID space
        "ls /proc/self/root/ | tr '\\n' ' '",
    ]
    result = await sh(spaces, "; ".join(f"{a}; echo rc=$?" for a in attempts))

    codes = [line for line in result["stdout"].splitlines() if line.startswith("rc=")]
    assert codes[:4] == ["rc=32", "rc=1", "rc=1", "rc=125"]
    assert "-1 No such process" in result["stdout"]
    assert "bin dev etc lib lib64 proc sbin tmp usr workspace" in result["stdout"]


@pytest.mark.parametrize(
    ("bomb", "what"),
    [
        (":(){ :|:& };: ; sleep 2", "Resource temporarily unavailable"),  # fork bomb
        ("python3 -c 'a = bytearray(8 * 1024**3)'", "MemoryError"),  # memory bomb
        ("head -c 10G /dev/zero > big", "File size limit exceeded"),  # a 10 GB file
    ],
)
async def test_a_bomb_meets_a_limit(spaces: Workspaces, bomb: str, what: str) -> None:
    result = await sh(spaces, f"{bomb} # bomb-631")

    assert what in result["stderr"]
    assert not any(f["path"] == "big" for f in result.get("files", []))
    assert _processes("bomb-631") == []  # not one process of it is left


@pytest.mark.parametrize(
    ("command", "limit"),
    [
        ("while :; do :; done", "the wall time of 1 s"),
        ("for i in $(seq 100000); do : > f$i; done; sleep 5", "more than 100 files"),
        ("head -c 1G /dev/zero", "bytes of output (TURNSTREAM_SANDBOX_OUTPUT_BYTES)"),
        # Many processes, each within its address space: together past the total.
        (f"for i in 1 2 3 4; do {HOG} & done; wait", "bytes of memory in all"),
    ],
)
async def test_past_a_watched_limit_the_command_is_killed(
    spaces: Workspaces, command: str, limit: str
) -> None:
    result = await sh(spaces, command, timeout=1 if "while" in command else None)

    assert result["exitCode"] is None and limit in result["limit"]
    assert "files" not in result and spaces.changes == []
    assert len(result["stdout"]) <= spaces.settings.tool_output_chars  # type: ignore[union-attr]


async def test_a_process_left_running_is_killed_when_the_command_returns(
    spaces: Workspaces,
) -> None:
    result = await sh(spaces, "(setsid sleep 613 &); nohup sleep 613 >/dev/null 2>&1 & echo back")

    assert result["stdout"] == "back\n"
    assert _processes("sleep 613") == []


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback listener, the kind of service a worker's machine runs (the API's port too)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        yield server


async def test_there_is_no_network(spaces: Workspaces, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    python = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)"
    tries = [
        f"echo hi > /dev/tcp/127.0.0.1/{port}",
        f'python3 -c "{python}"',
        "ls /sys/class/net 2>/dev/null; cat /proc/net/dev | tail -n +3 | cut -d: -f1",
    ]

    result = await sh(spaces, "; ".join(tries))

    assert result["stderr"].count("Connection refused") >= 2  # the sandbox's own empty loopback
    assert result["stdout"].split() == ["lo"]  # no interface but an unconfigured loopback
    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing ever reached the host's listener


def _processes(pattern: str) -> list[str]:
    found = subprocess.run(["pgrep", "-a", "-f", pattern], capture_output=True)
    return found.stdout.decode().splitlines()
