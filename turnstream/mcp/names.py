"""An MCP tool's name in the tool loop: `mcp__SERVER__TOOL`, as OpenAI takes function names.

OpenAI (and the servers that copy its API) accept 1-64 characters of
`[A-Za-z0-9_-]`; MCP servers and config files use dots, slashes and longer names.
So:

- every other character becomes `_` (server `my.files`, tool `read/dir` ->
  `mcp__my_files__read_dir`);
- a name longer than 64 characters, or one a tool already has (a built-in tool,
  one of TURNSTREAM_TOOLS, or an MCP tool named before it: servers in the file's
  order, tools in each server's), keeps its first 55 characters and gets `_` and
  8 hex digits of the SHA-256 of the server's and the tool's own names.

The same configuration gives the same names in every process, and two servers with
a tool of the same name both keep it: the names carry the server.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Container

LONGEST = 64
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_-]")
_DIGEST = 8


def tool_name(server: str, tool: str, taken: Container[str]) -> str:
    """`mcp__SERVER__TOOL`, made valid; shortened with a hash when too long or taken."""
    name = _NOT_ALLOWED.sub("_", f"mcp__{server}__{tool}")
    if len(name) <= LONGEST and name not in taken:
        return name
    digest = hashlib.sha256(f"{server}\0{tool}".encode()).hexdigest()[:_DIGEST]
    return f"{name[: LONGEST - _DIGEST - 1]}_{digest}"
