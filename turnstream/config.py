"""All of turnstream's settings, in one class.

Every field can be set with a `TURNSTREAM_<NAME>` environment variable; the CLI's
flags write into the same object. Times are in seconds unless the name says `_ms`.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    # An empty variable counts as unset: `TURNSTREAM_REDIS_URL=` means embedded mode.
    model_config = SettingsConfigDict(
        env_prefix="TURNSTREAM_", extra="ignore", env_ignore_empty=True
    )

    # Storage. No redis_url means embedded mode: `serve` starts its own server.
    database_url: str = "sqlite+aiosqlite:///turnstream.db"
    redis_url: str | None = None
    data_dir: Path = Path(".turnstream")

    # Auth. Opaque bearer tokens always work; HS256 JWTs too when a secret is set.
    jwt_secret: str | None = None
    # Signs the short-lived stream tokens; unset: a random key kept in Redis.
    secret_key: str | None = None

    # Agents (SPEC §9).
    agent: str = "demo"
    demo_words: int = Field(60, ge=1, le=100_000)
    demo_delay_ms: int = Field(40, ge=0, le=60_000)
    openai_base_url: str | None = None
    openai_api_key: str | None = None
    openai_model: str = "gpt-4o-mini"

    # Caches and retention.
    session_ttl: int = 12 * 3600
    stream_ttl: int = 15 * 60
    stream_maxlen: int = 10_000
    max_message_chars: int = 64_000

    # Runs.
    lease_seconds: float = 6.0
    reaper_interval: float = 1.0
    cancel_poll_seconds: float = 0.25
    delta_flush_ms: int = 20
    stop_wait_seconds: float = 10.0
    default_run_seconds: float = 30.0
    ping_seconds: float = 15.0
    queue_name: str = "turnstream:runs"
    worker_concurrency: int = Field(100, ge=1)
    # How long a SIGTERMed `turnstream worker` lets its runs in flight finish after it
    # stops taking new ones; runs still going then end with `error` (`worker_stopped`),
    # their partial replies stored. Keep it a few seconds under the orchestrator's kill
    # timeout (Kubernetes: terminationGracePeriodSeconds, 30 s by default).
    worker_grace_seconds: float = Field(20.0, ge=0)

    # Abuse limits, per user.
    runs_per_minute: int = Field(30, ge=1)
    max_active_runs: int = Field(5, ge=1)
    # Request header bytes (names, values, ": " and CRLF) past which a request gets 431.
    max_header_bytes: int = Field(16 * 1024, ge=1024, le=1024 * 1024)

    @cached_property
    def embedded(self) -> bool:
        return self.redis_url is None
