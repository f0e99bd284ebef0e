"""`ChatSession`: one `turnstream chat`, from its first request to Ctrl-C (see chat.py).

It runs in asyncio: a reply streams in one task while the keyboard is read in
another, so that `/stop` can be typed while the reply is on screen.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import sys
from collections.abc import AsyncGenerator
from typing import TextIO

from turnstream.cli.chat_terminal import Lines, Screen
from turnstream.client import ApiError, AsyncClient, ClientError, ConnectionFailed, Event

HELP = (
    "[/upload PATH… stores files in the conversation, /files lists them, /stop stops a reply, "
    "Ctrl-C detaches (the reply goes on), /quit or Ctrl-D ends]"
)
UPLOAD = "/upload"
NOT_NOW = "[a reply is streaming: wait for its end, or /stop it]"
QUIT = ("/quit", "/exit")
LAST_MESSAGES = 50  # --resume shows the last exchange: the newest question and what followed


class Detached(Exception):
    """The chat ends while a reply streams (/quit or Ctrl-D then): it goes on without us."""


class ChatSession:
    """One `turnstream chat`: the conversation, the keyboard, the screen."""

    def __init__(self, url: str, token: str, out: TextIO) -> None:
        self.url = url
        self.token = token
        self.screen = Screen(out)
        self.cid: str | None = None
        self.streaming = False  # a reply is on screen now (stays set if Ctrl-C ends it)

    async def run(self, resume: str | None) -> None:
        async with AsyncClient(self.url, self.token) as client:
            self.client = client
            if resume is None:
                self.cid = (await client.create_conversation()).id
            else:
                self.cid = resume
                await client.get_conversation(resume)  # 403 here: not a conversation of yours
            self.screen.note(f"[conversation {self.cid}] {HELP}")
            with Lines(sys.stdin.fileno()) as self.lines:
                if resume is not None:
                    await self.pick_up()
                await self.loop()

    async def loop(self) -> None:
        while True:
            self.screen.prompt("you> ")
            line = await self.lines.get()
            if line is None:  # Ctrl-D: the terminal echoes no line end
                self.screen.end_line()
                return
            self.screen.typed(line, echoed=self.lines.interactive)
            if line.strip() in QUIT:
                return
            await self.handle(line.strip())

    async def handle(self, text: str) -> None:
        if not text:
            return
        if text == "/stop":
            await self.stop()
        elif text == "/help":
            self.screen.note(HELP)
        elif text == "/files":
            await self.list_files()
        elif text.split(maxsplit=1)[0] == UPLOAD:
            await self.upload(text[len(UPLOAD) :])
        else:
            await self.follow(self.client.send(self._cid, text))

    async def upload(self, args: str) -> None:
        """`/upload PATH [PATH…]`: store the files (all, or none) and say where they are."""
        try:
            paths = _paths(args)
        except ValueError as exc:  # an unclosed quote
            self.screen.note(f"[upload failed: {exc}]")
            return
        if not paths:
            self.screen.note("[upload what? /upload PATH [PATH…]]")
            return
        try:
            stored = await self.client.upload(self._cid, *paths)
        except OSError as exc:  # a file here that cannot be read
            self.screen.note(f"[upload failed: {exc.strerror or exc}: {exc.filename}]")
        except ClientError as exc:
            self.screen.note(f"[upload failed: {_one_line(exc)}]")
        else:
            self.screen.uploaded(stored)

    async def list_files(self) -> None:
        try:
            listing = await self.client.files(self._cid)
        except ClientError as exc:
            self.screen.note(f"[files: {_one_line(exc)}]")
        else:
            self.screen.files(listing)

    async def pick_up(self) -> None:
        """Follow the conversation's running reply from its start, or show the last exchange."""
        active = await self.client.active_session(self._cid)
        if active is not None and active.is_active:
            self.screen.note("[a reply is running: picking it up]")
            await self.follow(self.client.resume(self._cid, active.session_id))
            return
        messages = await self.client.messages(self._cid, limit=LAST_MESSAGES)
        questions = [i for i, message in enumerate(messages) if message.role == "user"]
        if not messages:
            self.screen.note("[no messages yet]")
        for message in messages[questions[-1] if questions else 0 :]:
            self.screen.message(message)

    async def follow(self, events: AsyncGenerator[Event, None]) -> None:
        """Show a run's events until `end`, reading the keyboard meanwhile (for /stop)."""
        self.streaming = True
        reply = asyncio.create_task(self._show(events))
        line: asyncio.Task[str | None] | None = None
        try:
            # From a pipe, the next lines wait for this reply's end.
            while not reply.done() and self.lines.interactive:
                line = asyncio.create_task(self.lines.get())
                await asyncio.wait({reply, line}, return_when=asyncio.FIRST_COMPLETED)
                if line.done():
                    await self._typed_while_streaming(line.result())
            await asyncio.wait({reply})
            self.streaming = False
            reply.result()
        except ClientError as exc:
            self.screen.note(f"[{exc}]")
        finally:
            for task in (reply, line):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    async def _show(self, events: AsyncGenerator[Event, None]) -> None:
        async with contextlib.aclosing(events):
            async for event in events:
                self.screen.event(event)

    async def _typed_while_streaming(self, line: str | None) -> None:
        if line is None or line.strip() in QUIT:
            raise Detached
        self.screen.typed(line, echoed=True)
        text = line.strip()
        if text == "/stop":
            await self.stop()
        elif text:
            self.screen.note(NOT_NOW)

    async def stop(self) -> None:
        try:
            result = await self.client.stop(self._cid)
        except ApiError as exc:
            self.screen.note(f"[nothing stopped: {exc.error or exc.detail or exc}]")
            return
        except ConnectionFailed as exc:
            self.screen.note(f"[{exc}]")
            return
        if result.status == "stopping":
            self.screen.note("[stopping: the reply ends in a moment]")
        elif not self.streaming:  # a stream shows its own end
            self.screen.note("[reply stopped]")

    def detach(self) -> None:
        """After Ctrl-C: the run goes on without us; say how to come back."""
        if self.cid is None:
            self.screen.end_line()
        elif self.streaming:
            self.screen.note(
                "[detached: the reply goes on. Pick it up with: "
                f"turnstream chat --resume {self.cid}]"
            )
        else:
            self.screen.note(f"[bye. Go on with: turnstream chat --resume {self.cid}]")

    @property
    def _cid(self) -> str:
        assert self.cid is not None, "the conversation is set before the first message"
        return self.cid


def _paths(args: str) -> list[str]:
    """The paths of `/upload`'s arguments: split as a shell would, `~` expanded."""
    return [os.path.expanduser(path) for path in shlex.split(args)]


def _one_line(exc: ClientError) -> str:
    """A refusal as the server put it (`error: detail`), on one line."""
    if isinstance(exc, ApiError) and (exc.error or exc.detail):
        text = ": ".join(part for part in (exc.error, exc.detail) if part)
    else:
        text = str(exc)
    return " ".join(text.split())
