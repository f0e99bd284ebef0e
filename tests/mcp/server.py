"""A small MCP server for the tests, written with the `mcp` SDK (2.x: `MCPServer`).

    python tests/mcp/server.py                  stdio
    python tests/mcp/server.py --http PORT      Streamable HTTP on 127.0.0.1:PORT, path /mcp
    python tests/mcp/server.py --slow SECONDS   lists its tools that much later

Its tools: echo, add, sleep_forever, die (the process exits mid-call), fail (an
`isError` result), picture (an image and a text), pid (its process id).
"""

from __future__ import annotations

import argparse
import asyncio
import os

from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, ImageContent, TextContent
from mcp.types import Tool as McpTool


class TestServer(MCPServer):
    slow = 0.0  # seconds before `tools/list` is answered; stdin's end still stops it at once

    async def list_tools(self) -> list[McpTool]:
        await asyncio.sleep(self.slow)
        return await super().list_tools()


server = TestServer("test", log_level="WARNING")


@server.tool()
def echo(text: str) -> str:
    """Say the text back."""
    return text


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
async def sleep_forever() -> str:
    """Never answer."""
    await asyncio.sleep(3600)
    return "woke up"


@server.tool()
def die() -> str:
    """Exit the process in the middle of the call."""
    os._exit(3)


@server.tool()
def fail() -> CallToolResult:
    """Answer with an error result."""
    return CallToolResult(content=[TextContent(text="the disk is full")], is_error=True)


@server.tool()
def picture() -> CallToolResult:
    """An image and a caption."""
    image = ImageContent(data="iVBORw0KGgo=", mime_type="image/png")
    return CallToolResult(content=[image, TextContent(text="a tiny picture")])


@server.tool()
def pid() -> int:
    """This server's process id."""
    return os.getpid()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, help="serve Streamable HTTP on this port")
    parser.add_argument("--slow", type=float, default=0.0, help="list the tools this late")
    args = parser.parse_args()
    server.slow = args.slow
    if args.http is None:
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=args.http)


if __name__ == "__main__":
    main()
