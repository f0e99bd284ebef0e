"""Prometheus metrics: what each process counts, and the text a scrape gets
(docs/operations.md, "Metrics and logs").

Counted where it happens, in the process where it happens: runs ended (by status),
their duration and time to first event, events written, SSE clients, resumes,
reaper actions, errors met talking to Redis or the database. Read from Redis when
scraped, the same on every process (`Live`, filled by the /metrics route): runs
running, runs queued and the age of the queue's head.

Processes. Each process keeps its own numbers: an API process serves them at
`/metrics`; `turnstream worker` serves its worker processes' together on
TURNSTREAM_WORKER_METRICS_PORT (cli/worker_metrics.py). Both use
prometheus-client's multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set
before the process starts: every process that shares the directory writes its
numbers there, and any scrape of one of them returns the sum.

This module imports only prometheus_client, so that every layer may count.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

T = TypeVar("T")

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
# What generate_latest writes: the text format every Prometheus reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

RUNS = Counter("turnstream_runs_total", "Runs ended, by final status.", ["status"])
RUN_SECONDS = Histogram(
    "turnstream_run_duration_seconds",
    "From a run's creation (its message accepted) to its end, by final status.",
    ["status"],
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
FIRST_EVENT_SECONDS = Histogram(
    "turnstream_time_to_first_event_seconds",
    "From a run's creation to the first event of its agent written to its stream.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
EVENTS = Counter(
    "turnstream_events_written_total",
    "Agent events the executors wrote to run streams (consecutive deltas merged), by type.",
    ["type"],
)
SSE_CLIENTS = Gauge(
    "turnstream_sse_clients",
    "Clients following a run's events (SSE) right now.",
    multiprocess_mode="livesum",
)
RESUMES = Counter(
    "turnstream_resumes_total",
    "Resume requests, by where they resume from (start: 0-0 or no cursor; cursor: "
    "?cursor=; last_event_id: the Last-Event-ID header) and HTTP status.",
    ["cursor", "status"],
)
REAPER_ACTIONS = Counter(
    "turnstream_reaper_actions_total",
    "What the reapers did: worker_lost (a lapsed lease ended), requeued (a queued run "
    "handed out again), not_started (a queued run no worker took, ended).",
    ["action"],
)
BACKEND_ERRORS = Counter(
    "turnstream_backend_errors_total",
    "Errors met talking to a backing service (redis, database, identity_provider).",
    ["backend"],
)


class _Typed(Protocol):
    @property
    def type(self) -> str: ...


def run_ended(status: str, *, created_at_ms: int, ended_at_ms: int) -> None:
    """A run ended with `status` (counted once: by whoever's finish script won)."""
    RUNS.labels(status).inc()
    RUN_SECONDS.labels(status).observe(max(0, ended_at_ms - created_at_ms) / 1000)


def events_written(events: Iterable[_Typed], first: bool, created_at_ms: int) -> None:
    """A batch of a run's events is in Redis; `first`: the run's first batch."""
    for event in events:
        EVENTS.labels(str(event.type)).inc()
    if first:
        FIRST_EVENT_SECONDS.observe(max(0.0, time.time() - created_at_ms / 1000))


async def sse_client(stream: AsyncIterator[T]) -> AsyncIterator[T]:
    """`stream`, counted in SSE_CLIENTS from its first item asked for until it is closed."""
    SSE_CLIENTS.inc()
    try:
        async for item in stream:
            yield item
    finally:
        SSE_CLIENTS.dec()


def resumed(cursor: str, status: int) -> None:
    RESUMES.labels(cursor, str(status)).inc()


def reaper_action(action: str, count: int = 1) -> None:
    REAPER_ACTIONS.labels(action).inc(count)


# Where an error comes from, by the names of its classes and their modules.
_BACKENDS = (
    ("redis", ("RedisUnavailable",), ("redis.",)),
    ("database", ("DatabaseUnavailable",), ("sqlalchemy.", "asyncpg.", "aiosqlite.", "sqlite3")),
    ("identity_provider", ("IdentityProviderUnavailable",), ("jwt.",)),
)


def backend_error(exc: BaseException) -> None:
    """`exc` was met talking to Redis, the database or the identity provider: count it."""
    BACKEND_ERRORS.labels(backend_of(exc)).inc()


def backend_of(exc: BaseException) -> str:
    for cls in type(exc).__mro__:
        for backend, names, modules in _BACKENDS:
            if cls.__name__ in names or f"{cls.__module__}.".startswith(modules):
                return backend
    return "other"


@dataclass(frozen=True)
class Live:
    """What the /metrics route read from Redis for this scrape (keys.py's indexes)."""

    active_runs: int  # ZCARD chat:leases: runs running, on any worker
    queued_runs: int  # ZCARD chat:queued: runs waiting for a worker or for their turn
    queue_head_age_seconds: float  # since the creation of the run due first; 0 when none

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "turnstream_active_runs", "Runs running now, on any worker.", self.active_runs
        )
        yield GaugeMetricFamily(
            "turnstream_queued_runs",
            "Runs queued now: waiting for a worker, or for the conversation's previous run.",
            self.queued_runs,
        )
        yield GaugeMetricFamily(
            "turnstream_queue_oldest_age_seconds",
            "Age of the queued run due first (the head of chat:queued); 0 when none is queued.",
            self.queue_head_age_seconds,
        )


def exposition(live: Live | None) -> bytes:
    """This process's metrics (all processes' sharing PROMETHEUS_MULTIPROC_DIR), and `live`."""
    text = generate_latest(_registry())
    return text + generate_latest(live) if live is not None else text


def _registry() -> CollectorRegistry:
    directory = os.environ.get(MULTIPROC_DIR)
    if not directory:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry
