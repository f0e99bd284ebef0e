"""Claude's own sessions, kept by turnstream: turn 1 on worker A, turn 2 on worker B.

The SDK applies `resume` and materializes a stored transcript only for the Claude
Code program it starts itself (with a custom `transport` it skips both), so the
double stands in for that program: it replaces the SDK's `SubprocessCLITransport`
and gets the options the SDK built for it. Everything between is the SDK's own
code: `query()` mirrors the double's `transcript_mirror` frames to the session
store (`append`, flushed before the result), and for `resume` it `load`s the
transcript from the store into a temporary config directory and points the
program at it (`CLAUDE_CONFIG_DIR`), where the double reads it as Claude Code
would. Each worker has its own engine and its own local config directory, over
one database (SQLite and PostgreSQL).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.claude
pytest.importorskip("claude_agent_sdk", reason="needs the extra: pip install -e '.[claude]'")

from claude_agent_sdk import ClaudeAgentOptions, project_key_for_directory  # noqa: E402
from claude_agent_sdk._internal import client as sdk_client  # noqa: E402
from redis.asyncio import Redis  # noqa: E402
from sqlalchemy import delete  # noqa: E402

from turnstream.agents.base import Agent, RunContext  # noqa: E402
from turnstream.agents.claude import from_claude  # noqa: E402
from turnstream.events import Event, EventType  # noqa: E402
from turnstream.ids import uuid7  # noqa: E402
from turnstream.store.chats import ChatStore  # noqa: E402
from turnstream.store.claude_sessions import ClaudeSessions  # noqa: E402
from turnstream.store.db import create_engine, session_factory  # noqa: E402
from turnstream.store.models import ClaudeSessionEntry  # noqa: E402
from turnstream.store.users import ensure_user  # noqa: E402
from turnstream.store.views import NewMessage  # noqa: E402

from .adapter_support import SETTINGS, of_type, stored_history, text_of, user  # noqa: E402
from .claude_support import Line, ScriptedClaude, weather_turn  # noqa: E402


class PlayedClaudeCode(ScriptedClaude):
    """Claude Code as the SDK starts it (`SubprocessCLITransport(prompt=, options=)`):
    resumes `options.resume` from its config directory's transcript, writes each turn's
    entries there and mirrors them (`--session-mirror`), as `transcript_mirror` frames."""

    scripts: list[list[Line]] = []  # what the next programs answer, in order
    started: list[PlayedClaudeCode] = []

    def __init__(self, prompt: Any, options: ClaudeAgentOptions) -> None:
        super().__init__(self.scripts.pop(0))
        self.started.append(self)
        self.options = options
        self.session_id = options.resume or str(uuid.uuid4())
        config = Path(options.env["CLAUDE_CONFIG_DIR"])
        project = project_key_for_directory(options.cwd)
        self.file = config / "projects" / project / f"{self.session_id}.jsonl"
        self.resumed: list[dict[str, Any]] = []  # the transcript it resumed from

    async def connect(self) -> None:
        if self.options.resume:  # Claude Code exits when it finds no such session
            self.resumed = [json.loads(x) for x in self.file.read_text().splitlines()]

    async def write(self, data: str) -> None:
        message = json.loads(data)
        if message["type"] != "user":
            return await super().write(data)
        self.prompts.append(message)
        lines = [{**line, "session_id": self.session_id} for line in self.script]
        entries = self._entries([message, *lines])
        self.file.parent.mkdir(parents=True, exist_ok=True)
        with self.file.open("a") as transcript:
            transcript.writelines(json.dumps(e) + "\n" for e in entries)
        mirror = {"type": "transcript_mirror", "filePath": str(self.file), "entries": entries}
        for line in [*lines[:-1], mirror, lines[-1]]:  # the result last
            self._out.put_nowait(line)

    def _entries(self, lines: list[Line]) -> list[dict[str, Any]]:
        """The transcript's entries: the user and assistant messages, each with a uuid."""
        parent = self.resumed[-1]["uuid"] if self.resumed else None
        entries = []
        for line in lines:
            if line["type"] in ("user", "assistant"):
                entry_id = str(uuid.uuid4())
                entries.append(
                    {
                        "type": line["type"],
                        "uuid": entry_id,
                        "parentUuid": parent,
                        "sessionId": self.session_id,
                        "message": line["message"],
                    }
                )
                parent = entry_id
        return entries


class Chat:
    """A conversation in the database, its messages stored as a run stores them."""

    def __init__(self, store: ChatStore, cid: str) -> None:
        self.store = store
        self.cid = cid
        self.history: list[dict[str, Any]] = []

    async def ask(self, text: str) -> None:
        await self.store.save(cid=self.cid, message=NewMessage(id=uuid7(), **user(text)))
        self.history.append(user(text))

    async def answered(self, run_id: str, events: list[Event]) -> None:
        reply = stored_history(self.history[-1]["content"], events)[1:]
        messages = [NewMessage(**m, session_id=run_id) for m in reply]
        await self.store.save_run(cid=self.cid, session_id=run_id, messages=messages)
        self.history += reply


@pytest.fixture
async def chat(database_url: str, redis_url: str) -> AsyncIterator[Chat]:
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    redis = Redis.from_url(redis_url, decode_responses=True)
    async with sessions() as db, db.begin():
        await ensure_user(db, user_id="alice")
    store = ChatStore(sessions, redis, cache_ttl=60)
    yield Chat(store, (await store.create(user_id="alice")).id)
    await redis.aclose()
    await engine.dispose()


@pytest.fixture
def programs(monkeypatch) -> Callable[..., list[PlayedClaudeCode]]:
    def play(*scripts: list[Line]) -> list[PlayedClaudeCode]:
        monkeypatch.setattr(PlayedClaudeCode, "scripts", list(scripts))
        monkeypatch.setattr(PlayedClaudeCode, "started", [])
        monkeypatch.setattr(sdk_client, "SubprocessCLITransport", PlayedClaudeCode)
        return PlayedClaudeCode.started

    return play


class Worker:
    """One worker process: its own engine on the database, its own Claude config directory."""

    def __init__(self, database_url: str, config: Path, cwd: Path, *, limit: int = 1 << 20):
        self.engine = create_engine(database_url)
        self.sessions = session_factory(self.engine)
        self.limit = limit
        self.config = config
        self.agent: Agent = from_claude(
            lambda ctx: ClaudeAgentOptions(
                max_turns=4, cwd=str(cwd), env={"CLAUDE_CONFIG_DIR": str(config)}
            )
        )

    async def run(self, chat: Chat, run_id: str) -> list[Event]:
        ctx = RunContext(
            conversation_id=chat.cid,
            user_id="alice",
            session_id=run_id,
            message_id=uuid7(),
            message=chat.history[-1]["content"],
            history=list(chat.history),
            settings=SETTINGS,
            cancelled=lambda: False,
            claude_sessions=ClaudeSessions(self.sessions, chat.cid, limit=self.limit),
        )
        events = [e async for e in self.agent(ctx) if isinstance(e, Event)]
        await chat.answered(run_id, events)
        await self.engine.dispose()
        return events


def _blocks(entries: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [
        block
        for entry in entries
        if isinstance(entry["message"]["content"], list)
        for block in entry["message"]["content"]
        if block.get("type") == kind
    ]


async def test_turn_two_on_another_worker_resumes_turn_ones_session_with_its_tool_calls(
    chat, programs, database_url, tmp_path, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="turnstream.agents.claude")
    started = programs(weather_turn("toolu_1", "Paris"), weather_turn("toolu_2", "Lyon"))
    a = Worker(database_url, tmp_path / "a", tmp_path / "chats")
    b = Worker(database_url, tmp_path / "b", tmp_path / "chats")

    await chat.ask("Weather in Paris?")
    first = await a.run(chat, "run_1")
    await chat.ask("And Lyon?")
    second = await b.run(chat, "run_2")

    one, two = started
    assert one.options.resume is None and one.options.session_store is not None
    # The first turn's one line; none for the second.
    [line] = [
        r.getMessage() for r in caplog.records if "history goes in the prompt" in r.getMessage()
    ]
    assert "no Claude session kept for it yet" in line
    # Worker B resumed the session of worker A, from the store: its own directory has none.
    assert two.options.resume == one.session_id
    assert Path(two.options.env["CLAUDE_CONFIG_DIR"]) != b.config
    assert not (b.config / "projects").exists()
    # With turn 1's tool call and result as Claude Code's own blocks, and only the new
    # message in the prompt.
    [call] = _blocks(two.resumed, "tool_use")
    [answer] = _blocks(two.resumed, "tool_result")
    assert call["id"] == answer["tool_use_id"] == "toolu_1"
    assert answer["content"] == [{"type": "text", "text": "sunny in Paris"}]
    assert two.prompts[0]["message"] == {"role": "user", "content": "And Lyon?"}
    assert text_of(second) == "Let me check.It is sunny in Lyon."
    assert of_type(first, EventType.TOOL_CALL)[0].data["id"] == "toolu_1"
    # The store holds both turns under the one session, which the next turn resumes.
    state = await ClaudeSessions(a.sessions, chat.cid, limit=1 << 20).kept()
    await a.engine.dispose()
    assert (state.session_id, state.through_run) == (one.session_id, "run_2")


@pytest.mark.parametrize("broken", ["missing", "past the limit"])
async def test_a_missing_or_overfull_session_falls_back_to_the_transcript_and_says_so(
    chat, programs, database_url, tmp_path, caplog, broken
) -> None:
    started = programs(weather_turn("toolu_1", "Paris"), weather_turn("toolu_2", "Lyon"))
    limit = 300 if broken == "past the limit" else 1 << 20
    a = Worker(database_url, tmp_path / "a", tmp_path / "chats", limit=limit)
    b = Worker(database_url, tmp_path / "b", tmp_path / "chats", limit=limit)

    await chat.ask("Weather in Paris?")
    await a.run(chat, "run_1")
    if broken == "missing":
        async with b.sessions() as db, db.begin():
            await db.execute(delete(ClaudeSessionEntry))
    await chat.ask("And Lyon?")
    caplog.set_level(logging.INFO, logger="turnstream.agents.claude")
    second = await b.run(chat, "run_2")

    two = started[1]
    assert two.options.resume is None
    assert "<conversation>" in two.prompts[0]["message"]["content"]  # today's transcript
    why = "missing from the store" if broken == "missing" else "TURNSTREAM_CLAUDE_SESSION_BYTES"
    [line] = [
        r.getMessage() for r in caplog.records if "the history goes in the prompt" in r.getMessage()
    ]
    assert why in line
    assert text_of(second) == "Let me check.It is sunny in Lyon."
