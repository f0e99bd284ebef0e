"""All of turnstream's settings, in one class.

Every field can be set with a `TURNSTREAM_<NAME>` environment variable; the CLI's
flags write into the same object. Times are in seconds unless the name says `_ms`.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DATABASE_SCHEMES = ("sqlite+aiosqlite://", "postgresql+asyncpg://")


class Settings(BaseSettings):
    # An empty variable counts as unset: `TURNSTREAM_REDIS_URL=` means embedded mode.
    model_config = SettingsConfigDict(
        env_prefix="TURNSTREAM_", extra="ignore", env_ignore_empty=True
    )

    # Storage. No redis_url means embedded mode: `serve` starts its own server.
    # The data directory holds the embedded Valkey's files and, unless database_url
    # says otherwise, the SQLite database. Relative to the current directory, like a
    # project's `.git`: `serve` and `token` agree when run from the same directory (or
    # with the same TURNSTREAM_DATA_DIR); the CLI prints the absolute paths it uses.
    data_dir: Path = Path(".turnstream")
    # Default: <data_dir>/turnstream.db, as an absolute path. (Derived when the object
    # is built: a model_copy that changes data_dir keeps the old database_url.)
    database_url: str = Field(
        default_factory=lambda data: default_database_url(data.get("data_dir", ".turnstream"))
    )
    redis_url: str | None = None
    # redis_url names one node of a Redis Cluster (7+: sharded pub/sub); the client finds
    # the others. docs/cluster.md.
    redis_cluster: bool = False

    # Auth. Opaque bearer tokens always work; HS256 JWTs too when a secret is set.
    jwt_secret: str | None = None
    # How long an API process trusts a token it has checked: a revoked token keeps
    # working on running servers for at most this long (0: check every request).
    token_cache_seconds: float = Field(10.0, ge=0)
    # Signs the short-lived stream tokens; unset: a random key kept in Redis.
    secret_key: str | None = None
    # Sign-in from an identity provider (api/jwks.py): with a JWKS URL set, asymmetric
    # JWTs (RS256, ES256, ...) signed with the keys it publishes are accepted too. The
    # issuer and audience are checked when set; the user id is the claim `jwt_user_claim`.
    jwks_url: str | None = Field(None, pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://\S+$")
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_user_claim: str = Field("sub", min_length=1)
    # The keys are fetched again after `jwks_cache_seconds`, or earlier for a token with
    # a key id they lack; but never more than once per `jwks_refetch_seconds`.
    jwks_cache_seconds: float = Field(300.0, gt=0)
    jwks_refetch_seconds: float = Field(10.0, gt=0)

    # Agents (SPEC §9).
    agent: str = "demo"
    demo_words: int = Field(60, ge=1, le=100_000)
    demo_delay_ms: int = Field(40, ge=0, le=60_000)
    openai_base_url: str | None = None
    openai_api_key: str | None = None
    openai_model: str = "gpt-4o-mini"
    # The tool loop (agents/toolloop.py). `tools`: the functions the agent offers the
    # model, comma-separated: short names (`basic`: clock, calculator, echo; `workspace`:
    # the file tools) and `package.module:attr` (a function or a list of them).
    tools: str | None = None
    tool_timeout_seconds: float = Field(30.0, gt=0)  # per call; on expiry an error result
    tool_output_chars: int = Field(16_000, ge=100)  # a longer result is cut, with a note
    # Model calls per run; a run whose last one still asks for tools ends with `error`
    # (code `step_limit`).
    max_steps: int = Field(10, ge=1, le=1000)
    # Which calls run (agents/policy.py, docs/approvals.md): tool names, comma-separated,
    # `*` wildcards. A denied call gets an error result; an asked one waits for the user
    # (`approval_request`) with no worker held, and counts as denied once
    # `approval_ttl_seconds` have passed without an answer.
    tool_deny: str | None = Field(None, max_length=4096)
    tool_approval: str | None = Field(None, max_length=4096)
    tool_policy: str | None = Field(None, max_length=512)  # package.module:callable
    approval_ttl_seconds: int = Field(86_400, ge=1, le=30 * 86_400)
    # Passed to OpenAI-style models as `reasoning_effort` (`minimal`, `low`, `medium`,
    # `high`, ...; unset: the model's default); PydanticAI gets it as its model setting.
    reasoning_effort: str | None = Field(None, pattern=r"^[a-z]{1,16}$")

    # Long conversations (turnstream/context/, docs/long-conversations.md). The history an
    # agent gets is fitted to `context_tokens` (unset: the model's window, from a table in
    # context/budget.py, else 32,000) less `reserve_tokens`, kept for the reply and for
    # what the token estimate misses. To fit, the tool results older than the newest
    # `context_keep_tool_results` are cut to `context_tool_result_chars` characters, then
    # the oldest turns are summarised by `summary_model` (unset: openai_model) in at most
    # `summary_tokens` tokens, and the summary is stored for later turns.
    context_tokens: int | None = Field(None, ge=1000)
    reserve_tokens: int = Field(4096, ge=0)
    context_keep_tool_results: int = Field(3, ge=0)
    context_tool_result_chars: int = Field(2000, ge=100)
    summary_model: str | None = None
    summary_tokens: int = Field(1000, ge=100, le=100_000)
    # The Claude Agent SDK adapter keeps each conversation's Claude Code session in SQL
    # (store/claude_sessions.py), at most this many bytes of transcript; past it, the next
    # turn starts a new session from the fitted history. 0: no session is kept.
    claude_session_bytes: int = Field(16 * 1024 * 1024, ge=0)
    # MCP servers whose tools join the tool loop as `mcp__SERVER__TOOL` (turnstream/mcp/,
    # docs/mcp.md): a JSON file in the `mcpServers` format of Claude Desktop and Claude
    # Code. A server has `mcp_start_seconds` to start and list its tools.
    mcp_config: Path | None = None
    mcp_start_seconds: float = Field(10.0, gt=0, le=600)

    # The conversation's workspace (store/workspace.py): a write past a limit gets 413
    # (or an error result for a tool) and stores nothing.
    workspace_file_bytes: int = Field(10 * 1024 * 1024, ge=1)
    workspace_bytes: int = Field(100 * 1024 * 1024, ge=1)
    workspace_files: int = Field(1000, ge=1)
    # How long the signed download link of a `file` event (or a listing) opens its file.
    file_link_seconds: int = Field(3600, ge=1, le=7 * 24 * 3600)

    # The sandbox of the `bash` tool (turnstream/sandbox/): bubblewrap, no network, and
    # these limits; a limit that cannot be applied stops the call. Past the wall time the
    # whole sandbox is killed (the call's `timeout` argument may lower it).
    sandbox_timeout_seconds: float = Field(30.0, gt=0, le=3600)
    sandbox_cpu_seconds: int = Field(30, ge=1)  # CPU time of each process
    sandbox_memory_bytes: int = Field(1024 * 1024 * 1024, ge=16 * 1024 * 1024)  # each process
    # All its processes together (resident memory): past it, the sandbox is killed.
    sandbox_total_memory_bytes: int = Field(2 * 1024 * 1024 * 1024, ge=16 * 1024 * 1024)
    sandbox_file_bytes: int = Field(64 * 1024 * 1024, ge=1024)  # any one file it writes
    sandbox_tmp_bytes: int = Field(256 * 1024 * 1024, ge=1024 * 1024)  # its /tmp (in memory)
    sandbox_open_files: int = Field(256, ge=16)  # per process
    sandbox_processes: int = Field(64, ge=4)  # at once, in one call
    # Output past this (stdout and stderr together) stops the command.
    sandbox_output_bytes: int = Field(1024 * 1024, ge=1024)
    # A virtualenv (or any folder with bin/python3) bound read-only at /opt/venv and put
    # first on the sandbox's PATH: how commands get Python packages the host's /usr lacks.
    sandbox_python: Path | None = None

    # The `web_fetch` tool (turnstream/fetch/). Private, loopback and link-local addresses
    # are refused unless `fetch_private` lists their network (CIDRs, comma-separated);
    # `fetch_allow` (hosts, `*.example.org`, comma-separated) limits the hosts; unset, any
    # public host.
    fetch_timeout_seconds: float = Field(15.0, gt=0, le=300)  # the whole fetch, redirects too
    fetch_bytes: int = Field(2 * 1024 * 1024, ge=1024)  # a larger body stops the download
    fetch_allow: str | None = None
    fetch_private: str | None = None

    # Caches and retention.
    session_ttl: int = Field(12 * 3600, ge=1)
    stream_ttl: int = Field(15 * 60, ge=1)
    stream_maxlen: int = Field(10_000, ge=1)
    # A run's events are archived to SQL when it ends (runs/archiver.py) and kept this
    # long: resume replays them after Redis dropped them, and active-session/task-status
    # answer for the run. 0: no archive.
    archive_retention: int = Field(30 * 24 * 3600, ge=0)
    max_message_chars: int = Field(64_000, ge=1)

    # Runs.
    lease_seconds: float = Field(6.0, gt=0)
    reaper_interval: float = Field(1.0, gt=0)
    # A queued run that could start (its message accepted, or the run it waited for
    # ended) and that no worker has claimed within `claim_seconds` is handed out again
    # by a reaper that can run it; one still unclaimed `not_started_seconds` after that
    # ends with `error` (`not_started`), so that it never blocks its conversation.
    claim_seconds: float = Field(15.0, gt=0)
    not_started_seconds: float = Field(300.0, ge=0)
    cancel_poll_seconds: float = Field(0.25, gt=0)
    delta_flush_ms: int = Field(25, ge=0)
    stop_wait_seconds: float = Field(10.0, ge=0)
    default_run_seconds: float = Field(30.0, gt=0)
    ping_seconds: float = Field(15.0, gt=0)
    queue_name: str = "turnstream:runs"
    worker_concurrency: int = Field(100, ge=1)
    # How long a SIGTERMed `turnstream worker` lets its runs in flight finish after it
    # stops taking new ones; runs still going then end with `error` (`worker_stopped`),
    # their partial replies stored. Keep it a few seconds under the orchestrator's kill
    # timeout (Kubernetes: terminationGracePeriodSeconds, 30 s by default).
    worker_grace_seconds: float = Field(20.0, ge=0)
    # After SIGTERM a `serve` takes no new connections, ends each open event stream with
    # a `server_shutdown` notice (clients resume elsewhere), and lets other requests
    # finish for up to this long before it exits.
    drain_seconds: float = Field(10.0, ge=0)

    # Abuse limits, per user.
    runs_per_minute: int = Field(30, ge=1)
    max_active_runs: int = Field(5, ge=1)
    # Request header bytes (names, values, ": " and CRLF) past which a request gets 431.
    max_header_bytes: int = Field(16 * 1024, ge=1024, le=1024 * 1024)

    # Metrics and logs (docs/operations.md). /metrics: with a token, to its bearer; without,
    # to loopback clients only, unless public. Worker processes' on their own port.
    metrics_token: str | None = None
    metrics_public: bool = False
    worker_metrics_port: int | None = Field(None, ge=1, le=65535)
    worker_metrics_host: str = "127.0.0.1"
    log_format: Literal["text", "json"] = "text"

    # Compatibility. potpie-ui's shapes under /potpie/api/v1 (api/potpie/, docs/potpie.md);
    # /api/v1 is the same either way.
    potpie_compat: bool = False

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, url: str) -> str:
        if not url.startswith(DATABASE_SCHEMES):
            raise ValueError(
                "turnstream runs on SQLite (sqlite+aiosqlite:///path/to/file.db) or "
                "PostgreSQL (postgresql+asyncpg://user:password@host/database)"
            )
        return url

    @field_validator("redis_cluster")
    @classmethod
    def _a_node_of_it(cls, cluster: bool, info: ValidationInfo) -> bool:
        if cluster and not info.data.get("redis_url"):
            raise ValueError("needs TURNSTREAM_REDIS_URL: the URL of any node of the cluster")
        return cluster

    @field_validator("sandbox_python")
    @classmethod
    def _a_virtualenv(cls, path: Path | None) -> Path | None:
        if path is not None and not (path / "bin" / "python3").exists():
            raise ValueError(f"{path} has no bin/python3: give a virtualenv's folder")
        return path

    @cached_property
    def embedded(self) -> bool:
        return self.redis_url is None

    @property
    def has_openai_endpoint(self) -> bool:
        """An OpenAI-compatible endpoint is configured (a key or a base URL)."""
        return self.openai_api_key is not None or self.openai_base_url is not None


def default_database_url(data_dir: Path | str) -> str:
    """The database used when TURNSTREAM_DATABASE_URL is unset: <data_dir>/turnstream.db."""
    return f"sqlite+aiosqlite:///{Path(data_dir).resolve() / 'turnstream.db'}"
