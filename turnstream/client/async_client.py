"""`AsyncClient`: the asyncio client, on httpx.AsyncClient.

The mirror image of `sync_client.py`, method for method: the requests and
their answers are `calls.py`'s, the streams' decisions `follow.py`'s; this
module only sends and awaits.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator
from types import TracebackType
from typing import Any, TypeVar

import httpx

from turnstream.client import calls
from turnstream.client.calls import Upload
from turnstream.client.errors import ConnectionFailed
from turnstream.client.follow import Follow, Retry
from turnstream.client.models import (
    ActiveSession,
    ApprovalResult,
    Conversation,
    ConversationPage,
    Event,
    FileEntry,
    FileList,
    Message,
    StopResult,
    TaskStatus,
)

T = TypeVar("T")


class AsyncClient:
    """A turnstream server's API, for one user.

    `base_url` is the server's root (`http://localhost:8000`), `token` a bearer
    token (`ts_…`, or a JWT). A stream that breaks is resumed from the last
    event received, up to `retry.attempts` failures in a row. `transport` is
    passed to httpx (tests use it to break connections).

        async with AsyncClient("http://localhost:8000", token) as client:
            cid = (await client.create_conversation()).id
            async for event in client.send(cid, "hello"):
                print(event.text, end="", flush=True)

    Leave a stream early inside `contextlib.aclosing(client.send(…))`, so that
    its connection closes at once rather than when the generator is collected.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: httpx.Timeout | float = calls.DEFAULT_TIMEOUT,
        retry: Retry | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retry = retry or Retry()
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=calls.headers(token), timeout=timeout, transport=transport
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- conversations and messages -------------------------------------------------

    async def create_conversation(
        self, title: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Conversation:
        return await self._call(calls.create_conversation(title, metadata))

    async def list_conversations(self, limit: int = 20, offset: int = 0) -> ConversationPage:
        return await self._call(calls.list_conversations(limit, offset))

    async def get_conversation(self, cid: str) -> Conversation:
        """The conversation with all its messages."""
        return await self._call(calls.get_conversation(cid))

    async def rename_conversation(self, cid: str, title: str) -> Conversation:
        return await self._call(calls.rename_conversation(cid, title))

    async def delete_conversation(self, cid: str) -> None:
        """Stops its running run, then deletes it with its messages and runs."""
        await self._call(calls.delete_conversation(cid))

    async def messages(
        self, cid: str, limit: int = 100, before: int | None = None
    ) -> list[Message]:
        """The newest `limit` messages (with a sequence below `before`), oldest first."""
        return await self._call(calls.messages(cid, limit, before))

    # -- runs -------------------------------------------------------------------------

    def send(
        self,
        cid: str,
        content: str,
        *,
        multitask: str = "reject",
        idempotency_key: str | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Send a message and yield its run's events, from `queued` to `end`.

        A dropped connection is resumed from the last event received, so each
        event comes once and in order. Nothing is sent until the first `anext()`.
        Leaving the loop early closes the connection; the run goes on.
        `multitask` is reject, interrupt or enqueue (docs/protocol.md, "Multitask").
        """
        key = idempotency_key or str(uuid.uuid4())
        opening = calls.message_opening(cid, content, multitask, key)
        return self._follow(Follow(self.retry, self._base_url, cid=cid, opening=opening))

    def regenerate(
        self, cid: str, *, multitask: str = "reject", idempotency_key: str | None = None
    ) -> AsyncGenerator[Event, None]:
        """Answer the last user message again; the events as `send` yields them."""
        opening = calls.regenerate_opening(cid, multitask, idempotency_key or str(uuid.uuid4()))
        return self._follow(Follow(self.retry, self._base_url, cid=cid, opening=opening))

    def resume(self, cid: str, session_id: str, cursor: str = "0-0") -> AsyncGenerator[Event, None]:
        """The run's events after `cursor` (the last id you received; "0-0": all), until `end`."""
        return self._follow(
            Follow(self.retry, self._base_url, cid=cid, session_id=session_id, cursor=cursor)
        )

    async def active_session(self, cid: str) -> ActiveSession | None:
        """The conversation's newest run, or None when none is kept (load the messages)."""
        return await self._call(calls.active_session(cid))

    async def task_status(self, cid: str) -> TaskStatus | None:
        """Whether the newest run is busy and until when; None when no run is kept."""
        return await self._call(calls.task_status(cid))

    async def stop(self, cid: str, session_id: str | None = None) -> StopResult:
        """Stop the newest run (or `session_id`); waits until it has ended, within the
        server's stop wait. Nothing running: `ApiError` 404; it ended otherwise first: 409."""
        return await self._call(calls.stop(cid, session_id))

    async def approve(self, cid: str, approval_id: str) -> ApprovalResult:
        """Let the call an `approval_request` named run (docs/approvals.md). The same
        decision again is fine; decided the other way first, or the run stopped meanwhile:
        `ApprovalDecided` (409); no such approval, or it expired: `ApprovalNotFound` (404)."""
        return await self._call(calls.decide(cid, approval_id, True, ""))

    async def deny(self, cid: str, approval_id: str, reason: str = "") -> ApprovalResult:
        """Refuse the call: the model reads "Not run: the user denied this call (`reason`)."
        and goes on. Errors as `approve`'s."""
        return await self._call(calls.decide(cid, approval_id, False, reason))

    # -- the workspace ----------------------------------------------------------------

    async def upload(self, cid: str, *files: Upload, path: str | None = None) -> list[FileEntry]:
        """Store files in the conversation's workspace: all of them, or (`WorkspaceFull`,
        `InvalidPath`) none. A file is a path on disk, or `(name, bytes or a binary file
        object[, media type])`. Each goes under its name, or under `path` (one file), or
        in the folder `path` (several). An existing file is replaced (its version + 1)."""
        return await self._call(calls.upload(self._base_url, cid, files, path))

    async def files(self, cid: str, prefix: str = "") -> FileList:
        """The workspace's files, sorted by path; those under `prefix` (`out/`) if given."""
        return await self._call(calls.files(self._base_url, cid, prefix))

    async def download(self, cid: str, path: str) -> bytes:
        """The file's bytes (`FileNotFound` if there is none)."""
        return await self._call(calls.download(cid, path))

    async def delete_file(self, cid: str, path: str) -> None:
        """Delete the file (`FileNotFound` if there is none)."""
        await self._call(calls.delete_file(cid, path))

    # -- I/O ----------------------------------------------------------------------------

    @property
    def _base_url(self) -> str:
        return str(self._http.base_url)

    async def _call(self, call: calls.Call[T]) -> T:
        try:
            response = await self._http.request(
                call.method,
                call.path,
                params=call.params,
                json=call.json,
                files=call.files,
                data=call.data,
            )
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"{call.method} {call.path}: {exc!r}") from exc
        return call.parse(response)

    async def _follow(self, follow: Follow) -> AsyncGenerator[Event, None]:
        while True:
            try:
                response = await self._http.send(follow.request(self._http), stream=True)
            except httpx.TransportError as exc:
                await asyncio.sleep(follow.dropped(exc))
                continue
            try:
                if follow.opened(response):
                    async for line in response.aiter_lines():
                        event = follow.feed(line)
                        if event is not None:
                            yield event
                        if follow.done:
                            return
                    delay = follow.dropped(None)
                else:
                    await response.aread()
                    delay = follow.refused(response)
            except httpx.TransportError as exc:
                delay = follow.dropped(exc)
            finally:
                await response.aclose()
            await asyncio.sleep(delay)
