"""`ChatSession`: one `turnstream chat`, from its first request to Ctrl-C (see chat.py).

It runs in asyncio: a reply streams in one task while the keyboard is read in
another, so that `/stop` can be typed while the reply is on screen. A call that
waits for the user's approval (`approval_request`) is asked about in a third
task, one call at a time, so that the stream is still read meanwhile: an
`approval` event for the call asked about (another tab decided it, or a replay
of one decided long ago) takes the question back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import sys
from collections.abc import AsyncGenerator
from typing import TextIO

from turnstream.cli.chat_terminal import Lines, Screen, question
from turnstream.client import (
    ApiError,
    ApprovalDecided,
    ApprovalRequest,
    AsyncClient,
    ClientError,
    ConnectionFailed,
    Event,
)

HELP = (
    "[/upload PATH… stores files in the conversation, /files lists them, /stop stops a reply, "
    "Ctrl-C detaches (the reply goes on), /quit or Ctrl-D ends]"
)
UPLOAD = "/upload"
NOT_NOW = "[a reply is streaming: wait for its end, or /stop it]"
QUIT = ("/quit", "/exit")
YES = ("y", "yes")
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
        self.pending: dict[str, ApprovalRequest] = {}  # the calls to ask about, in order
        self.asker: asyncio.Task[None] | None = None  # asks about them, one at a time
        self.asking: str | None = None  # the approval id of the question on screen
        self.answer: asyncio.Future[str | None] | None = None  # the line typed for it

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
            self.pending.clear()
            for task in (reply, line, self.asker):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    async def _show(self, events: AsyncGenerator[Event, None]) -> None:
        async with contextlib.aclosing(events):
            async for event in events:
                if event.approval is not None:
                    self._decided(event.approval.approval_id)
                self.screen.event(event)
                if event.approval_request is not None:
                    self.pending[event.approval_request.approval_id] = event.approval_request
                    self._keep_asking()
                if event.type == "end":
                    self.pending.clear()
                    self._decided(self.asking)

    def _keep_asking(self) -> None:
        if self.pending and (self.asker is None or self.asker.done()):
            self.asker = asyncio.create_task(self._ask_all())

    def _decided(self, approval_id: str | None) -> None:
        """No need to ask about this call any more: take its question back if it is shown."""
        if approval_id is None:
            return
        self.pending.pop(approval_id, None)
        if self.asking == approval_id and self.asker is not None:
            self.asker.cancel()
            self.asker.add_done_callback(lambda _: self._keep_asking())

    async def _ask_all(self) -> None:
        while self.pending:
            request = next(iter(self.pending.values()))
            self.screen.prompt(question(request))
            self.asking = request.approval_id
            try:
                line = await self._answer()
            finally:
                self.asking = self.answer = None
            self.pending.pop(request.approval_id, None)
            await self._decide(request, (line or "").strip().lower() in YES)

    async def _answer(self) -> str | None:
        """The line typed: from the keyboard task while a reply streams on a terminal;
        read here from a pipe, where no such task runs. None (the input ended) is a no."""
        if self.lines.interactive:
            self.answer = asyncio.get_running_loop().create_future()
            return await self.answer
        line = await self.lines.get()
        if line is not None:
            self.screen.typed(line, echoed=False)
        return line

    async def _decide(self, request: ApprovalRequest, approved: bool) -> None:
        try:
            if approved:
                await self.client.approve(self._cid, request.approval_id)
            else:
                await self.client.deny(self._cid, request.approval_id)
        except ApprovalDecided as exc:
            if exc.approved is None:
                self.screen.note("[not decided: the run no longer waits]")
            else:
                self.screen.note(f"[decided already: {'approved' if exc.approved else 'denied'}]")
        except ClientError as exc:
            self.screen.note(f"[decision not sent: {_one_line(exc)}]")

    async def _typed_while_streaming(self, line: str | None) -> None:
        if line is None or line.strip() in QUIT:
            raise Detached
        self.screen.typed(line, echoed=True)
        text = line.strip()
        if text == "/stop":
            await self.stop()
        elif self.answer is not None and not self.answer.done():
            self.answer.set_result(text)
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
