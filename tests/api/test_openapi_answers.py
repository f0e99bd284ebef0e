"""The OpenAPI document declares the answers errors.py really gives, and links runs' ids.

Every error class of `REFUSALS` is answered (`errors.answer`) with the status,
a body of the schema and the headers the document declares for it, and every
/api/v1 operation declares what any request may get (401, 431, 503).
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.responses import JSONResponse

from turnstream import errors as e
from turnstream.api import errors
from turnstream.api.app import create_app

# One instance of each class that api/errors.py answers itself.
SAMPLES: list[e.TurnstreamError] = [
    e.Unauthorized("Invalid token."),
    e.AccessDenied(),
    e.UnknownPath(),
    e.SessionNotFound("c"),
    e.NoActiveSession("c"),
    e.NoBackgroundTask("c"),
    e.NoActiveRun("c"),
    e.FileNotFound("a.md"),
    e.NothingToRegenerate("c"),
    e.InvalidMessage("The message is empty."),
    e.InvalidCursor("A cursor is a stream entry id such as 1704123456789-0."),
    e.InvalidPath("../a", "it has an empty, '.' or '..' segment"),
    e.InvalidUpload("The upload has no `file` part."),
    e.MessageTooLong(64000),
    e.WorkspaceFull("The file is over the limit", limit=10, setting="TURNSTREAM_WORKSPACE_BYTES"),
    e.RunConflict(active_session_id="s", conversation_id="c"),
    e.ReplyReplaced(session_id="s2", replaced_session_id="s", conversation_id="c"),
    e.CursorExpired(session_id="s", resync_cursor="1-0"),
    e.CursorAhead(session_id="s", newest="1-0"),
    e.NotANewMessage("The newest of `messages` is the assistant's", conversation_id="c"),
    e.RunEndedFirst(status="completed", session_id="s", conversation_id="c"),
    e.PathConflict("a/b", "a"),
    e.ApprovalNotFound(approval_id="a", conversation_id="c"),
    e.ApprovalDecided(approval_id="a", session_id="s", approved=False),
    e.ApprovalDecided(approval_id="a", session_id="s", approved=None),
    e.RateLimited(retry_after=3, per_minute=30),
    e.ActiveRunLimit(5),
    e.RedisUnavailable(),
    e.DatabaseUnavailable(),
    e.IdentityProviderUnavailable(),
]


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app().openapi()


def test_every_answered_error_is_sampled():
    answered = {cls for cls in errors.REFUSALS if issubclass(cls, e.TurnstreamError)}
    assert answered == {type(sample) for sample in SAMPLES}


@pytest.mark.parametrize("error", SAMPLES, ids=lambda error: type(error).__name__)
def test_each_error_is_answered_as_the_document_declares_it(error):
    declared = errors.REFUSALS[type(error)]
    response = errors.answer(error)
    assert isinstance(response, JSONResponse)
    assert response.status_code == declared.status
    assert declared.body is not None
    declared.body.model_validate_json(response.body)
    for header in declared.headers:
        assert header.lower() in response.headers, header


def test_every_api_operation_declares_what_any_request_may_get(document):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            statuses = set(operation["responses"])
            must = {"431"} | ({"401", "503"} if path.startswith("/api/v1/") else set())
            assert must <= statuses, f"{method} {path}: {sorted(statuses)}"
            if "{cid}" in path or operation["operationId"] == "chat":
                assert "403" in statuses, f"{method} {path}"


def test_a_new_conversation_and_a_message_link_to_where_their_ids_go(document):
    operations = {
        op["operationId"]: op for item in document["paths"].values() for op in item.values()
    }
    created = operations["create_conversation"]["responses"]["201"]["links"]
    assert created["post_message"]["parameters"] == {"path.cid": "$response.body#/id"}
    assert created["chat"]["requestBody"] == {"id": "$response.body#/id"}
    assert "resume" not in created  # it needs a run's id too
    sent = operations["post_message"]["responses"]["200"]["links"]
    assert set(sent) == {"resume", "resume_post", "get_run", "stop"}
    assert sent["stop"]["parameters"] == {
        "path.cid": "$request.path.cid",
        "query.session_id": "$response.header.X-Session-Id",
    }


def test_optional_parameters_are_never_null(document):
    resume = document["paths"]["/api/v1/conversations/{cid}/resume/{session_id}"]["get"]
    cursor = next(p for p in resume["parameters"] if p["name"] == "cursor")
    assert cursor["schema"]["type"] == "string"
    assert "anyOf" not in cursor["schema"]
