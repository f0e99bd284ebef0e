"""What the settings say and what they name, checked before a command does any start-up work.

    invalid_settings   one line per setting that does not validate: the variable, its
                       value (secrets masked), what is wrong and what to do
    loading_problems   what is loaded by name (the agent, the tools, the sandbox they
                       may need, the MCP servers' config file), loaded now: one line
                       per problem
    shown_value        a setting's value as messages and `turnstream check` show it
    redact             a URL without its password

A deployment that cannot work says so at start, before a database is created, a
user made or Redis started: not on its first run.
"""

from __future__ import annotations

import inspect
import traceback
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import ValidationError
from pydantic_core import PydanticUndefined

from turnstream.config import Settings

MASKED = "***"
# Settings whose values are secrets (masked), and those that are URLs (password masked).
SECRETS = frozenset({"jwt_secret", "secret_key", "openai_api_key", "metrics_token"})
URLS = frozenset({"database_url", "redis_url", "jwks_url", "openai_base_url"})


def variable(name: str) -> str:
    return f"TURNSTREAM_{name.upper()}"


def shown_value(name: str, value: Any) -> str:
    if value is None:
        return "unset"
    if name in SECRETS:
        return MASKED
    if name in URLS:
        return redact(str(value))
    return str(value)


def invalid_settings(exc: ValidationError) -> list[str]:
    """One line per problem: `TURNSTREAM_X=value: what is wrong; what to do`."""
    lines = []
    for error in exc.errors(include_url=False):
        name = "_".join(map(str, error["loc"]))
        field = Settings.model_fields.get(name)
        value = shown_value(name, error.get("input"))
        default = field.get_default(call_default_factory=False) if field else None
        unset = "" if default is None else f", or unset it for the default ({default})"
        if default is PydanticUndefined:  # derived from other settings
            unset = ", or unset it for the default"
        why = error["msg"].removeprefix("Value error, ")
        lines.append(f"{variable(name)}={value}: {why}; correct it{unset}.")
    return lines


def loading_problems(settings: Settings, *, runs_agents: bool, debug: bool = False) -> list[str]:
    """Load the agent and the tools as a run would, and try the sandbox if a tool needs it."""
    from turnstream.agents.policy import policy_problems

    if not runs_agents:
        return []
    problems = [_agent_problem(settings, debug)]
    problems += _tools_problems(settings, debug)
    problems += _mcp_config_problems(settings)
    problems += policy_problems(settings)
    return [p for p in problems if p is not None]


def _agent_problem(settings: Settings, debug: bool) -> str | None:
    from turnstream.agents import load_agent

    spec = f"{variable('agent')}={settings.agent}"
    try:
        agent: object = load_agent(settings.agent)  # whatever the module holds
    except Exception as exc:  # whatever importing their module raises
        return f"{spec}: cannot load it ({_why(exc, debug)}); {_AGENT_FORM}."
    if inspect.isclass(agent) or not callable(agent):
        kind = "a class" if inspect.isclass(agent) else f"a {type(agent).__name__}"
        return f"{spec}: it is {kind}, not a function; {_AGENT_FORM}."
    if inspect.iscoroutinefunction(agent):
        return f"{spec}: it is an async function; an agent is an async generator (it yields)."
    try:
        inspect.signature(agent).bind(None)
    except TypeError:
        return f"{spec}: it must take one argument, the run's context (RunContext)."
    except ValueError:  # no signature to read (a builtin): let the run tell
        pass
    return None


_AGENT_FORM = (
    "give demo, openai, or package.module:callable of an importable module (docs/agents.md)"
)


def _tools_problems(settings: Settings, debug: bool) -> list[str]:
    from turnstream.agents.sandbox_tools import bash
    from turnstream.agents.tools import load_tools
    from turnstream.sandbox.bwrap import SandboxUnavailable
    from turnstream.sandbox.run import probe

    spec = f"{variable('tools')}={settings.tools}"
    try:
        tools = load_tools(settings.tools)
    except Exception as exc:
        why = _why(exc, debug).removeprefix("Misconfigured: ").removeprefix("TURNSTREAM_TOOLS: ")
        return [f"{spec}: {why}"]
    if any(tool.function is bash for tool in tools.values()):
        try:
            probe(settings)
        except SandboxUnavailable as exc:
            return [f"{spec}: it has the sandbox (bash), but {exc}."]
    return []


def _mcp_config_problems(settings: Settings) -> list[str]:
    """The MCP config file must be there and make sense. Its servers start when first used
    (turnstream.mcp.catalog.mcp_problems starts them now, for a check ahead of time)."""
    from turnstream.mcp.servers import config_problems

    return [] if settings.mcp_config is None else config_problems(settings.mcp_config)


def _why(exc: BaseException, debug: bool) -> str:
    """`Type: message` on one line; with debug, the whole traceback after it."""
    text = " ".join(str(exc).split()) or "no message"
    line = f"{type(exc).__name__}: {text}"
    if debug:
        return line + "\n" + "".join(traceback.format_exception(exc)).rstrip()
    return line


def redact(url: str) -> str:
    """The URL without its password (in the user part or a `password=` parameter)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<an unparsable URL>"
    netloc, query = parts.netloc, parts.query
    if password is None and "password" not in query.lower():
        return url  # nothing to hide (and urlunsplit would drop sqlite:///'s empty host)
    if password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{hostport}"
    if "password" in query.lower():
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "***" if "password" in k.lower() else v) for k, v in pairs], safe="*"
        )
    return urlunsplit(parts._replace(netloc=netloc, query=query))
