"""Conversations and their messages over HTTP (SPEC §6, §8): plain CRUD and paging."""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest
from api_support import client_for
from sqlalchemy import func, select

from turnstream import keys
from turnstream.keys import RunKeys
from turnstream.store.models import Message, Run

API = "/api/v1/conversations"
UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


async def _create(client, headers, **body) -> dict:
    response = await client.post(API, headers=headers, json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def _post(client, headers, cid: str, content: str):
    response = await client.post(
        f"{API}/{cid}/message/?stream=false", headers=headers, data={"content": content}
    )
    assert response.status_code == 200, response.text
    return response


def _assert_4xx_json(response, status: int = 422) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json().get("detail")


# -- create ------------------------------------------------------------------------


async def test_create_returns_201_with_the_conversation(client, alice):
    response = await client.post(API, headers=alice)
    assert response.status_code == 201, response.text
    body = response.json()
    assert UUID7.match(body["id"]), body["id"]
    assert body["user_id"] == "alice"
    assert isinstance(body["title"], str) and body["title"].strip()
    assert body["metadata"] == {}
    assert body["prompt_tokens"] == 0
    assert body["completion_tokens"] == 0
    created = datetime.fromisoformat(body["created_at"])
    assert created.tzinfo is not None
    assert datetime.fromisoformat(body["updated_at"]) >= created


async def test_create_with_an_empty_json_body_uses_the_default_title(client, alice):
    default = (await client.post(API, headers=alice)).json()["title"]
    assert (await _create(client, alice))["title"] == default


async def test_create_with_title_and_metadata(client, alice):
    metadata = {"model": "demo", "tags": ["a", "b"], "nested": {"n": 1, "ok": True}}
    body = await _create(client, alice, title="Trip to Kyōto 🚄", metadata=metadata)
    assert body["title"] == "Trip to Kyōto 🚄"
    assert body["metadata"] == metadata
    fetched = (await client.get(f"{API}/{body['id']}", headers=alice)).json()
    assert fetched["title"] == "Trip to Kyōto 🚄"
    assert fetched["metadata"] == metadata


async def test_create_accepts_a_title_of_200_characters(client, alice):
    assert (await _create(client, alice, title="t" * 200))["title"] == "t" * 200


async def test_ids_are_distinct_and_time_ordered(client, alice):
    ids = [(await _create(client, alice))["id"] for _ in range(5)]
    assert len(set(ids)) == 5
    assert ids == sorted(ids)


# -- list ------------------------------------------------------------------------


async def test_list_is_newest_first_with_total(client, alice, make_token):
    created = [(await _create(client, alice, title=f"c{i}"))["id"] for i in range(3)]
    await _create(client, await make_token("bob"), title="bob's")
    listed = await client.get(API, headers=alice)
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert set(body) == {"items", "total"}
    assert body["total"] == 3
    assert [c["id"] for c in body["items"]] == created[::-1]
    assert all(c["user_id"] == "alice" for c in body["items"])


async def test_list_pages_with_limit_and_offset(client, alice):
    created = [(await _create(client, alice, title=f"c{i}"))["id"] for i in range(5)]
    newest_first = created[::-1]
    seen = []
    for offset in (0, 2, 4):
        page = (await client.get(f"{API}?limit=2&offset={offset}", headers=alice)).json()
        assert page["total"] == 5
        seen += [c["id"] for c in page["items"]]
    assert seen == newest_first
    beyond = (await client.get(f"{API}?limit=2&offset=10", headers=alice)).json()
    assert beyond == {"items": [], "total": 5}


async def test_list_of_a_new_user_is_empty(client, alice):
    assert (await client.get(API, headers=alice)).json() == {"items": [], "total": 0}


# -- get -------------------------------------------------------------------------


async def test_get_includes_the_messages(client, alice):
    conversation = await _create(client, alice, title="Hello")
    cid = conversation["id"]
    empty = await client.get(f"{API}/{cid}", headers=alice)
    assert empty.status_code == 200, empty.text
    assert empty.json()["messages"] == []
    assert empty.json()["title"] == "Hello"
    assert empty.json()["id"] == cid
    reply = (await _post(client, alice, cid, "hi there")).json()
    full = (await client.get(f"{API}/{cid}", headers=alice)).json()
    assert [m["role"] for m in full["messages"]] == ["user", "assistant"]
    assert full["messages"][0]["content"] == "hi there"
    assert full["messages"][1]["id"] == reply["id"]
    assert full["messages"][1]["content"] == reply["content"]
    assert full["messages"][1]["status"] == "complete"


# -- rename ----------------------------------------------------------------------


async def test_rename_changes_the_title_everywhere(client, alice):
    cid = (await _create(client, alice, title="Old"))["id"]
    # Read first, so that a cached copy exists and must follow the rename.
    assert (await client.get(f"{API}/{cid}", headers=alice)).json()["title"] == "Old"
    renamed = await client.patch(f"{API}/{cid}", headers=alice, json={"title": "New"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["title"] == "New"
    assert renamed.json()["id"] == cid
    assert (await client.get(f"{API}/{cid}", headers=alice)).json()["title"] == "New"
    listed = (await client.get(API, headers=alice)).json()
    assert [c["title"] for c in listed["items"]] == ["New"]


async def test_rename_keeps_the_messages(client, alice):
    cid = (await _create(client, alice))["id"]
    await _post(client, alice, cid, "keep me")
    await client.patch(f"{API}/{cid}", headers=alice, json={"title": "Renamed"})
    fetched = (await client.get(f"{API}/{cid}", headers=alice)).json()
    assert fetched["title"] == "Renamed"
    assert fetched["messages"][0]["content"] == "keep me"
    assert len(fetched["messages"]) == 2


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="no-title"),
        pytest.param({"title": ""}, id="empty"),
        pytest.param({"title": "x" * 201}, id="201-chars"),
        pytest.param({"title": None}, id="null"),
        pytest.param({"title": 5}, id="number"),
        pytest.param({"title": "ok", "owner": "bob"}, id="unknown-field"),
    ],
)
async def test_rename_with_bad_input_is_422(client, alice, body):
    cid = (await _create(client, alice, title="Stays"))["id"]
    response = await client.patch(f"{API}/{cid}", headers=alice, json=body)
    _assert_4xx_json(response)
    assert (await client.get(f"{API}/{cid}", headers=alice)).json()["title"] == "Stays"


# -- delete ----------------------------------------------------------------------


async def test_delete_removes_the_conversation_its_messages_and_keys(app, client, alice):
    cid = (await _create(client, alice))["id"]
    other = (await _create(client, alice, title="other"))["id"]
    reply = await _post(client, alice, cid, "to be deleted")
    sid = reply.headers["x-session-id"]
    await _post(client, alice, other, "stays")
    await client.get(f"{API}/{cid}", headers=alice)  # fill the cache
    rt = app.state.runtime
    assert await rt.redis.exists(keys.active(cid), keys.session_cache(cid)) == 2

    deleted = await client.delete(f"{API}/{cid}", headers=alice)
    assert deleted.status_code == 204, deleted.text
    assert deleted.content == b""

    denied = {"detail": "Access denied to conversation"}
    for url in (f"{API}/{cid}", f"{API}/{cid}/messages"):
        response = await client.get(url, headers=alice)
        assert response.status_code == 403, (url, response.text)
        assert response.json() == denied
    again = await client.delete(f"{API}/{cid}", headers=alice)
    assert again.status_code == 403
    listed = (await client.get(API, headers=alice)).json()
    assert [c["id"] for c in listed["items"]] == [other]
    assert listed["total"] == 1

    async with rt.sessions() as db:
        count = select(func.count()).select_from(Message).where(Message.conversation_id == cid)
        assert (await db.execute(count)).scalar_one() == 0
        runs = select(func.count()).select_from(Run).where(Run.conversation_id == cid)
        assert (await db.execute(runs)).scalar_one() == 0
    k = RunKeys(cid, sid)
    doomed = (keys.active(cid), k.stream, k.status, k.run, k.cancel)
    assert [name for name in doomed if await rt.redis.exists(name)] == []
    # The cached copy is gone; at most a content-free tombstone stays, so that no
    # late writer can bring the conversation back into the cache.
    cached = await rt.redis.get(keys.session_cache(cid))
    if cached is not None:
        assert set(json.loads(cached)) == {"version", "stale"}, cached
    # The other conversation is untouched.
    kept = (await client.get(f"{API}/{other}/messages", headers=alice)).json()["items"]
    assert [m["role"] for m in kept] == ["user", "assistant"]


# -- messages --------------------------------------------------------------------


async def test_messages_are_paged_back_by_sequence(client, alice):
    cid = (await _create(client, alice))["id"]
    for text in ("one", "two", "three"):
        await _post(client, alice, cid, text)
    everything = (await client.get(f"{API}/{cid}/messages", headers=alice)).json()["items"]
    assert [m["sequence"] for m in everything] == [0, 1, 2, 3, 4, 5]
    assert [m["content"] for m in everything if m["role"] == "user"] == ["one", "two", "three"]
    assert [m["role"] for m in everything] == ["user", "assistant"] * 3

    pages, before = [], None
    while True:
        query = "limit=2" + (f"&before={before}" if before is not None else "")
        response = await client.get(f"{API}/{cid}/messages?{query}", headers=alice)
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        if not items:
            break
        pages.append([m["sequence"] for m in items])
        before = items[0]["sequence"]
    assert pages == [[4, 5], [2, 3], [0, 1]]
    page = (await client.get(f"{API}/{cid}/messages?limit=2&before=3", headers=alice)).json()
    assert [(m["sequence"], m["content"]) for m in page["items"]] == [
        (1, everything[1]["content"]),
        (2, "two"),
    ]


async def test_messages_of_a_new_conversation_are_empty(client, alice):
    cid = (await _create(client, alice))["id"]
    response = await client.get(f"{API}/{cid}/messages", headers=alice)
    assert response.status_code == 200
    assert response.json() == {"items": []}


# -- bad input -------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=1000", "limit=-1", "limit=abc", "offset=-1", "offset=x", "limit=1.5"],
)
async def test_list_with_bad_paging_is_422(client, alice, query):
    _assert_4xx_json(await client.get(f"{API}?{query}", headers=alice))


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=1000", "limit=-1", "before=-1", "before=x", "before=99999999999"]
)
async def test_messages_with_bad_paging_is_422(client, alice, query):
    cid = (await _create(client, alice))["id"]
    _assert_4xx_json(await client.get(f"{API}/{cid}/messages?{query}", headers=alice))


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"title": "x" * 201}, id="201-char-title"),
        pytest.param({"title": ""}, id="empty-title"),
        pytest.param({"title": ["a"]}, id="title-not-a-string"),
        pytest.param({"title": "ok", "user_id": "bob"}, id="unknown-field-user_id"),
        pytest.param({"name": "x"}, id="unknown-field-name"),
        pytest.param({"metadata": "x"}, id="metadata-not-an-object"),
        pytest.param({"metadata": {str(i): i for i in range(65)}}, id="metadata-65-keys"),
        pytest.param([], id="a-list"),
        pytest.param("title", id="a-string"),
    ],
)
async def test_create_with_bad_input_is_422_and_creates_nothing(client, alice, body):
    _assert_4xx_json(await client.post(API, headers=alice, json=body))
    assert (await client.get(API, headers=alice)).json()["total"] == 0


async def test_create_with_invalid_json_is_422(client, alice):
    response = await client.post(
        API, headers={**alice, "Content-Type": "application/json"}, content=b'{"title": '
    )
    _assert_4xx_json(response)
    assert (await client.get(API, headers=alice)).json()["total"] == 0


# -- text that is not Unicode ------------------------------------------------------


@pytest.fixture
async def lenient_client(app):
    """A client that gets the app's 500 as a response instead of the exception."""
    async with client_for(app, raise_app_exceptions=False) as http:
        yield http


async def test_create_with_a_lone_surrogate_in_the_title_is_4xx(lenient_client, alice):
    headers = {**alice, "Content-Type": "application/json"}
    response = await lenient_client.post(API, headers=headers, content=b'{"title": "\\ud800"}')
    assert 400 <= response.status_code < 500, response.text
    assert (await lenient_client.get(API, headers=alice)).json()["total"] == 0


async def test_metadata_with_a_lone_surrogate_never_breaks_the_list(lenient_client, alice):
    headers = {**alice, "Content-Type": "application/json"}
    body = b'{"metadata": {"note": "\\ud800"}}'
    created = await lenient_client.post(API, headers=headers, content=body)
    listed = await lenient_client.get(API, headers=alice)
    assert created.status_code in (201, 400, 422), created.text
    assert listed.status_code == 200, listed.text
