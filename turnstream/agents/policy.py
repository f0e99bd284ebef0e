"""Which tool calls run: allowed, denied with a reason the model reads, or asked of the user.

Every call the built-in tool loop is about to make (agents/toolloop.py), whatever
the tool's origin (a built-in, a Python function, the sandbox, an MCP server), is
judged here first, in this order:

    TURNSTREAM_TOOL_DENY      a name matches (`*` wildcards)       -> deny
    TURNSTREAM_TOOL_POLICY    package.module:callable, given the run's context, the
                              tool's name and its parsed arguments -> its verdict;
                              None: no opinion, go on
    TURNSTREAM_TOOL_APPROVAL  a name matches                       -> ask
    otherwise                                                      -> allow

A call with an unknown name, or arguments that are not what the tool takes, is
not judged: it runs into its error result as before, and touches nothing.

    from turnstream.agents.policy import ASK, Verdict, deny

    def policy(ctx, name, arguments) -> Verdict | None:
        if name == "write_file" and not arguments["path"].startswith("drafts/"):
            return ASK
        return None
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from turnstream.config import Settings
from turnstream.errors import Misconfigured

if TYPE_CHECKING:
    from turnstream.agents.base import RunContext


@dataclass(frozen=True)
class Verdict:
    action: Literal["allow", "deny", "ask"]
    reason: str = ""  # for `deny`: what the model reads in the call's error result


ALLOW = Verdict("allow")
ASK = Verdict("ask")


def deny(reason: str) -> Verdict:
    return Verdict("deny", reason)


Policy = Callable[["RunContext", str, dict[str, Any]], Verdict | Awaitable[Verdict | None] | None]


CANNOT_ASK = "Not run: this call needs the user's approval, and this agent cannot wait for it."


def has_policy(settings: Settings) -> bool:
    """Whether any call could be other than allowed: the adapters skip the policy if not."""
    return bool(settings.tool_deny or settings.tool_approval or settings.tool_policy)


async def judge(ctx: RunContext, name: str, arguments: dict[str, Any]) -> Verdict:
    """The verdict on one call of tool `name` with `arguments` (parsed), in the order above."""
    settings = ctx.settings
    if matches(settings.tool_deny, name):
        return deny(f"Denied: {name} may not be called here (TURNSTREAM_TOOL_DENY).")
    if settings.tool_policy:
        verdict = load_policy(settings.tool_policy)(ctx, name, arguments)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        if verdict is not None:
            if not isinstance(verdict, Verdict):
                raise TypeError(f"TURNSTREAM_TOOL_POLICY returned {verdict!r}, not a Verdict")
            return verdict
    return ASK if matches(settings.tool_approval, name) else ALLOW


def matches(patterns: str | None, name: str) -> bool:
    """Whether `name` matches one of the comma-separated `patterns` (`*` any characters)."""
    return any(
        fnmatch.fnmatchcase(name, pattern.strip())
        for pattern in (patterns or "").split(",")
        if pattern.strip()
    )


@cache
def load_policy(spec: str) -> Policy:
    """Resolve `TURNSTREAM_TOOL_POLICY` (`package.module:callable`); Misconfigured if it can't."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise Misconfigured(f"TURNSTREAM_TOOL_POLICY: {spec!r} is not package.module:callable")
    try:
        policy = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise Misconfigured(f"TURNSTREAM_TOOL_POLICY: cannot load {spec!r}: {exc}") from exc
    if not callable(policy):
        raise Misconfigured(f"TURNSTREAM_TOOL_POLICY: {spec!r} is {policy!r}, not a callable")
    return policy  # type: ignore[no-any-return]


def policy_problems(settings: Settings) -> list[str]:
    """What `serve`, `worker` and `turnstream check` report about the policy setting."""
    if not settings.tool_policy:
        return []
    spec = f"TURNSTREAM_TOOL_POLICY={settings.tool_policy}"
    try:
        load_policy(settings.tool_policy)
    except Misconfigured as exc:
        return [f"{spec}: {str(exc).removeprefix('TURNSTREAM_TOOL_POLICY: ')}"]
    except Exception as exc:  # whatever importing their module raises
        return [f"{spec}: cannot load it: {type(exc).__name__}: {exc}"]
    return []
