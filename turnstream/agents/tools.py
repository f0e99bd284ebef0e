"""Tools: Python functions a model may call, with JSON schemas derived from their signatures.

    from turnstream.agents.tools import ToolContext

    async def search_notes(query: str, limit: int = 5, ctx: ToolContext | None = None) -> list[str]:
        '''Search the user's notes.

        Args:
            query: words to look for.
            limit: at most this many notes.
        '''
        ...

Registered with `TURNSTREAM_TOOLS`, comma-separated: a short name for a set of
built-in tools (`SHORT_NAMES`: `basic`, `workspace`) or `package.module:attr` (a
function, a `Tool` or a list of them). A tool's name is the function's
name, its description the docstring's first paragraph; each parameter becomes a
property of the schema, typed by its annotation (anything pydantic validates)
and described by the docstring's `Args:` entry (Google style) or `:param x:`
(Sphinx style), or by `Annotated[..., Field(description=...)]`. A parameter
annotated `ToolContext` (or `ToolContext | None`) is left out of the schema and
filled in with the run's user and conversation, so the tool can scope what it
touches. Sync functions run in a worker thread; async ones on the event loop.

A run's tools (`offered_tools`) are these and the tools of the MCP servers of
`TURNSTREAM_MCP_CONFIG` (turnstream/mcp/), named `mcp__SERVER__TOOL`; their
servers check the arguments, so their model lets any object through.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PydanticUserError,
    ValidationError,
    create_model,
)

from turnstream.config import Settings
from turnstream.errors import Misconfigured
from turnstream.store.workspace import Workspace


@dataclass(frozen=True)
class ToolContext:
    """Who a tool call is for: inject it to scope what the tool reads or changes."""

    user_id: str
    conversation_id: str
    session_id: str
    tool_call_id: str
    # This conversation's files and no other's (None where the run has no workspace).
    workspace: Workspace | None = None
    # The run's settings: the limits of the sandbox and of the web fetch.
    settings: Settings | None = None


class ToolArgumentsError(ValueError):
    """The model's arguments cannot be used: not a JSON object, or not what the schema says."""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # the JSON schema of the arguments object
    function: Callable[..., Any]
    arguments: type[BaseModel]  # validates the arguments; fields are aliased to the parameters
    context_parameter: str | None = None  # the parameter that receives the ToolContext
    # For a tool that keeps its own deadline (the sandbox): how long the tool loop lets a
    # call take, from the settings; None: TURNSTREAM_TOOL_TIMEOUT_SECONDS.
    timeout: Callable[[Settings], float] | None = None

    def openai_schema(self) -> dict[str, Any]:
        """The entry of the chat completions `tools` list."""
        function = {"name": self.name, "description": self.description}
        return {"type": "function", "function": {**function, "parameters": self.parameters}}

    def parse(self, arguments: str) -> dict[str, Any]:
        """The keyword arguments for the function, from the model's JSON arguments."""
        try:
            raw = json.loads(arguments or "{}")
        except json.JSONDecodeError as exc:
            raise ToolArgumentsError(
                f"The arguments are not valid JSON ({exc.msg} at position {exc.pos}); "
                "send one JSON object"
            ) from None
        if not isinstance(raw, dict):
            raise ToolArgumentsError("The arguments must be one JSON object")
        try:
            valid = self.arguments.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise ToolArgumentsError(f"Invalid arguments: {problems}") from None
        fields = type(valid).model_fields
        named = {info.alias or name: getattr(valid, name) for name, info in fields.items()}
        return {**named, **(valid.model_extra or {})}  # extras: a model that allows them


class AnyArguments(BaseModel):
    """Any JSON object, passed on whole: for a tool whose server checks the arguments (MCP)."""

    model_config = ConfigDict(extra="allow")


def make_tool(function: Callable[..., Any], *, name: str | None = None) -> Tool:
    """Describe `function` as a tool: its schema from its signature, type hints and docstring."""
    tool_name = name if name is not None else str(getattr(function, "__name__", ""))
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", tool_name):
        raise Misconfigured(f"Tool name {tool_name!r}: use 1-64 letters, digits, _ or -")
    summary, documented = _docstring(inspect.getdoc(function) or "")
    try:
        model, context_parameter = _arguments_model(function, tool_name, documented)
        parameters = _clean_schema(model.model_json_schema())
    except (NameError, TypeError, PydanticUserError) as exc:
        raise Misconfigured(f"Tool {tool_name}: no schema can be made of it: {exc}") from exc
    return Tool(
        name=tool_name,
        description=summary,
        parameters=parameters,
        function=function,
        arguments=model,
        context_parameter=context_parameter,
    )


def _arguments_model(
    function: Callable[..., Any], tool_name: str, documented: dict[str, str]
) -> tuple[type[BaseModel], str | None]:
    """A model of the parameters (each aliased to its name), and the ToolContext one's name."""
    hints = typing.get_type_hints(function, include_extras=True)
    fields: dict[str, Any] = {}
    context_parameter = None
    for parameter in inspect.signature(function).parameters.values():
        annotation = hints.get(parameter.name, Any)
        if _is_context(annotation):
            context_parameter = parameter.name
            continue
        if parameter.kind not in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            raise Misconfigured(
                f"Tool {tool_name}: parameter {parameter.name!r} must be one that can be "
                "passed by keyword (no *args, **kwargs or positional-only parameters)"
            )
        default = ... if parameter.default is parameter.empty else parameter.default
        field = Field(default, alias=parameter.name)
        if parameter.name in documented:  # else Annotated[…, Field(description=…)] may say
            field = Field(default, alias=parameter.name, description=documented[parameter.name])
        # Prefixed names: a parameter may be called `json` or `schema`, as BaseModel's methods.
        fields[f"p_{parameter.name}"] = (annotation, field)
    config = ConfigDict(extra="forbid")
    model = create_model(f"{tool_name}_arguments", __config__=config, **fields)
    return model, context_parameter


# The short names of `TURNSTREAM_TOOLS`, and the lists of built-in tools they stand for.
SHORT_NAMES = {
    "basic": ["turnstream.agents.builtin_tools:TOOLS"],  # clock, calculator, echo
    "workspace": ["turnstream.agents.workspace_tools:TOOLS"],  # the conversation's files
    # `bash` in a sandbox on the workspace, which it implies.
    "sandbox": [
        "turnstream.agents.workspace_tools:TOOLS",
        "turnstream.agents.sandbox_tools:TOOLS",
    ],
    "web": ["turnstream.agents.web_tools:TOOLS"],  # web_fetch
}


@cache
def load_tools(spec: str | None) -> Mapping[str, Tool]:
    """The tools `TURNSTREAM_TOOLS` names (short names, `package.module:attr`), in order."""
    tools: dict[str, Tool] = {}
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        for tool in (t for part in SHORT_NAMES.get(item, [item]) for t in _resolve(part)):
            known = tools.get(tool.name)
            if known is not None and known.function is not tool.function:
                raise Misconfigured(f"TURNSTREAM_TOOLS: two tools are named {tool.name!r}")
            tools[tool.name] = tool  # the same tool twice (`workspace,sandbox`): once
    return types.MappingProxyType(tools)


async def offered_tools(settings: Settings) -> Mapping[str, Tool]:
    """The tools a run offers: TURNSTREAM_TOOLS' and the MCP servers' (docs/mcp.md)."""
    configured = load_tools(settings.tools)
    if settings.mcp_config is None:
        return configured
    from turnstream.mcp.catalog import loop_timeout, mcp_tools  # the SDK takes ~1 s to import

    tools = dict(configured)
    for found in await mcp_tools(settings, taken=configured):
        tools[found.name] = Tool(
            name=found.name,
            description=found.description,
            parameters=found.parameters,
            function=found.call,
            arguments=AnyArguments,
            timeout=loop_timeout,
        )
    return tools


def tools_by_name(functions: Iterable[Callable[..., Any] | Tool]) -> dict[str, Tool]:
    """A registry from functions (or ready `Tool`s), keyed by tool name."""
    made = [f if isinstance(f, Tool) else make_tool(f) for f in functions]
    return {tool.name: tool for tool in made}


def _resolve(item: str) -> list[Tool]:
    module_name, sep, attr = item.partition(":")
    if not sep or not module_name or not attr:
        raise Misconfigured(
            f"TURNSTREAM_TOOLS: {item!r} is neither a short name ({', '.join(SHORT_NAMES)}) "
            "nor of the form package.module:attr"
        )
    try:
        value = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise Misconfigured(f"TURNSTREAM_TOOLS: cannot load {item!r}: {exc}") from exc
    values = list(value) if isinstance(value, list | tuple) else [value]
    for v in values:
        if not callable(v) and not isinstance(v, Tool):
            raise Misconfigured(f"TURNSTREAM_TOOLS: {item!r} holds {v!r}, not a function")
    return list(tools_by_name(values).values())


def _is_context(annotation: Any) -> bool:
    """`ToolContext`, or `ToolContext | None`."""
    if annotation is ToolContext:
        return True
    args = typing.get_args(annotation)
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return union and ToolContext in args and all(a in (ToolContext, type(None)) for a in args)


_SECTION = re.compile(r"^(Args|Arguments|Parameters|Params):$")
_ENTRY = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_SPHINX = re.compile(r"^:param\s+(?:[^:]*\s)?(\w+):\s*(.*)$")


def _docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The first paragraph (on one line), and each parameter's description.

    Parameters are read from a Google-style `Args:` section (`name: text` or
    `name (type): text`, continued on more indented lines) or from Sphinx-style
    `:param name: text` lines.
    """
    summary = " ".join(doc.split("\n\n", 1)[0].split())
    described: dict[str, str] = {}
    current: str | None = None
    base: int | None = None  # the indent of the Args: entries; None outside the section
    for line in doc.splitlines():
        text, indent = line.strip(), len(line) - len(line.lstrip())
        if not text:
            current = None
        elif _SECTION.match(line):
            current, base = None, -1
        elif sphinx := _SPHINX.match(line):
            current, base = sphinx[1], None
            described[current] = sphinx[2]
        elif base == -1 or (base is not None and 0 < indent <= base):
            entry = _ENTRY.match(text) if indent > 0 else None
            current, base = (entry[1], indent) if entry else (None, None)
            if entry:
                described[entry[1]] = entry[2]
        elif current is not None and indent > 0:
            described[current] += " " + text
        else:
            current, base = None, None
    return summary, {k: v.strip() for k, v in described.items() if v.strip()}


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop pydantic's generated titles (the model's name, each property's name)."""
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        if isinstance(prop, dict):
            prop.pop("title", None)
    return schema
