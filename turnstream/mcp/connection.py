"""One MCP server's connection: started on first use, in a task of its own, again after it died.

    Connection.tools()   the server's tools, starting it first when it is not running
    Connection.call()    one `tools/call`, under a deadline
    Connection.close()   stop it: a stdio server's stdin is closed, and it is killed if
                         it does not exit within seconds

The SDK's `mcp.Client` is an async context manager built on anyio task groups and
cancel scopes, which must be entered and left by the same task. So a running server
has an owner task that enters the client, lists the tools, and waits until it is
told to stop or the server's side ends (a stdio server's stdout closes when it
exits); then it leaves the client. A call is one request on the client's streams,
which any task may send: the calls of concurrent runs share the connection.

A call the server never answers would wait forever in the SDK (python-sdk #1577),
so each runs under TURNSTREAM_TOOL_TIMEOUT_SECONDS; past it the SDK tells the
server that the request is cancelled, and the connection stays. A call during
which the server dies fails at once (the SDK wakes the requests still waiting when
the stream ends) and the connection is dropped: the next use starts the server
again. A server that did not start within TURNSTREAM_MCP_START_SECONDS, or at all,
is logged once and not tried again for RETRY_SECONDS, so that a broken server
does not hold up every run.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import mcp
from anyio.streams.memory import MemoryObjectSendStream
from mcp.client._transport import ReadStream, TransportStreams  # mcp.client.Transport's types
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage
from mcp.types import CONNECTION_CLOSED, CallToolResult, Tool

from turnstream.mcp import McpServerError
from turnstream.mcp.servers import Http, ServerSpec, Stdio

logger = logging.getLogger("turnstream.mcp")

RETRY_SECONDS = 30.0
# The SDK's own HTTP timeouts: a response stream may stay open for minutes.
_HTTP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)


@dataclass(frozen=True)
class _Running:
    client: mcp.Client
    tools: list[Tool]
    stop: asyncio.Event  # set to end the owner task; the server's side ending sets it too


class Connection:
    """One configured server, for the tasks of one event loop."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self._running: _Running | None = None
        self._starting = asyncio.Lock()
        self._failed: tuple[float, str] | None = None  # when the last start failed, and why
        self._owners: set[asyncio.Task[None]] = set()
        self._closing = False

    @property
    def name(self) -> str:
        return self.spec.name

    async def tools(self, start_seconds: float) -> list[Tool]:
        return (await self._started(start_seconds)).tools

    async def call(
        self, tool: str, arguments: dict[str, Any], *, start_seconds: float, call_seconds: float
    ) -> CallToolResult:
        """The server's result; McpServerError when there is none (the message says why)."""
        running = await self._started(start_seconds)
        deadline = asyncio.timeout(call_seconds)
        try:
            async with deadline:
                return await running.client.call_tool(tool, arguments)
        except TimeoutError:
            if not deadline.expired():
                raise
            raise McpServerError(
                f"MCP server {self.name!r} did not answer within {call_seconds:g} s "
                "(TURNSTREAM_TOOL_TIMEOUT_SECONDS); the call was cancelled"
            ) from None
        except mcp.MCPError as exc:
            if exc.code != CONNECTION_CLOSED:
                raise McpServerError(f"MCP server {self.name!r} refused the call: {exc}") from None
            running.stop.set()
            raise McpServerError(
                f"MCP server {self.name!r} went away during the call (it exited, crashed or "
                "dropped the connection); it is started again on the next call"
            ) from None

    async def close(self) -> None:
        """Stop the server and wait until it is stopped."""
        self._closing = True
        if self._running is not None:
            self._running.stop.set()
        if self._owners:
            await asyncio.wait(self._owners)

    async def _started(self, start_seconds: float) -> _Running:
        async with self._starting:
            running = self._running
            if running is not None and not running.stop.is_set():
                return running
            if self._failed is not None and time.monotonic() - self._failed[0] < RETRY_SECONDS:
                raise McpServerError(self._failed[1])
            try:
                self._running = await self._start(start_seconds)
            except McpServerError as exc:
                self._failed = (time.monotonic(), str(exc))
                logger.warning("%s; it is tried again after %g s", exc, RETRY_SECONDS)
                raise
            self._failed = None
            return self._running

    async def _start(self, start_seconds: float) -> _Running:
        ready: asyncio.Future[_Running] = asyncio.get_running_loop().create_future()
        owner = asyncio.create_task(self._own(ready), name=f"MCP server {self.name}")
        self._owners.add(owner)
        owner.add_done_callback(self._forget)
        try:
            async with asyncio.timeout(start_seconds):
                return await asyncio.shield(ready)
        except BaseException as exc:  # late, or the run stopped: no server is left behind
            ready.cancel()
            owner.cancel()
            if isinstance(exc, TimeoutError):
                raise McpServerError(
                    f"MCP server {self.name!r} did not start and list its tools within "
                    f"{start_seconds:g} s (TURNSTREAM_MCP_START_SECONDS)"
                ) from None
            raise

    async def _own(self, ready: asyncio.Future[_Running]) -> None:
        """Hold the client open until told to stop, or until the server's side ends."""
        stop = asyncio.Event()
        try:
            async with mcp.Client(_streams(self.spec, stop)) as client:
                ready.set_result(_Running(client, await _list_tools(client), stop))
                await stop.wait()
        except Exception as exc:
            why = _why(exc)
            if not ready.done():
                failed = McpServerError(f"MCP server {self.name!r} did not start: {why}")
                ready.set_exception(failed)
            else:
                logger.warning("MCP server %r failed (%s); it starts again if used", self.name, why)
        else:
            if not self._closing:
                logger.info("MCP server %r stopped; it starts again if used", self.name)
        finally:
            if self._running is not None and self._running.stop is stop:
                self._running = None

    def _forget(self, owner: asyncio.Task[None]) -> None:
        self._owners.discard(owner)
        if not owner.cancelled():
            owner.exception()  # retrieved: _own logs what went wrong


async def _list_tools(client: mcp.Client) -> list[Tool]:
    """Every page of the listing (the start's deadline bounds a listing that never ends)."""
    tools: list[Tool] = []
    cursor: str | None = None
    while True:
        page = await client.list_tools(cursor=cursor)
        tools += page.tools
        cursor = page.next_cursor
        if cursor is None:
            return tools


@asynccontextmanager
async def _streams(spec: ServerSpec, ended: asyncio.Event) -> AsyncIterator[TransportStreams]:
    """The server's message streams (stdio or Streamable HTTP); `ended` is set when the
    server's side ends."""
    async with AsyncExitStack() as stack:
        match spec.transport:
            case Stdio(command, args, env):
                params = mcp.StdioServerParameters(command=command, args=list(args), env=dict(env))
                # The server's stderr goes to the process's own (a real file: the SDK's
                # default is whatever sys.stderr was when it was first imported).
                errlog = sys.__stderr__ or sys.stderr
                read, write = await stack.enter_async_context(stdio_client(params, errlog))
            case Http(url, headers):
                http = httpx2.AsyncClient(headers=dict(headers), timeout=_HTTP_TIMEOUT)
                await stack.enter_async_context(http)
                transport = streamable_http_client(url, http_client=http)
                read, write = await stack.enter_async_context(transport)
        relay, relayed = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        group = await stack.enter_async_context(anyio.create_task_group())
        group.start_soon(_relay, read, relay, ended)
        try:
            yield relayed, write
        finally:
            group.cancel_scope.cancel()


async def _relay(
    source: ReadStream[SessionMessage | Exception],
    sink: MemoryObjectSendStream[SessionMessage | Exception],
    ended: asyncio.Event,
) -> None:
    """Pass the server's messages on to the client; set `ended` when they stop."""
    async with sink:
        try:
            async for message in source:
                await sink.send(message)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the client is closing
    ended.set()


def _why(exc: BaseException) -> str:
    """The first error an exception group holds, as `Type: message`."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, mcp.MCPError) and exc.code == CONNECTION_CLOSED:
        return "it closed the connection (it exited: its error output may say why)"
    return f"{type(exc).__name__}: {' '.join(str(exc).split()) or 'no message'}"
