"""potpie's routes in process: what they keep (on SQLite and PostgreSQL), and bad input
answered with a clear 4xx, after the same 401 and 403 checks as /api/v1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from api_support import api_for

from turnstream.config import Settings

BASE = "/potpie/api/v1/conversations"


async def test_what_potpie_ui_sends_is_kept_and_echoed(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=database_url, redis_url=redis_url, data_dir=tmp_path, potpie_compat=True
    )
    async with api_for(settings) as (http, headers, _app):
        body = {
            "user_id": "someone-else",  # ignored: the token says who
            "title": "Trip",
            "status": "archived",
            "project_ids": ["p1", "p2"],
            "agent_ids": ["a1"],
            "repo_name": "ignored/too",
        }
        created = await http.post(BASE, json=body, headers=headers)
        assert created.status_code == 200, created.text
        cid = created.json()["conversation_id"]
        info = (await http.get(f"{BASE}/{cid}/info", headers=headers)).json()
        assert (info["status"], info["project_ids"], info["agent_ids"]) == (
            "archived",
            ["p1", "p2"],
            ["a1"],
        )
        [item] = (await http.get(BASE, headers=headers)).json()
        assert (item["id"], item["agent_id"], item["project_ids"]) == (cid, "a1", ["p1", "p2"])
        native = (await http.get(f"/api/v1/conversations/{cid}", headers=headers)).json()
        assert native["user_id"] == "alice"
        assert native["metadata"] == {
            "potpie": {"status": "archived", "project_ids": ["p1", "p2"], "agent_ids": ["a1"]}
        }


BAD: list[tuple[str, str, dict[str, Any], int]] = [
    ("POST", "", {"json": {"title": "x" * 201}}, 422),
    ("POST", "", {"json": {"title": "a\x00b"}}, 422),
    ("POST", "", {"json": {"project_ids": "p1"}}, 422),
    ("POST", "", {"json": {"agent_ids": ["a"] * 101}}, 422),
    ("POST", "", {"json": {"status": "gone"}}, 422),
    ("POST", "", {"content": b'{"title": "\\ud800"}'}, 422),
    ("POST", "", {"content": b"{not json"}, 422),
    ("GET", "", {"params": {"start": -1}}, 422),
    ("GET", "", {"params": {"start": "abc"}}, 422),
    ("GET", "/{cid}/messages", {"params": {"limit": "x"}}, 422),
    ("PATCH", "/{cid}/rename", {"json": {}}, 422),
    ("POST", "/{cid}/message", {"files": {"content": (None, " ")}}, 400),
    ("POST", "/{cid}/message", {"content": b"hi", "headers": {"content-type": "text/plain"}}, 400),
    ("POST", "/{cid}/message", {"files": {"content": (None, "x" * 101)}}, 413),
    ("POST", "/{cid}/regenerate", {"json": {"node_ids": []}}, 409),
    ("POST", "/{cid}/resume/conversation:alice:x", {}, 404),
    ("POST", "/{cid}/stop", {}, 404),
    ("GET", "/{cid}/active-session", {}, 404),
    ("GET", "/not-a-uuid/info", {}, 403),
    ("PUT", "/{cid}/rename", {}, 405),
]


async def test_bad_input_gets_a_clear_4xx_after_the_credential(api: Any) -> None:
    async with api(potpie_compat=True, max_message_chars=100) as (http, headers, _app):
        cid = (await http.post(BASE, json={}, headers=headers)).json()["conversation_id"]
        for method, path, request, status in BAD:
            url = BASE + path.format(cid=cid)
            extra = request.get("headers", {})
            sent = {key: value for key, value in request.items() if key != "headers"}
            answer = await http.request(method, url, headers={**headers, **extra}, **sent)
            assert answer.status_code == status, (method, path, answer.text)
            assert isinstance(answer.json(), dict), (method, path)
            if status not in (403, 405):
                anonymous = await http.request(method, url, headers=extra, **sent)
                assert anonymous.status_code == 401, (method, path, anonymous.text)


async def test_a_large_limit_is_clamped_not_refused(api: Any) -> None:
    async with api(potpie_compat=True) as (http, headers, _app):
        await http.post(BASE, json={}, headers=headers)
        for limit in (10**30, 1000, 5):
            answer = await http.get(BASE, params={"limit": limit}, headers=headers)
            assert answer.status_code == 200 and len(answer.json()) == 1, answer.text
        answer = await http.get(BASE, params={"limit": -1}, headers=headers)
        assert answer.json() == []
