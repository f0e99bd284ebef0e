"""The terminal side of `turnstream chat`: lines typed on stdin, and what goes on screen.

`Lines` reads stdin from the event loop (`add_reader`), so that the chat can
watch the keyboard for `/stop` while a reply streams. stdin is a terminal in
its usual line mode, where each read returns a whole line, or a pipe.
`Screen` writes a reply's text as it comes, and notes, tool steps and workspace
files on lines of their own.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable
from types import TracebackType
from typing import Any, TextIO

from turnstream.client import ApprovalRequest, Event, FileChange, FileEntry, FileList, Message

# How a reply that did not complete ends on screen, by its `end` status.
_ENDINGS = {"cancelled": "[reply stopped]", "error": "[reply failed]"}


class Lines:
    """The lines typed on stdin, without their line ends; None once stdin has ended."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        # A terminal echoes what is typed, and is read while a reply streams.
        self.interactive = os.isatty(fd)
        self.ended = False
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._buffer = b""
        self._loop = asyncio.get_running_loop()

    def __enter__(self) -> Lines:
        try:
            self._loop.add_reader(self.fd, self._read)
        except PermissionError:  # a regular file, which epoll cannot watch: read it all now
            while not self.ended:
                self._read()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.ended:
            self._loop.remove_reader(self.fd)

    async def get(self) -> str | None:
        if self.ended and self._queue.empty():
            return None
        return await self._queue.get()

    def _read(self) -> None:
        try:
            chunk = os.read(self.fd, 4096)
        except OSError:  # the terminal went away
            chunk = b""
        if not chunk:  # Ctrl-D, or the end of a pipe
            self.ended = True
            self._loop.remove_reader(self.fd)
            if self._buffer:  # a last line without its line end
                self._put(self._buffer)
            self._queue.put_nowait(None)  # for a get() that waits already
            return
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self._put(line)

    def _put(self, line: bytes) -> None:
        self._queue.put_nowait(line.decode(errors="replace").rstrip("\r"))


class Screen:
    """stdout, keeping track of whether the cursor is at the start of a line."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.at_line_start = True

    def text(self, text: str) -> None:
        if text:
            self._write(text)
            self.at_line_start = text.endswith("\n")

    def note(self, text: str) -> None:
        """`text` on a line of its own."""
        self.end_line()
        self._write(text + "\n")

    def end_line(self) -> None:
        if not self.at_line_start:
            self._write("\n")
        self.at_line_start = True

    def prompt(self, text: str) -> None:
        if not self.at_line_start:
            self._write("\n")
        self._write(text)
        self.at_line_start = False

    def typed(self, line: str, *, echoed: bool) -> None:
        """A line was read. A terminal has echoed it, its Enter included; a pipe has not."""
        if echoed:
            self.at_line_start = True
        else:
            self.text(line + "\n")

    def event(self, event: Event) -> None:
        """One run event. queued, start, reasoning and usage show nothing."""
        if event.type == "delta":
            self.text(event.text)
        elif event.type == "tool_call":
            self.note(f"[tool call] {event.data.get('name')}({event.data.get('arguments')})")
        elif event.type == "tool_result":
            label = "tool error" if event.data.get("isError") else "tool result"
            self.note(f"[{label}] {event.data.get('content')}")
        elif event.approval is not None:
            decision = event.approval
            reason = f": {decision.reason}" if decision.reason else ""
            self.note("[approved]" if decision.approved else f"[denied{reason}]")
        elif event.type == "file":
            self.file(event.file)
        elif event.type == "error":
            self.note(f"[error] {event.data.get('message')}")
        elif event.type == "end":
            ending = _ENDINGS.get(str(event.data.get("status")))
            if ending is not None:
                self.note(ending)
            else:
                self.end_line()

    def file(self, change: FileChange | None) -> None:
        """A workspace file the run wrote (its path, size and signed link), or deleted."""
        if change is None:
            return
        if change.deleted:
            self.note(f"[file] deleted {change.path}")
        else:
            self.note(f"[file] {described(change.path, change.size, change.url)}")

    def uploaded(self, entries: Iterable[FileEntry]) -> None:
        for entry in entries:
            self.note(f"[uploaded] {described(entry.path, entry.size, entry.url)}")

    def files(self, listing: FileList) -> None:
        """The workspace: how many files and bytes, then one line a file."""
        if not listing.items:
            self.note("[no files]")
            return
        count = f"{listing.total} file" + ("" if listing.total == 1 else "s")
        self.note(f"[{count}, {size(listing.bytes)}]")
        for entry in listing.items:
            self.note(f"  {described(entry.path, entry.size, entry.url)}")

    def message(self, message: Message) -> None:
        """A stored message, drawn as its run's events were (a stored file has no link)."""
        if message.role == "user":
            self.note(f"you> {message.content or ''}")
            self._stored_files(message.files, "uploaded")
            return
        if message.role == "tool":
            label = "tool result" if message.status == "complete" else "tool error"
            self.note(f"[{label}] {message.content}")
            return
        self.text(message.content or "")
        for call in message.tool_calls or ():
            function = call.get("function") or {}
            self.note(f"[tool call] {function.get('name')}({function.get('arguments')})")
        self._stored_files(message.files, "file")
        ending = _ENDINGS.get(message.status)
        if ending is not None:
            self.note(ending)
        else:
            self.end_line()

    def _stored_files(self, files: list[dict[str, Any]] | None, label: str) -> None:
        for entry in files or ():
            if entry.get("deleted"):
                self.note(f"[{label}] deleted {entry.get('path')}")
            else:
                self.note(f"[{label}] {described(str(entry.get('path')), entry.get('size'))}")

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


def question(request: ApprovalRequest) -> str:
    """`Approve calculator {"expression": "6*7"}? [y/N] `: the call as the model wrote it,
    but a bash call as its command (`Approve bash "rm -r out"? [y/N] `), which is what
    the user judges."""
    shown = request.arguments
    try:
        arguments = json.loads(request.arguments)
    except ValueError:
        arguments = None
    if request.name == "bash" and isinstance(arguments, dict):
        command = arguments.get("command")
        if isinstance(command, str):
            shown = json.dumps(command, ensure_ascii=False)
    return f"Approve {request.name} {shown}? [y/N] "


def described(path: str, nbytes: object, url: str | None = None) -> str:
    """`out/report.md (1.2 KiB) http://…`: a file's path, size and link (if it has one)."""
    text = f"{path} ({size(nbytes)})" if isinstance(nbytes, int) else path
    return f"{text} {url}" if url else text


def size(n: int) -> str:
    if n < 1024:
        return f"{n} byte" + ("" if n == 1 else "s")
    value = n / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
