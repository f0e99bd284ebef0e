"""`turnstream check`: the configuration as `serve` and `worker` load it, and what they need,
tried now (as `nginx -t` does for nginx).

It prints every setting with its value (secrets masked) and where it came from,
then one line per check: the agent and the tools (and the sandbox, when a tool
needs it), the database (reachable, its schema at this version's head), Redis
(reachable; its version, AOF and eviction policy), the MCP servers (each started
and its tools listed) and the identity provider's keys when a JWKS URL is set.
Problems go to stderr, one line each, and the exit code is 1; deploy scripts
and systemd's `ExecStartPre` run it before a start.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import typer

from turnstream.cli.checks import CONNECT_TIMEOUT, cluster_problem, reason, schema_revision
from turnstream.cli.configured import loading_problems, redact, shown_value, variable
from turnstream.config import Settings

Check = Callable[[Settings], tuple[str, list[str]]]  # -> (what is fine, problems)


def run(settings: Settings, *, debug: bool) -> int:
    """Print the settings and the checks' results; the exit code."""
    _print_settings(settings)
    problems: list[str] = []
    checks: list[Check] = [_database, _redis, _mcp, _jwks]
    loaded = loading_problems(settings, runs_agents=True, debug=debug)
    _line("agent and tools", "loaded" if not loaded else "", loaded, problems)
    for check in checks:
        name = check.__name__.strip("_")
        fine, found = check(settings)
        _line(name, fine, found, problems)
    for problem in problems:
        typer.secho(problem, fg=typer.colors.RED, err=True)
    return 1 if problems else 0


def _print_settings(settings: Settings) -> None:
    typer.echo("Settings (secrets masked):")
    for name in Settings.model_fields:
        var = variable(name)
        source = "environment" if os.environ.get(var) else "default"
        typer.echo(f"  {var:<40} {shown_value(name, getattr(settings, name)):<30} {source}")
    typer.echo("Checks:")


def _line(name: str, fine: str, found: list[str], problems: list[str]) -> None:
    mark = "ok  " if not found else "FAIL"
    typer.echo(f"  {mark} {name}: {fine if not found else f'{len(found)} problem(s)'}")
    # Once each: the MCP file's problems are both the loading check's and the MCP check's.
    problems.extend(p for p in found if p not in problems)


def _database(settings: Settings) -> tuple[str, list[str]]:
    from turnstream.store import migrate
    from turnstream.store.db import sqlite_file

    url = settings.database_url
    spec = f"{variable('database_url')}={redact(url)}"
    try:
        path = sqlite_file(url)
    except Exception as exc:  # an unparsable URL
        return "", [f"{spec}: not a database URL ({reason(exc, url)})."]
    if path is not None and not path.exists():
        return f"SQLite database {path} is not there yet (`serve` creates it)", []
    try:
        current = asyncio.run(schema_revision(url))
    except Exception as exc:  # whatever it is, this database cannot be used now
        return "", [f"{spec}: cannot use it ({reason(exc, url)}); start it or correct the URL."]
    head = migrate.head_revision()
    if current != head:
        state = "has no tables" if current is None else f"is at schema revision {current}"
        return "", [f"{spec}: the database {state}; run `turnstream migrate` (head: {head})."]
    return f"{redact(url)}, schema at head ({head})", []


def _redis(settings: Settings) -> tuple[str, list[str]]:
    if settings.redis_url is None:
        return f"embedded (serve starts Valkey with its data in {settings.data_dir.resolve()})", []
    import redis

    url = settings.redis_url
    spec = f"{variable('redis_url')}={redact(url)}"
    if settings.redis_cluster:
        if problem := cluster_problem(url):
            return "", [f"{spec}: the Redis Cluster cannot be used: {problem}."]
        return f"{redact(url)}: a Redis Cluster, every slot covered", []
    try:
        client = redis.Redis.from_url(url, socket_timeout=CONNECT_TIMEOUT / 3)
        with client:
            info = client.info()
    except (redis.RedisError, OSError, ValueError) as exc:
        return "", [f"{spec}: cannot use it ({reason(exc, url)}); start Redis or correct it."]
    policy = info.get("maxmemory_policy", "noeviction")
    aof = "AOF on" if info.get("aof_enabled") else "AOF off (a restart loses live runs)"
    fine = (
        f"{redact(url)}: Redis {info.get('redis_version', '?')}, {aof}, maxmemory-policy {policy}"
    )
    if policy != "noeviction":
        why = "an evicted key is a lost run (docs/deploy.md)"
        return fine, [f"{spec}: maxmemory-policy is {policy}; set noeviction: {why}."]
    return fine, []


def _mcp(settings: Settings) -> tuple[str, list[str]]:
    if settings.mcp_config is None:
        return "no MCP servers (TURNSTREAM_MCP_CONFIG unset)", []
    from turnstream.mcp.catalog import mcp_problems

    problems = mcp_problems(settings)  # starts each server, lists its tools, stops it
    return f"every server in {settings.mcp_config} started and listed its tools", problems


def _jwks(settings: Settings) -> tuple[str, list[str]]:
    if settings.jwks_url is None:
        return "no JWKS URL (turnstream's own tokens and HS256 JWTs only)", []
    import httpx

    spec = f"{variable('jwks_url')}={settings.jwks_url}"
    try:
        response = httpx.get(settings.jwks_url, timeout=CONNECT_TIMEOUT)
        response.raise_for_status()
        keys = response.json()["keys"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        return "", [f"{spec}: cannot read its keys ({reason(exc, '')})."]
    return f"{len(keys)} key(s) at {settings.jwks_url}", []
