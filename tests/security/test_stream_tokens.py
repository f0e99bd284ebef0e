"""Stream tokens: `EventSource` resumes with `?token=`, and the token opens nothing else."""

from __future__ import annotations

from sse import parse_sse

from turnstream.live import tokens as stream_tokens


async def _conversation_with_a_run(client, headers):
    cid = (await client.post("/api/v1/conversations", headers=headers)).json()["id"]
    response = await client.post(
        f"/api/v1/conversations/{cid}/message/?stream=true", headers=headers, data={"content": "hi"}
    )
    return cid, parse_sse(response.text)


async def _token(client, headers, cid):
    response = await client.post(f"/api/v1/conversations/{cid}/stream-token", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_resume_with_a_stream_token_and_no_header(client, make_token):
    alice = await make_token("alice")
    cid, events = await _conversation_with_a_run(client, alice)
    issued = await _token(client, alice, cid)
    sid = events[0].data["sessionId"]
    resumed = await client.get(
        f"/api/v1/conversations/{cid}/resume/{sid}", params={"token": issued["token"]}
    )
    assert resumed.status_code == 200
    assert parse_sse(resumed.text) == events
    assert isinstance(issued["expiresAt"], int)


async def test_a_stream_token_opens_only_its_conversations_resume_route(client, make_token):
    alice = await make_token("alice")
    cid, _events = await _conversation_with_a_run(client, alice)
    other_cid, other_events = await _conversation_with_a_run(client, alice)
    token = (await _token(client, alice, cid))["token"]
    other_sid = other_events[0].data["sessionId"]
    elsewhere = await client.get(
        f"/api/v1/conversations/{other_cid}/resume/{other_sid}", params={"token": token}
    )
    assert elsewhere.status_code == 401
    for method, path in (
        ("GET", f"/api/v1/conversations/{cid}/messages"),
        ("GET", f"/api/v1/conversations/{cid}/active-session"),
        ("POST", f"/api/v1/conversations/{cid}/stop"),
        ("GET", "/api/v1/conversations"),
    ):
        response = await client.request(method, path, params={"token": token})
        assert response.status_code == 401, (method, path)


async def test_tampered_expired_or_foreign_stream_tokens_are_refused(client, make_token, app):
    alice, bob = await make_token("alice"), await make_token("bob")
    cid, events = await _conversation_with_a_run(client, alice)
    sid = events[0].data["sessionId"]
    url = f"/api/v1/conversations/{cid}/resume/{sid}"
    token = (await _token(client, alice, cid))["token"]
    body, _, signature = token.partition(".")
    key = await stream_tokens.signing_key(app.state.runtime.redis, None)
    expired, _ = stream_tokens.issue(key, user_id="alice", cid=cid, ttl_seconds=-1)
    forged, _ = stream_tokens.issue(b"not the key", user_id="alice", cid=cid)
    for bad in (f"{body}.{signature[:-2]}xx", f"{body}x.{signature}", expired, forged, "junk"):
        response = await client.get(url, params={"token": bad})
        assert response.status_code == 401, bad
        assert "stream token" in response.json()["detail"]
    # Bob cannot get a token for alice's conversation.
    refused = await client.post(f"/api/v1/conversations/{cid}/stream-token", headers=bob)
    assert refused.status_code == 403
