"""The MCP servers `TURNSTREAM_MCP_CONFIG` names: its JSON file read and checked.

The format is the one people already write for Claude Desktop and Claude Code:

    {"mcpServers": {
        "files": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem",
                                             "/srv/shared"]},
        "search": {"type": "http", "url": "https://mcp.example.com/mcp",
                   "headers": {"Authorization": "Bearer ${SEARCH_TOKEN}"}}}}

A server is a command run over stdio (`command`, `args`, `env`) or a Streamable
HTTP endpoint (`url`, `headers`; `type` may say `http` or `streamable-http`).
`${VAR}` and `${VAR:-default}` in those values are read from the environment
(the default stands in when VAR is unset or empty); a variable that is unset with
no default is a problem of the file, as it is for Claude Code. Keys other clients
use (`disabled`, `autoApprove`, …) are ignored, so their files load here too.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from turnstream.mcp import McpConfigError

VARIABLE = "TURNSTREAM_MCP_CONFIG"
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_HTTP = ("http", "streamable-http")


@dataclass(frozen=True)
class Stdio:
    """A program run with its stdin and stdout as the connection."""

    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)  # on top of the SDK's allow-list


@dataclass(frozen=True)
class Http:
    """A Streamable HTTP endpoint."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServerSpec:
    """One server of the file, its `${VAR}`s expanded."""

    name: str
    transport: Stdio | Http


def read_config(path: Path) -> list[ServerSpec]:
    """The file's servers, in its order; McpConfigError listing every problem found."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise McpConfigError(
            ['there is no such file; give the path of a JSON file with "mcpServers"']
        ) from None
    except OSError as exc:
        raise McpConfigError([f"cannot read it ({exc.strerror or exc})"]) from None
    except UnicodeDecodeError:
        raise McpConfigError(["it is not UTF-8 text"]) from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise McpConfigError([f"it is not valid JSON ({exc.msg} at {where})"]) from None
    entries = document.get("mcpServers") if isinstance(document, dict) else None
    if not isinstance(entries, dict):
        raise McpConfigError(['it must be a JSON object {"mcpServers": {"NAME": {…}, …}}'])
    servers, problems = [], []
    for name, entry in entries.items():
        try:
            servers.append(_server(name, entry))
        except McpConfigError as exc:
            problems += [f"server {name!r}: {problem}" for problem in exc.problems]
    if problems:
        raise McpConfigError(problems)
    return servers


def config_problems(path: Path) -> list[str]:
    """One line per problem of the file: the variable, the path and what is wrong."""
    try:
        read_config(path)
    except McpConfigError as exc:
        return [f"{VARIABLE}={path}: {problem}." for problem in exc.problems]
    return []


def _server(name: str, entry: Any) -> ServerSpec:
    if not isinstance(entry, dict):
        raise McpConfigError(['it must be an object with "command" or "url"'])
    kind, command, url = entry.get("type"), entry.get("command"), entry.get("url")
    if kind == "sse":
        raise McpConfigError(["the SSE transport is not supported; use Streamable HTTP"])
    if kind not in (None, "stdio", *_HTTP):
        raise McpConfigError([f"unknown type {kind!r}; use stdio, http or streamable-http"])
    if (command is None) == (url is None):
        raise McpConfigError(['give "command" (a program run over stdio) or "url" (HTTP)'])
    wanted = "command" if kind == "stdio" else "url" if kind in _HTTP else None
    if wanted is not None and entry.get(wanted) is None:
        raise McpConfigError([f'type {kind!r} needs "{wanted}"'])
    missing: list[str] = []
    transport: Stdio | Http
    if command is not None:
        args = tuple(_expand(a, missing) for a in _texts(entry.get("args", []), "args"))
        env = _expanded_map(entry.get("env", {}), "env", missing)
        transport = Stdio(_expand(_text(command, "command"), missing), args, env)
    else:
        headers = _expanded_map(entry.get("headers", {}), "headers", missing)
        transport = Http(_expand(_text(url, "url"), missing), headers)
    if missing:
        unset = ", ".join(f"${{{v}}}" for v in dict.fromkeys(missing))
        raise McpConfigError([f"{unset}: unset in the environment, with no :-default"])
    if isinstance(transport, Http) and not re.match(r"^https?://\S+$", transport.url, re.I):
        # Shown as written: what a ${VAR} holds may be a secret.
        raise McpConfigError([f"url {url!r} is not an http:// or https:// URL"])
    return ServerSpec(name, transport)


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise McpConfigError([f'"{key}" must be a non-empty string'])
    return value


def _texts(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise McpConfigError([f'"{key}" must be a list of strings'])
    return value


def _expanded_map(value: Any, key: str, missing: list[str]) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise McpConfigError([f'"{key}" must be an object of strings'])
    return {k: _expand(v, missing) for k, v in value.items()}


def _expand(text: str, missing: list[str]) -> str:
    """`${VAR}` and `${VAR:-default}` replaced from the environment; unset ones in `missing`."""

    def value(reference: re.Match[str]) -> str:
        found = os.environ.get(reference[1])
        if found:
            return found
        if reference[2] is not None:
            return reference[2]
        if found is None:
            missing.append(reference[1])
        return ""

    return _REFERENCE.sub(value, text)
