"""MCP servers as tools: the servers `TURNSTREAM_MCP_CONFIG` names, their tools offered to
the model as `mcp__SERVER__TOOL` (docs/mcp.md).

    servers.py     the config file: read, checked, `${VAR}` expanded
    names.py       `mcp__SERVER__TOOL`, within what OpenAI allows in a function name
    connection.py  one server: started on first use, in a task of its own, again after it died
    catalog.py     this process's servers and their tools; `turnstream check`'s look at them

The package's errors, one tree:

    McpError
    ├── McpConfigError   the config file cannot be used (`problems`: one line each)
    ├── McpServerError   a server did not start, did not answer in time, or went away
    └── McpToolError     the server answered the call with an error result (`isError`)

Only this module and servers.py load without the `mcp` SDK, which takes about a
second to import: `serve` checks the file at start without paying for it.
"""

from __future__ import annotations


class McpError(Exception):
    """Something about the MCP servers; the message says what, naming the server."""


class McpConfigError(McpError):
    """TURNSTREAM_MCP_CONFIG's file cannot be used."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class McpServerError(McpError):
    """A server did not start, did not answer within its deadline, or went away."""


class McpToolError(McpError):
    """The server ran the tool and answered with an error result; the message is its text."""
