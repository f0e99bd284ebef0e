"""TURNSTREAM_TOOL_POLICY callables for the tests (`policies:NAME`, tests/ on the path)."""

from __future__ import annotations

from typing import Any

from turnstream.agents.base import RunContext
from turnstream.agents.policy import ASK, Verdict, deny


def no_sixes(ctx: RunContext, name: str, arguments: dict[str, Any]) -> Verdict | None:
    """Deny arithmetic with a 6 in it; ask about any other calculator call; no opinion else."""
    if name != "calculator":
        return None
    if "6" in str(arguments.get("expression")):
        return deny("Denied: this deployment does no arithmetic with sixes.")
    return ASK
