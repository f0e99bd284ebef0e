"""What potpie-ui's chat code does over HTTP, in Python: its requests, and its reading of
the answers (docs/potpie.md). Written from the description of potpie-ui in issue 28, not
from its source.

- a streamed reply is JSON objects one after another, read in whatever pieces the
  network gives: each complete object is taken, and from it `message` is appended to
  the text, `tool_calls` entries are merged by `call_id` (the newest event of a call
  wins) and `thinking` replaces the reasoning shown;
- the history maps each message by `type` (`HUMAN`: the user's, anything else: the
  agent's) and merges its tool calls by `call_id`, a result winning over its call;
- after a reload: `active-session`; if `active`, `resume` from its `cursor`, the
  reply appended to the history loaded.

Every request is recorded (`requests`), so that a test can make the same ones elsewhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Shown:
    """A reply as potpie-ui shows it."""

    text: str = ""
    tool_calls: dict[str, dict[str, Any]] = field(default_factory=dict)  # by call_id
    thinking: str | None = None
    complete: bool = True  # False: the client left before the stream ended

    def take(self, chunk: dict[str, Any]) -> None:
        if "message" in chunk:
            self.text += chunk["message"]
        for call in chunk.get("tool_calls") or []:
            self.tool_calls[call["call_id"]] = {**self.tool_calls.get(call["call_id"], {}), **call}
        if "thinking" in chunk:
            self.thinking = chunk["thinking"]


@dataclass
class Loaded:
    """A message of the history, as potpie-ui keeps it."""

    id: str
    text: str
    sender: str  # "user" or "agent"
    tool_calls: dict[str, dict[str, Any]]


def complete_objects(buffer: str) -> tuple[list[dict[str, Any]], str]:
    """The JSON objects complete in `buffer` (braces counted outside strings), and the rest."""
    objects, depth, start, in_string, escaped = [], 0, -1, False, False
    for i, char in enumerate(buffer):
        if in_string:
            escaped, in_string = (False, True) if escaped else (char == "\\", char != '"')
            continue
        if char == '"':
            in_string = True
        elif char == "{":
            start = i if depth == 0 else start
            depth += 1
        elif char == "}" and depth:
            depth -= 1
            if depth == 0:
                objects.append(json.loads(buffer[start : i + 1]))
    return objects, buffer[start:] if depth else ""


class PotpieUI:
    """One signed-in user of potpie-ui, its base URL `{server}/potpie`."""

    def __init__(self, base_url: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=f"{base_url}/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=15,
        )
        self.requests: list[tuple[str, str]] = []

    def __enter__(self) -> PotpieUI:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        self.requests.append((method, path))
        return self.http.request(method, path, **kwargs)

    def create(self, title: str, project_id: str, agent_id: str) -> str:
        body = {
            "user_id": "whoever-the-page-thinks",
            "title": title,
            "status": "active",
            "project_ids": [project_id],
            "agent_ids": [agent_id],
        }
        answer = self.call("POST", "/conversations", json=body)
        answer.raise_for_status()
        return str(answer.json()["conversation_id"])

    def all_chats(self) -> list[dict[str, Any]]:
        answer = self.call("GET", "/conversations", params={"start": 0, "limit": 1000})
        answer.raise_for_status()
        return list(reversed(answer.json()))

    def info(self, cid: str) -> httpx.Response:
        return self.call("GET", f"/conversations/{cid}/info")

    def history(self, cid: str) -> list[Loaded]:
        answer = self.call(
            "GET", f"/conversations/{cid}/messages", params={"start": 0, "limit": 1000}
        )
        answer.raise_for_status()
        loaded = []
        for message in answer.json():
            calls: dict[str, dict[str, Any]] = {}
            for call in message.get("tool_calls") or []:
                if call["call_id"] not in calls or call["event_type"] in ("result", "error"):
                    calls[call["call_id"]] = call
            sender = "user" if message["type"] == "HUMAN" else "agent"
            loaded.append(Loaded(message["id"], message["content"] or "", sender, calls))
        return loaded

    def send(self, cid: str, text: str, *, leave_after: int | None = None) -> Shown:
        """Post `text` and read the reply; with `leave_after`, leave after that many chunks."""
        form = {"content": (None, text), "node_ids": (None, "[]")}
        params = {"stream": "true", "session_id": f"conversation:current_user_id:{cid}"}
        path = f"/conversations/{cid}/message"
        return self._read("POST", path, leave_after, files=form, params=params)

    def regenerate(self, cid: str) -> Shown:
        params = {"stream": "true", "background": "true"}
        path = f"/conversations/{cid}/regenerate"
        return self._read("POST", path, None, json={"node_ids": []}, params=params)

    def stop(self, cid: str) -> httpx.Response:
        return self.call("POST", f"/conversations/{cid}/stop", json={})

    def active_session(self, cid: str) -> dict[str, Any] | None:
        answer = self.call("GET", f"/conversations/{cid}/active-session")
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        return dict(answer.json())

    def resume(self, cid: str, session_id: str, cursor: str) -> Shown:
        path = f"/conversations/{cid}/resume/{session_id}"
        return self._read("POST", path, None, params={"cursor": cursor})

    def rename(self, cid: str, title: str) -> httpx.Response:
        return self.call("PATCH", f"/conversations/{cid}/rename", json={"title": title})

    def delete(self, cid: str) -> httpx.Response:
        return self.call("DELETE", f"/conversations/{cid}")

    def _read(self, method: str, path: str, leave_after: int | None, **kwargs: Any) -> Shown:
        self.requests.append((method, path))
        shown, buffer, taken = Shown(), "", 0
        with self.http.stream(method, path, **kwargs) as answer:
            if answer.status_code != 200:
                answer.read()
                raise AssertionError(f"{method} {path}: {answer.status_code} {answer.text}")
            for piece in answer.iter_text():
                chunks, buffer = complete_objects(buffer + piece)
                for chunk in chunks:
                    shown.take(chunk)
                taken += len(chunks)
                if leave_after is not None and taken >= leave_after:
                    shown.complete = False
                    return shown  # a reload: the connection closes mid-reply
        assert not buffer.strip(), f"an incomplete object at the end: {buffer!r}"
        return shown
