"""The workspace tools: the agent lists, reads, writes, edits and deletes the conversation's files.

Turned on by the short name `workspace` in `TURNSTREAM_TOOLS`. Each tool gets
the run's workspace through its `ToolContext`, bound to the run's conversation
when the run started: no argument can name another conversation, and every
path goes through the same check as the HTTP routes (store/paths.py). A write
past a limit stores nothing and comes back to the model as an error result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from turnstream.agents.tools import ToolContext
from turnstream.store.workspace import Workspace

DEFAULT_LINES = 2000


def _workspace(ctx: ToolContext | None) -> Workspace:
    if ctx is None or ctx.workspace is None:
        raise RuntimeError("this run has no workspace")
    return ctx.workspace


async def list_files(path: str = ".", ctx: ToolContext | None = None) -> str:
    """List the files in the conversation's workspace, with their sizes and types.

    Args:
        path: a folder to list ("." for the whole workspace).
    """
    prefix = "" if path in ("", ".", "./") else path.removesuffix("/") + "/"
    listing = await _workspace(ctx).listing(prefix)
    if not listing.items:
        return "No files." if not prefix else f"No files under {prefix}"
    lines = [f"{i.path}\t{i.size} bytes\t{i.media_type}" for i in listing.items]
    return "\n".join([*lines, f"({listing.total} files, {listing.bytes} bytes)"])


async def read_file(
    path: str, offset: int = 1, limit: int = DEFAULT_LINES, ctx: ToolContext | None = None
) -> str:
    """Read a text file of the workspace, by lines.

    Args:
        path: the file's path, relative to the workspace, such as data.csv.
        offset: the first line to read (1 is the first line).
        limit: at most this many lines.
    """
    info, data = await _workspace(ctx).read(path)
    if b"\x00" in data[:8192]:
        return f"{path} is a binary file ({info.media_type}, {info.size} bytes): not shown as text."
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return f"{path} is not UTF-8 text ({info.media_type}, {info.size} bytes): not shown."
    lines = text.splitlines()
    first = max(offset, 1)
    chosen = lines[first - 1 : first - 1 + max(limit, 0)]
    body = "\n".join(chosen)
    last = first - 1 + len(chosen)
    if first > 1 or last < len(lines):
        body += f"\n[lines {first}-{last} of {len(lines)}; ask with offset for more]"
    return body if lines else f"{path} is empty."


async def write_file(path: str, content: str, ctx: ToolContext | None = None) -> str:
    """Create or replace a text file in the workspace; folders are made as needed.

    Args:
        path: the file's path, relative to the workspace, such as out/report.md.
        content: the whole new content of the file.
    """
    info = await _workspace(ctx).write(path, content.encode("utf-8"))
    return f"Wrote {info.path} ({info.size} bytes, version {info.version})."


async def edit_file(path: str, old: str, new: str, ctx: ToolContext | None = None) -> str:
    """Replace one exact piece of a text file with another.

    Args:
        path: the file's path, relative to the workspace.
        old: the exact text to replace; it must occur exactly once in the file.
        new: the text to put in its place.
    """
    workspace = _workspace(ctx)
    _, data = await workspace.read(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text; it cannot be edited") from None
    if not old:
        raise ValueError("`old` is empty: give the exact text to replace")
    count = text.count(old)
    if count != 1:
        where = "does not occur" if count == 0 else f"occurs {count} times"
        raise ValueError(f"`old` {where} in {path}; it must occur exactly once (add context)")
    info = await workspace.write(path, text.replace(old, new, 1).encode("utf-8"))
    return f"Edited {info.path} ({info.size} bytes, version {info.version})."


async def delete_file(path: str, ctx: ToolContext | None = None) -> str:
    """Delete a file of the workspace.

    Args:
        path: the file's path, relative to the workspace.
    """
    info = await _workspace(ctx).delete(path)
    return f"Deleted {info.path}."


TOOLS: list[Callable[..., Any]] = [list_files, read_file, write_file, edit_file, delete_file]
