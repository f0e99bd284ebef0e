"""Schemathesis over the app's own OpenAPI document: every check, the stateful phase too.

What teams do from outside (`st run …/openapi.json -H "Authorization: Bearer …"
--checks all --phases examples,coverage,fuzzing,stateful`), against a real
`turnstream serve` on real Redis, seeded and derandomized so that every run
sends the same requests. The document must tell the whole truth: every status
an answer has is declared with its body and headers, every request the schemas
allow is served, every one they forbid is refused, and the links let the
stateful phase follow a conversation's life (create, send, resume, inspect,
stop, delete) with real ids, which the last assertion checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events
from servers import Server, create_token

SEED = 20261123
# Per operation and phase; about 500 cases in all, 10-15 s on 2 cores.
MAX_EXAMPLES = 4
STATEFUL_EXAMPLES = 30
STATEFUL_STEPS = 30
# What the stateful phase must answer with a run's real id (operationId: statuses): the
# events, the record, and a stop (of a run that has ended by then: 404 or 409).
RUN_ROUTES = {"resume|resume_post": {200}, "get_run": {200}, "stop": {200, 202, 404, 409}}


@pytest.fixture(scope="module")
def server(_redis_server_url, tmp_path_factory) -> Iterator[tuple[Server, str]]:
    """One `turnstream serve` for the module, alice's bearer token."""
    with redis.Redis.from_url(_redis_server_url) as client:
        client.flushall()
    tmp = tmp_path_factory.mktemp("fuzz")
    database_url = f"sqlite+aiosqlite:///{tmp}/fuzz.db"
    env = {
        "TURNSTREAM_REDIS_URL": _redis_server_url,
        "TURNSTREAM_DATABASE_URL": database_url,
        "TURNSTREAM_DATA_DIR": str(tmp / "data"),
        "TURNSTREAM_DEMO_WORDS": "8",
        "TURNSTREAM_DEMO_DELAY_MS": "5",
        # The fuzzer starts hundreds of runs a minute; past the limits it would only see 429s.
        "TURNSTREAM_RUNS_PER_MINUTE": "100000",
        "TURNSTREAM_MAX_ACTIVE_RUNS": "1000",
    }
    with Server(env, tmp / "serve.log") as proc:
        yield proc, create_token(database_url, "alice")


def _config(token: str) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "headers": {"Authorization": f"Bearer {token}"},
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
            "phases": {
                **{phase: {"enabled": True} for phase in ("examples", "coverage", "fuzzing")},
                # Valid calls (the other phases send the invalid ones), enough of them to
                # follow the links past a message, to its run.
                "stateful": {
                    "generation": {"mode": "positive", "max-examples": STATEFUL_EXAMPLES},
                    "max-steps": STATEFUL_STEPS,
                },
            },
        }
    )


def test_schemathesis_finds_nothing_with_every_check_and_the_stateful_phase(server):
    proc, token = server
    schema = schemathesis.openapi.from_url(f"{proc.url}/openapi.json", config=_config(token))
    failures, errors, reached = [], [], set()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.NonFatalError | events.FatalError):
            errors.append(str(getattr(event, "value", None) or event.exception))
        if not isinstance(event, events.ScenarioFinished):
            continue
        recorder = event.recorder
        for case_id, checks in recorder.checks.items():
            failures.extend(
                f"{recorder.cases[case_id].value.operation.label}: {check.name}: "
                f"{check.failure_info.failure.title}\n{check.failure_info.code_sample}"
                for check in checks
                if check.status == Status.FAILURE and check.failure_info is not None
            )
        if event.phase.value == "stateful":
            reached.update(_served_with_real_ids(recorder))
    assert not errors, "\n".join(errors)
    assert not failures, "\n\n".join(failures)
    missing = [
        route
        for route, statuses in RUN_ROUTES.items()
        if not any((op, status) in reached for op in route.split("|") for status in statuses)
    ]
    assert not missing, f"the stateful phase got no answer from {missing}: {sorted(reached)}"


def _served_with_real_ids(recorder: Any) -> Iterator[tuple[str, int]]:
    """(operationId, status) of each call the stateful phase made with values links gave it."""
    for case_id, node in recorder.cases.items():
        interaction = recorder.interactions.get(case_id)
        if node.transition is not None and interaction and interaction.response is not None:
            operation = node.value.operation.definition.raw.get("operationId", "")
            yield operation, interaction.response.status_code
