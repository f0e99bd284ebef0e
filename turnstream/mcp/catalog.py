"""This process's MCP servers and their tools, for the tool loop and for `turnstream check`.

    mcp_tools(settings, taken)   every server's tools as `McpTool`s named `mcp__SERVER__TOOL`
                                 (names.py), the servers started on first use
    mcp_problems(settings)       start each server and list its tools: one line per problem
    close_servers()              stop the servers this event loop started

The connections belong to an event loop (a worker process runs one; tests run
several), one set per config file, read on first use. A server that does not start
is left out, with a log line naming it (connection.py); the others' tools are
offered all the same.

A result's text content is joined with newlines, and a text resource it embeds
counts as text; an image, audio, a binary resource or a resource link becomes a
one-line note (`[image/png image: not shown]`), since the tool loop gives the model
text. A result with no content but structured content gives that, as JSON. An
`isError` result raises McpToolError with the server's text, which the tool loop
gives the model as an error result.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcp.types import (
    CallToolResult,
    ContentBlock,
    EmbeddedResource,
    ResourceLink,
    TextContent,
    TextResourceContents,
    Tool,
)

from turnstream.config import Settings
from turnstream.mcp import McpServerError, McpToolError
from turnstream.mcp.connection import Connection
from turnstream.mcp.names import tool_name
from turnstream.mcp.servers import VARIABLE, config_problems, read_config

# Past a call's own deadline, the time the SDK may take to tell the server it is cancelled.
_CANCEL_SECONDS = 5.0

# Each event loop's connections, per config file; a closed loop's are dropped.
_servers: dict[asyncio.AbstractEventLoop, dict[Path, list[Connection]]] = {}


@dataclass(frozen=True)
class McpTool:
    """One tool of one server, under its name in the tool loop."""

    name: str  # mcp__SERVER__TOOL
    description: str
    parameters: dict[str, Any]  # the server's JSON schema of the arguments
    connection: Connection
    tool: str  # the server's own name for it
    start_seconds: float
    call_seconds: float

    async def call(self, /, **arguments: Any) -> str:
        """Call the tool on its server (starting it if it is not running): the result's text."""
        result = await self.connection.call(
            self.tool, arguments, start_seconds=self.start_seconds, call_seconds=self.call_seconds
        )
        text = result_text(result)
        if result.is_error:
            raise McpToolError(text or f"the tool {self.tool!r} failed and said nothing")
        return text


def loop_timeout(settings: Settings) -> float:
    """How long the tool loop lets an MCP call take: the call keeps its own deadline."""
    return settings.tool_timeout_seconds + _CANCEL_SECONDS


async def mcp_tools(settings: Settings, taken: Collection[str]) -> list[McpTool]:
    """The tools of every server that is running or starts now; `taken`: names in use."""
    if settings.mcp_config is None:
        return []
    connections = _connections(settings.mcp_config)
    start = settings.mcp_start_seconds
    listings = await asyncio.gather(*(_listing(c, start) for c in connections))
    names = set(taken)
    found = []
    for connection, tools in zip(connections, listings, strict=True):
        for tool in tools:
            name = tool_name(connection.name, tool.name, names)
            names.add(name)
            made = McpTool(
                name=name,
                description=tool.description or tool.title or "",
                parameters=tool.input_schema,
                connection=connection,
                tool=tool.name,
                start_seconds=start,
                call_seconds=settings.tool_timeout_seconds,
            )
            found.append(made)
    return found


def mcp_problems(settings: Settings) -> list[str]:
    """Start each server and list its tools, now: one line per problem (`turnstream check`).

    It runs an event loop of its own, and stops the servers before it returns.
    """
    path = settings.mcp_config
    if path is None:
        return []
    problems = config_problems(path)
    if problems:
        return problems

    async def look() -> list[str | None]:
        connections = _connections(path)
        try:
            start = settings.mcp_start_seconds
            return await asyncio.gather(*(_problem(c, start) for c in connections))
        finally:
            await close_servers()

    return [f"{VARIABLE}={path}: {problem}." for problem in asyncio.run(look()) if problem]


async def close_servers() -> None:
    """Stop every server this event loop started and wait until they are stopped."""
    per_path = _servers.pop(asyncio.get_running_loop(), {})
    await asyncio.gather(*(c.close() for connections in per_path.values() for c in connections))


def result_text(result: CallToolResult) -> str:
    """The result as the model reads it (see the module's docstring)."""
    parts = [_block_text(block) for block in result.content]
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)


def _block_text(block: ContentBlock) -> str:
    match block:
        case TextContent():
            return block.text
        case EmbeddedResource(resource=TextResourceContents() as resource):
            return resource.text
        case EmbeddedResource(resource=resource):
            return f"[{resource.mime_type or 'binary'} resource {resource.uri}: not shown]"
        case ResourceLink():
            return f"[resource link: {block.uri}]"
        case _:  # an image or audio
            return f"[{block.mime_type} {block.type}: not shown]"


def _connections(path: Path) -> list[Connection]:
    for ended in [loop for loop in _servers if loop.is_closed()]:
        del _servers[ended]
    per_path = _servers.setdefault(asyncio.get_running_loop(), {})
    if path not in per_path:
        per_path[path] = [Connection(spec) for spec in read_config(path)]
    return per_path[path]


async def _listing(connection: Connection, start_seconds: float) -> list[Tool]:
    try:
        return await connection.tools(start_seconds)
    except McpServerError:  # logged when it failed to start; its tools are left out
        return []


async def _problem(connection: Connection, start_seconds: float) -> str | None:
    try:
        await connection.tools(start_seconds)
    except McpServerError as exc:
        return str(exc)
    return None
