"""Agents: the built-in `demo` and `openai`, or your own as `package.module:callable`."""

from __future__ import annotations

import importlib

from turnstream.agents.base import Agent, AgentEvent, RunContext

__all__ = ["Agent", "AgentEvent", "RunContext", "load_agent"]


def load_agent(spec: str) -> Agent:
    """Resolve `TURNSTREAM_AGENT`: a built-in name or `package.module:callable`."""
    if spec == "demo":
        from turnstream.agents.demo import demo_agent

        return demo_agent
    if spec == "openai":
        from turnstream.agents.openai import openai_agent

        return openai_agent
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(
            f"Unknown agent {spec!r}: use 'demo', 'openai' or 'package.module:callable'"
        )
    agent: Agent = getattr(importlib.import_module(module_name), attr)
    return agent
