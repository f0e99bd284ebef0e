"""Issue 28's test: potpie-ui's requests (tests/api/potpie/potpie_ui.py) against a real
`turnstream serve` with TURNSTREAM_POTPIE_COMPAT=true.

One conversation goes through what a user does in potpie-ui: create, list, open, send
and see the reply equal to the stored one, a tool call, regenerate, stop, a reload mid-reply
(the whole reply shown once), history, rename, delete; another user sees none of it.
The app `serve` runs, built without the setting, answers every one of those requests 404.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from potpie_ui import Loaded, PotpieUI
from servers import Server, create_token

from turnstream.api.app import create_app
from turnstream.config import Settings

# About 0.75 s a reply: long enough to leave one midway, short enough for the suite.
WORDS = 30
DEMO = {"TURNSTREAM_DEMO_WORDS": str(WORDS), "TURNSTREAM_DEMO_DELAY_MS": "25"}
CALCULATE = '/tool calculator {"expression": "6*7"}'


def test_potpie_ui_runs_on_turnstream_unchanged(redis_url: str, tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path}/ts.db"
    env = {
        "TURNSTREAM_POTPIE_COMPAT": "true",
        "TURNSTREAM_REDIS_URL": redis_url,
        "TURNSTREAM_DATABASE_URL": database_url,
        "TURNSTREAM_DATA_DIR": str(tmp_path / "data"),
        "TURNSTREAM_TOOLS": "basic",
        **DEMO,
    }
    with (
        Server(env, tmp_path / "serve.log") as server,
        PotpieUI(f"{server.url}/potpie", create_token(database_url, "alice")) as alice,
        PotpieUI(f"{server.url}/potpie", create_token(database_url, "bob")) as bob,
    ):
        cid = _a_whole_conversation(alice)
        _another_user_sees_none_of_it(alice, bob)
        assert alice.delete(cid).json()["status"] == "success"
        assert alice.info(cid).status_code == 403 and alice.all_chats() == []
    off = Settings(database_url=database_url, data_dir=tmp_path / "off", potpie_compat=False)
    _without_the_setting_every_request_is_404(create_app(off), alice.requests)


def _a_whole_conversation(ui: PotpieUI) -> str:
    cid = ui.create("Trip", project_id="project-1", agent_id="codebase_qna_agent")
    [listed] = ui.all_chats()
    assert listed["id"] == cid
    assert (listed["title"], listed["status"], listed["agent_id"]) == (
        "Trip",
        "active",
        "codebase_qna_agent",
    )
    assert listed["project_ids"] == ["project-1"] and listed["created_at"] and listed["updated_at"]
    info = ui.info(cid).json()
    assert info["agent_ids"] == ["codebase_qna_agent"] and info["project_ids"] == ["project-1"]
    assert (info["title"], info["status"], info["total_messages"]) == ("Trip", "active", 0)
    assert info["is_creator"] is True and info["access_type"] == "write"

    reply = ui.send(cid, "hello")
    assert len(reply.text.split()) == WORDS
    assert _last_reply(ui, cid).text == reply.text

    _a_tool_call_is_shown(ui, cid)
    _stop_keeps_what_was_shown(ui, cid)
    _a_reload_mid_reply_shows_the_whole_reply_once(ui, cid)

    history = ui.history(cid)
    assert [m.sender for m in history] == ["user", "agent"] * 4
    assert [m.text for m in history if m.sender == "user"] == [
        "hello",
        CALCULATE,
        "stop me",
        "reload me",
    ]
    assert ui.info(cid).json()["total_messages"] == 8
    assert ui.rename(cid, "Trip to Lisbon").json()["status"] == "success"
    assert ui.all_chats()[0]["title"] == ui.info(cid).json()["title"] == "Trip to Lisbon"
    return cid


def _a_tool_call_is_shown(ui: PotpieUI, cid: str) -> None:
    reply = ui.send(cid, CALCULATE)
    [(call_id, call)] = reply.tool_calls.items()
    assert (call["tool_name"], call["event_type"], call["tool_response"]) == (
        "calculator",
        "result",
        "42",
    )
    assert call["tool_call_details"]["arguments"] == {"expression": "6*7"}
    stored = _last_reply(ui, cid)
    assert stored.text == reply.text and "42" in reply.text
    assert stored.tool_calls == {call_id: call}
    # Regenerate: the same question answered again, in place of that reply.
    again = ui.regenerate(cid)
    [(new_id, new_call)] = again.tool_calls.items()
    assert new_id != call_id and new_call["tool_response"] == "42"
    *_, question, answer = ui.history(cid)
    assert (question.text, answer.text, answer.tool_calls) == (
        CALCULATE,
        again.text,
        again.tool_calls,
    )


def _stop_keeps_what_was_shown(ui: PotpieUI, cid: str) -> None:
    """potpie-ui's stop button: it stops reading and asks the server to stop the run."""
    shown = ui.send(cid, "stop me", leave_after=2)
    stopped = ui.stop(cid)
    assert stopped.status_code == 200 and stopped.json()["status"] == "cancelled", stopped.text
    assert (ui.active_session(cid) or {}).get("status") == "idle"
    stored = _last_reply(ui, cid).text
    assert stored.startswith(shown.text) and len(stored.split()) < WORDS


def _a_reload_mid_reply_shows_the_whole_reply_once(ui: PotpieUI, cid: str) -> None:
    before = ui.send(cid, "reload me", leave_after=1)
    assert not before.complete and before.text
    # The page again: the history, then the question whether something is running.
    loaded = ui.history(cid)
    assert loaded[-1].sender == "user" and loaded[-1].text == "reload me"
    session = ui.active_session(cid)
    assert session is not None and session["status"] == "active"
    resumed = ui.resume(cid, session["sessionId"], session["cursor"] or "0-0")
    shown = [m.text for m in loaded] + [resumed.text]
    stored = _last_reply(ui, cid).text
    assert resumed.text == stored and len(stored.split()) == WORDS
    assert shown.count(stored) == 1


def _another_user_sees_none_of_it(alice: PotpieUI, bob: PotpieUI) -> None:
    [chat] = alice.all_chats()
    cid = chat["id"]
    assert bob.all_chats() == []
    sid = (alice.active_session(cid) or {})["sessionId"]
    for answer in (
        bob.info(cid),
        bob.call("GET", f"/conversations/{cid}/messages"),
        bob.call("POST", f"/conversations/{cid}/message", files={"content": (None, "hi")}),
        bob.call("POST", f"/conversations/{cid}/resume/{sid}"),
        bob.call("GET", f"/conversations/{cid}/active-session"),
        bob.call("GET", f"/conversations/{cid}/task-status"),
        bob.stop(cid),
        bob.rename(cid, "mine now"),
        bob.delete(cid),
    ):
        assert answer.status_code == 403, answer.text
        assert answer.json() == {"detail": "Access denied to conversation"}
    # Nor through a conversation of his own: the run is not his.
    own = bob.create("Bob's", project_id="p", agent_id="a")
    stolen = bob.call("POST", f"/conversations/{own}/resume/{sid}")
    assert stolen.status_code == 404, stolen.text
    assert alice.info(cid).json()["title"] == "Trip to Lisbon"


def _without_the_setting_every_request_is_404(app: FastAPI, made: list[tuple[str, str]]) -> None:
    """The requests potpie-ui made, at the app `serve` runs, built without the setting.

    Routing answers them before anything is opened: the app runs without its lifespan.
    """
    assert len({path.split("/")[-1] for _method, path in made}) >= 8, made  # all kinds
    http = TestClient(app, base_url="http://test/potpie/api/v1")
    for method, path in sorted(set(made)):
        answer = http.request(method, path)
        assert (answer.status_code, answer.json()) == (404, {"detail": "Not Found"}), path


def _last_reply(ui: PotpieUI, cid: str) -> Loaded:
    *_earlier, last = ui.history(cid)
    assert last.sender == "agent", last
    return last
