"""The workspace tools, called as the tool loop calls them: with a ToolContext holding the
run's workspace (SQLite here; tests/store/test_workspace.py has the store on both databases)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from workspace_support import Workspaces, workspaces

from turnstream.agents.tools import ToolContext, load_tools
from turnstream.agents.workspace_tools import (
    delete_file,
    edit_file,
    list_files,
    read_file,
    write_file,
)
from turnstream.errors import FileNotFound, InvalidPath, WorkspaceFull
from turnstream.store.workspace import FileChange, Limits

LIMITS = Limits(file_bytes=1000, total_bytes=5000, files=10)


@pytest.fixture
async def spaces(sqlite_url: str) -> AsyncIterator[Workspaces]:
    async with workspaces(sqlite_url, LIMITS) as made:
        yield made


@pytest.fixture
def changes(spaces: Workspaces) -> list[FileChange]:
    """What the workspace reported, as the run turns it into `file` events."""
    return spaces.changes


@pytest.fixture
def ctx(spaces: Workspaces) -> ToolContext:
    return spaces.context("c1")


def test_the_short_names_turn_on_the_tool_sets() -> None:
    assert list(load_tools("basic")) == ["clock", "calculator", "echo"]
    assert list(load_tools("workspace")) == [
        "list_files",
        "read_file",
        "write_file",
        "edit_file",
        "delete_file",
    ]
    assert list(load_tools("basic,workspace"))[:4] == ["clock", "calculator", "echo", "list_files"]
    # The workspace comes from the context, never from the model's arguments.
    schema = load_tools("workspace")["read_file"].parameters
    assert set(schema["properties"]) == {"path", "offset", "limit"}


async def test_write_list_read_and_delete(ctx, changes) -> None:
    assert await list_files(ctx=ctx) == "No files."
    assert await write_file("out/report.md", "# hi\n", ctx=ctx) == (
        "Wrote out/report.md (5 bytes, version 1)."
    )
    await write_file("data.csv", "a,b\n1,2\n", ctx=ctx)
    listing = await list_files(ctx=ctx)
    assert listing.splitlines() == [
        "data.csv\t8 bytes\ttext/csv",
        "out/report.md\t5 bytes\ttext/markdown",
        "(2 files, 13 bytes)",
    ]
    assert (await list_files("out", ctx=ctx)).splitlines()[
        0
    ] == "out/report.md\t5 bytes\ttext/markdown"
    assert await list_files("nothing/here", ctx=ctx) == "No files under nothing/here/"
    assert await read_file("out/report.md", ctx=ctx) == "# hi"
    assert await delete_file("out/report.md", ctx=ctx) == "Deleted out/report.md."
    with pytest.raises(FileNotFound):
        await read_file("out/report.md", ctx=ctx)
    assert [(c.info.path, c.deleted) for c in changes] == [
        ("out/report.md", False),
        ("data.csv", False),
        ("out/report.md", True),
    ]


async def test_read_file_pages_by_lines_and_says_so(ctx) -> None:
    await write_file("lines.txt", "\n".join(f"line {i}" for i in range(1, 11)), ctx=ctx)
    assert await read_file("lines.txt", offset=3, limit=2, ctx=ctx) == (
        "line 3\nline 4\n[lines 3-4 of 10; ask with offset for more]"
    )
    whole = await read_file("lines.txt", ctx=ctx)
    assert whole.splitlines()[-1] == "line 10" and "[lines" not in whole
    await write_file("empty.txt", "", ctx=ctx)
    assert await read_file("empty.txt", ctx=ctx) == "empty.txt is empty."


async def test_read_file_does_not_dump_binary_bytes(ctx) -> None:
    await ctx.workspace.write("pic.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png")
    assert await read_file("pic.png", ctx=ctx) == (
        "pic.png is a binary file (image/png, 16 bytes): not shown as text."
    )
    await ctx.workspace.write("latin1.txt", "café".encode("latin-1"))
    assert "not UTF-8 text" in await read_file("latin1.txt", ctx=ctx)


async def test_edit_file_replaces_one_exact_unique_piece(ctx) -> None:
    await write_file("a.py", "x = 1\ny = 1\n", ctx=ctx)
    assert (
        await edit_file("a.py", "x = 1", "x = 2", ctx=ctx) == "Edited a.py (12 bytes, version 2)."
    )
    assert await read_file("a.py", ctx=ctx) == "x = 2\ny = 1"
    with pytest.raises(ValueError, match="does not occur"):
        await edit_file("a.py", "z = 3", "", ctx=ctx)
    with pytest.raises(ValueError, match="occurs 2 times"):
        await edit_file("a.py", " = ", " := ", ctx=ctx)
    with pytest.raises(ValueError, match="empty"):
        await edit_file("a.py", "", "x", ctx=ctx)
    assert await read_file("a.py", ctx=ctx) == "x = 2\ny = 1"  # a refused edit changes nothing


async def test_bad_paths_and_limits_come_back_as_errors_and_store_nothing(ctx, changes) -> None:
    for path in ("../x", "/etc/passwd", "~/.ssh/id_rsa", "a/../b", "a\\b"):
        with pytest.raises(InvalidPath):
            await write_file(path, "x", ctx=ctx)
    with pytest.raises(WorkspaceFull):
        await write_file("big.txt", "x" * 1001, ctx=ctx)
    assert await list_files(ctx=ctx) == "No files."
    assert changes == []


async def test_a_tool_without_a_workspace_says_so() -> None:
    bare = ToolContext("alice", "c1", "s1", "call_1")
    with pytest.raises(RuntimeError, match="no workspace"):
        await list_files(ctx=bare)
