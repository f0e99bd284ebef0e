"""A call's copy of the workspace on disk: written before the command, read back after it.

The directory is the sandbox's to change in any way: it may leave symbolic
links (to `/etc/passwd`, to another workspace), hard links, pipes, devices,
folders it made unreadable, names no workspace path allows. Reading it back
follows no link, opens nothing but regular files, and checks every name with
the same rule as the routes (store/paths.py); what is not a file it may keep
is listed with the reason, never stored. It is read only once every process of
the sandbox has ended, so nothing changes under the reader.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from turnstream.errors import InvalidPath, WorkspaceFull
from turnstream.sandbox.bwrap import WORKSPACE, Identity, write_identity_files
from turnstream.store.paths import check_path
from turnstream.store.workspace import Limits


@dataclass
class Harvest:
    files: dict[str, bytes] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why not stored)


def prepare(call_dir: Path, files: Mapping[str, bytes], identity: Identity) -> None:
    """Write the workspace's files (their paths were checked when stored) for the sandbox."""
    write_identity_files(call_dir)
    root = call_dir / WORKSPACE
    root.mkdir()
    for path, data in files.items():
        target = root / check_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    if identity.switches:  # root runs bwrap as the call's own user: it must own its copy
        os.chown(call_dir, identity.uid, identity.gid)
        for entry in [root, *root.rglob("*")]:
            os.chown(entry, identity.uid, identity.gid, follow_symlinks=False)


def measure(call_dir: Path, limits: Limits) -> str | None:
    """Which workspace limit the copy has passed while the command runs, if any."""
    count = size = 0
    for _, _, info in _entries(call_dir / WORKSPACE):
        count += 1
        size += info.st_blocks * 512 if stat.S_ISREG(info.st_mode) else 0
        if count > limits.files:
            return f"more than {limits.files:,} files (TURNSTREAM_WORKSPACE_FILES)"
        if size > limits.total_bytes:
            return f"more than {limits.total_bytes:,} bytes (TURNSTREAM_WORKSPACE_BYTES)"
    return None


def harvest(call_dir: Path, limits: Limits) -> Harvest:
    """The regular files the command left, by workspace path; the rest, with the reason."""
    found = Harvest()
    total = 0
    for path, entry, info in _entries(call_dir / WORKSPACE):
        why = _not_a_file(path, info, limits)
        if why is not None:
            found.skipped.append((path, why))
            continue
        if len(found.files) == limits.files or total + info.st_size > limits.total_bytes:
            raise WorkspaceFull(
                "The command left more files or bytes than a workspace holds",
                limit=limits.files if len(found.files) == limits.files else limits.total_bytes,
                setting="TURNSTREAM_WORKSPACE_FILES or TURNSTREAM_WORKSPACE_BYTES",
            )
        found.files[path] = _read(entry)
        total += len(found.files[path])
    return found


def _not_a_file(path: str, info: os.stat_result, limits: Limits) -> str | None:
    if stat.S_ISLNK(info.st_mode):
        return "a symbolic link: links are not kept"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    try:
        check_path(path)
    except InvalidPath as exc:
        return str(exc)
    if info.st_size > limits.file_bytes:
        return f"larger than {limits.file_bytes:,} bytes (TURNSTREAM_WORKSPACE_FILE_BYTES)"
    return None


def _entries(root: Path) -> Iterator[tuple[str, os.DirEntry[str], os.stat_result]]:
    """Every entry under `root` but folders, by relative path; links are listed, not followed."""
    folders = [(root, "")]
    while folders:
        folder, prefix = folders.pop()
        _unlock(folder)
        with os.scandir(folder) as listing:
            for entry in listing:
                info = entry.stat(follow_symlinks=False)
                path = prefix + entry.name
                if stat.S_ISDIR(info.st_mode):
                    folders.append((Path(entry.path), path + "/"))
                else:
                    yield path, entry, info


def _read(entry: os.DirEntry[str]) -> bytes:
    """The file's bytes, opened without following a link and only if it is a regular file."""
    _unlock(Path(entry.path))
    fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise OSError(f"{entry.path} is no longer a regular file")
        return file.read()


def _unlock(path: Path) -> None:
    """Not root: the command may have taken its own permissions away; its owner gives them back."""
    if os.getuid() != 0:
        mode = os.lstat(path).st_mode
        if not stat.S_ISLNK(mode):
            os.chmod(path, stat.S_IMODE(mode) | stat.S_IRWXU)


def remove(call_dir: Path) -> None:
    """Remove the call's directory, whatever the command left in it (links are not followed)."""
    if os.getuid() != 0 and (call_dir / WORKSPACE).is_dir():
        for _ in _entries(call_dir / WORKSPACE):
            pass  # unlocks every folder on the way
    shutil.rmtree(call_dir)
