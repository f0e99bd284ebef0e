"""The memory of a sandbox's processes together, which no per-process limit bounds.

The address-space limit bounds each process; a command that starts many
processes, each under it, could still take the machine's memory. While the
command runs, the memory of every process of its PID namespace is added up
(`resident_bytes`: private resident pages, as shared libraries would be counted
once per process otherwise), and past `TURNSTREAM_SANDBOX_TOTAL_MEMORY_BYTES`
the sandbox is killed. Cgroups would bound it in the kernel; they are not
there to use on every machine (containers, for one).
"""

from __future__ import annotations

import json
import os

PAGE = os.sysconf("SC_PAGE_SIZE")


def read_child_pid(fd: int) -> int | None:
    """bwrap's `--info-fd` report: the sandbox's PID 1, as this machine numbers it."""
    try:
        data = b""
        while chunk := os.read(fd, 4096):
            data += chunk
            try:
                info, _ = json.JSONDecoder().raw_decode(data.decode())
            except ValueError:
                continue
            return int(info["child-pid"])
        return None
    finally:
        os.close(fd)


def namespace_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def resident_bytes(namespace: str) -> int:
    """The private resident memory of every process in the PID namespace `namespace`."""
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{name}/ns/pid") != namespace:
                continue
            with open(f"/proc/{name}/statm") as statm:
                fields = statm.read().split()
        except OSError:  # ended meanwhile, or another user's
            continue
        total += (int(fields[1]) - int(fields[2])) * PAGE
    return total
