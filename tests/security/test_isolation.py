"""The 403 rule (SPEC §6) on every conversation route, enumerated from the app itself.

A conversation that does not exist, belongs to another user, or whose id is
malformed gives exactly `403 {"detail":"Access denied to conversation"}`.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from api_support import served_routes

API = "/api/v1/conversations"
PREFIX = API + "/{cid}"
DENIED = {"detail": "Access denied to conversation"}
UNKNOWN_CID = "019953dd-6de7-7f7a-bf64-96c54db89201"
# A well-formed session id of nobody's run, for routes that take one.
OTHER_SID = "conversation:alice:019953dd-7000-7a00-8000-000000000001"


def _openapi_routes(app) -> list[tuple[str, str]]:
    """(method, path) of every documented operation under /conversations/{cid}."""
    routes = []
    for path, operations in app.openapi()["paths"].items():
        if path == PREFIX or path.startswith(PREFIX + "/"):
            routes += [(method.upper(), path) for method in operations if method != "parameters"]
    return sorted(routes)


def _hidden_aliases(app) -> list[tuple[str, str]]:
    """Routes served but left out of the OpenAPI document (aliases such as POST /message)."""
    return sorted(served_routes(app, PREFIX) - set(_openapi_routes(app)))


async def _request(client, headers, method: str, template: str, cid: str, sid: str):
    url = template.replace("{cid}", cid).replace("{session_id}", quote(sid, safe=""))
    kwargs = {}
    if method == "PATCH":
        kwargs["json"] = {"title": "taken over"}
    elif method == "POST" and "/message" in template:
        kwargs["data"] = {"content": "let me in"}
    return await client.request(method, url, headers=headers, **kwargs)


async def _alice_with_a_run(client, make_token) -> tuple[dict, str, str]:
    alice = await make_token("alice")
    cid = (await client.post(API, headers=alice, json={"title": "private"})).json()["id"]
    reply = await client.post(
        f"{API}/{cid}/message/?stream=false", headers=alice, data={"content": "secret"}
    )
    assert reply.status_code == 200, reply.text
    return alice, cid, reply.headers["x-session-id"]


async def _assert_denied_everywhere(app, client, headers, cid: str, sid: str) -> int:
    routes = _openapi_routes(app) + _hidden_aliases(app)
    for method, template in routes:
        response = await _request(client, headers, method, template, cid, sid)
        what = f"{method} {template} with cid={cid[:60]!r}"
        assert response.status_code == 403, f"{what}: {response.status_code} {response.text}"
        assert response.json() == DENIED, what
    return len(routes)


async def test_openapi_enumeration_covers_every_conversation_route(app):
    documented = _openapi_routes(app)
    assert len(documented) >= 9, documented
    for expected in [
        ("GET", PREFIX),
        ("PATCH", PREFIX),
        ("DELETE", PREFIX),
        ("GET", PREFIX + "/messages"),
        ("POST", PREFIX + "/message/"),
        ("POST", PREFIX + "/regenerate"),
        ("GET", PREFIX + "/active-session"),
        ("GET", PREFIX + "/task-status"),
        ("GET", PREFIX + "/resume/{session_id}"),
        ("POST", PREFIX + "/stop"),
        ("GET", PREFIX + "/runs/{session_id}"),
    ]:
        assert expected in documented, expected


async def test_another_users_conversation_is_403_on_every_route(app, client, make_token):
    alice, cid, sid = await _alice_with_a_run(client, make_token)
    bob = await make_token("bob")
    checked = await _assert_denied_everywhere(app, client, bob, cid, sid)
    assert checked >= 9
    # Bob changed nothing: same title, same messages, the run is untouched.
    conversation = (await client.get(f"{API}/{cid}", headers=alice)).json()
    assert conversation["title"] == "private"
    assert [m["content"] for m in conversation["messages"]][:1] == ["secret"]
    assert len(conversation["messages"]) == 2
    run = await client.get(f"{API}/{cid}/runs/{sid}", headers=alice)
    assert run.status_code == 200, run.text
    assert run.json()["status"] == "completed"
    # And bob's own list does not show it.
    assert (await client.get(API, headers=bob)).json() == {"items": [], "total": 0}


async def test_a_session_of_another_conversation_is_not_reachable_through_your_own(
    client, make_token
):
    alice, alice_cid, alice_sid = await _alice_with_a_run(client, make_token)
    bob = await make_token("bob")
    bob_cid = (await client.post(API, headers=bob)).json()["id"]
    for url in (f"{API}/{bob_cid}/runs/{alice_sid}", f"{API}/{bob_cid}/resume/{alice_sid}"):
        response = await client.get(url, headers=bob)
        assert response.status_code == 404, (url, response.text)
        assert response.json() == {
            "error": "Session not found or expired",
            "conversationId": bob_cid,
        }
    stopped = await client.post(f"{API}/{bob_cid}/stop?session_id={alice_sid}", headers=bob)
    assert stopped.status_code == 404, stopped.text
    assert "secret" not in stopped.text
    assert (await client.get(f"{API}/{alice_cid}/messages", headers=alice)).status_code == 200


async def test_an_unknown_conversation_is_403_on_every_route(app, client, make_token):
    alice, _cid, sid = await _alice_with_a_run(client, make_token)
    assert await _assert_denied_everywhere(app, client, alice, UNKNOWN_CID, sid) >= 9


@pytest.mark.parametrize(
    "cid",
    [
        pytest.param("not-a-uuid", id="not-a-uuid"),
        pytest.param("x" * 500, id="500-chars"),
        pytest.param("019953DD-6DE7-7F7A-BF64-96C54DB89201", id="upper-case-uuid"),
        pytest.param("019953dd6de77f7abf6496c54db89201", id="uuid-without-dashes"),
        pytest.param("%27%20OR%201%3D1--", id="sql-ish"),
        pytest.param("%00", id="nul"),
        pytest.param("%2E%2E", id="dot-dot"),
    ],
)
async def test_a_malformed_conversation_id_is_403_on_every_route(app, client, make_token, cid):
    alice, _cid, sid = await _alice_with_a_run(client, make_token)
    assert await _assert_denied_everywhere(app, client, alice, cid, sid) >= 9


async def test_a_cid_with_a_trailing_newline_is_403(app, client, make_token):
    alice, cid, sid = await _alice_with_a_run(client, make_token)
    assert await _assert_denied_everywhere(app, client, alice, cid + "%0A", sid) >= 9


async def test_a_path_traversal_cid_is_403_on_every_route(app, client, make_token):
    alice, _cid, sid = await _alice_with_a_run(client, make_token)
    assert await _assert_denied_everywhere(app, client, alice, "..%2Fx", sid) >= 9


async def test_a_path_traversal_cid_never_reaches_another_conversation(client, make_token):
    _alice, cid, _sid = await _alice_with_a_run(client, make_token)
    bob = await make_token("bob")
    bob_cid = (await client.post(API, headers=bob)).json()["id"]
    for sneaky in (f"{bob_cid}%2F..%2F{cid}", f"..%2F{cid}", f"{cid}%2F"):
        for suffix in ("", "/messages"):
            url = f"{API}/{sneaky}{suffix}"
            response = await client.get(url, headers=bob, follow_redirects=True)
            assert response.status_code in (403, 404), (sneaky, suffix, response.text)
            assert "secret" not in response.text
            assert "private" not in response.text
