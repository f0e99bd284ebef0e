"""The Claude Agent SDK adapter, offline: the SDK's own `query()` over a scripted transport.

Claude Code needs the network, so the transport plays its part: it answers the
SDK's `initialize` control request, and for each user message it writes the
stdout lines Claude Code writes (stream events, assistant and user messages, a
result), which the SDK parses into its message types as usual.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

# An optional extra (its wheel bundles Claude Code, ~400 MB): scripts/test installs it;
# without it, these tests skip, and `-m "not claude"` leaves them out.
pytestmark = pytest.mark.claude
pytest.importorskip("claude_agent_sdk", reason="needs the extra: pip install -e '.[claude]'")

from claude_agent_sdk import ClaudeAgentOptions, Transport  # noqa: E402

from turnstream.agents.base import Agent, RunContext  # noqa: E402
from turnstream.agents.claude import from_claude  # noqa: E402
from turnstream.events import Event, EventType  # noqa: E402

from .adapter_support import (  # noqa: E402
    cancel_mid_stream,
    first_delta,
    kinds,
    make_ctx,
    of_type,
    run,
    stored_history,
    text_of,
    user,
)
from .claude_support import (  # noqa: E402
    Line,
    ScriptedClaude,
    assistant,
    result,
    streamed,
    text,
    tool_result,
    tool_use,
    weather_turn,
)


class Scripts:
    """One scripted Claude Code per run, in order; `used` keeps those that ran."""

    def __init__(self, *scripts: list[Line], stall: bool = False) -> None:
        self.scripts = list(scripts)
        self.stall = stall
        self.used: list[ScriptedClaude] = []

    def agent(self) -> Agent:
        return from_claude(ClaudeAgentOptions(max_turns=4), transport=self.connect)

    def connect(self, ctx: RunContext) -> Transport:
        self.used.append(ScriptedClaude(self.scripts.pop(0), stall=self.stall))
        return self.used[-1]


# Tests ---------------------------------------------------------------------------


async def test_text_reply_streams_deltas_that_make_the_text() -> None:
    claude = Scripts(
        [
            *streamed("msg_1", ("text", ["Hello there,", " nice to ", "meet you"])),
            assistant("msg_1", text("Hello there, nice to meet you")),
            result(text="Hello there, nice to meet you"),
        ]
    )
    events = await run(claude.agent(), [user("hi")])

    assert text_of(events) == "Hello there, nice to meet you"  # not twice
    assert len(of_type(events, EventType.DELTA)) == 3
    assert kinds(events) == [EventType.DELTA, EventType.USAGE]
    [query] = claude.used
    assert query.prompts[0]["message"] == {"role": "user", "content": "hi"}
    assert query.closed


async def test_tool_call_then_result_with_the_same_id_and_the_answer_uses_it() -> None:
    claude = Scripts(weather_turn("toolu_1", "Paris"))
    events = await run(claude.agent(), [user("Weather?")])

    assert kinds(events) == [
        EventType.REASONING,
        EventType.DELTA,
        EventType.TOOL_CALL,
        EventType.TOOL_RESULT,
        EventType.DELTA,
        EventType.USAGE,
    ]
    [call] = of_type(events, EventType.TOOL_CALL)
    [result_] = of_type(events, EventType.TOOL_RESULT)
    assert call.data["id"] == result_.data["id"] == "toolu_1"
    assert call.data["name"] == "WebSearch"
    assert json.loads(call.data["arguments"]) == {"query": "weather Paris"}
    assert result_.data == {"id": "toolu_1", "content": "sunny in Paris", "isError": False}
    assert "".join(e.data["text"] for e in of_type(events, EventType.REASONING)) == (
        "The user wants the weather."
    )
    assert text_of(events) == "Let me check.It is sunny in Paris."
    # Prompt tokens count the cached ones, which Anthropic reports apart.
    [usage] = of_type(events, EventType.USAGE)
    assert usage.data == {"prompt_tokens": 2140, "completion_tokens": 25}


async def test_a_failed_tool_is_a_tool_result_marked_as_an_error() -> None:
    claude = Scripts(
        [
            assistant("msg_1", tool_use("toolu_7", "Bash", command="cat missing.txt")),
            tool_result("toolu_7", "cat: missing.txt: No such file or directory", is_error=True),
            assistant("msg_2", text("The file is missing.")),
            result(),
        ]
    )
    events = await run(claude.agent(), [user("Show missing.txt")])

    [result_] = of_type(events, EventType.TOOL_RESULT)
    assert result_.data == {
        "id": "toolu_7",
        "content": "cat: missing.txt: No such file or directory",
        "isError": True,
    }
    # Text that came with no stream events (not streamed by the model) is still the reply.
    assert text_of(events) == "The file is missing."


async def test_an_error_result_is_an_error_event() -> None:
    claude = Scripts(
        [
            *streamed("msg_1", ("text", ["Working on it"])),
            assistant("msg_1", text("Working on it")),
            result(subtype="error_max_turns", is_error=True),
        ]
    )
    events = await run(claude.agent(), [user("Do a lot")])

    assert kinds(events) == [EventType.DELTA, EventType.USAGE, EventType.ERROR]
    [error] = of_type(events, EventType.ERROR)
    assert error.data["code"] == "error_max_turns"


async def test_subagent_messages_are_not_part_of_the_reply() -> None:
    claude = Scripts(
        [
            assistant("msg_1", tool_use("toolu_1", "Task", prompt="research")),
            assistant("msg_s", text("subagent notes"), parent="toolu_1"),
            assistant("msg_s", tool_use("toolu_s", "WebSearch", query="x"), parent="toolu_1"),
            tool_result("toolu_1", "research done"),
            assistant("msg_2", text("Done.")),
            result(),
        ]
    )
    events = await run(claude.agent(), [user("Research")])

    assert [e.data["id"] for e in of_type(events, EventType.TOOL_CALL)] == ["toolu_1"]
    assert text_of(events) == "Done."


async def test_second_turn_gives_claude_the_first_turns_tool_call_result_and_text() -> None:
    claude = Scripts(weather_turn("toolu_1", "Paris"), weather_turn("toolu_2", "Lyon"))
    agent = claude.agent()
    first = await run(agent, [user("Weather in Paris?")])
    history = stored_history("Weather in Paris?", first)
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]

    second = await run(agent, [*history, user("And Lyon?")])

    message = claude.used[1].prompts[0]["message"]
    assert message["role"] == "user"
    prompt = message["content"]
    arguments = of_type(first, EventType.TOOL_CALL)[0].data["arguments"]
    assert prompt == (
        "The conversation so far, for context (earlier turns, tool calls and their results):\n"
        "<conversation>\n"
        "<user>Weather in Paris?</user>\n"
        "<assistant>Let me check.</assistant>\n"
        f'<tool_call id="toolu_1" name="WebSearch">{arguments}</tool_call>\n'
        '<tool_result id="toolu_1">sunny in Paris</tool_result>\n'
        "<assistant>It is sunny in Paris.</assistant>\n"
        "</conversation>\n\n"
        "And Lyon?"
    )
    assert text_of(second) == "Let me check.It is sunny in Lyon."


async def test_cancelling_the_run_mid_stream_closes_the_transport() -> None:
    claude = Scripts(streamed("msg_1", ("text", ["Once upon"]))[:4], stall=True)
    seen = await cancel_mid_stream(claude.agent(), [user("a story")], first_delta)

    assert text_of(seen) == "Once upon"
    assert claude.used[0].closed


async def test_options_may_depend_on_the_run() -> None:
    chosen: list[ClaudeAgentOptions] = []

    def options(ctx: RunContext) -> ClaudeAgentOptions:
        chosen.append(ClaudeAgentOptions(cwd=f"/srv/chats/{ctx.user_id}"))
        return chosen[-1]

    claude = Scripts([assistant("msg_1", text("Hi")), result()])
    agent = from_claude(options, transport=claude.connect)
    events = await run(agent, [user("hi")])

    assert text_of(events) == "Hi"
    assert [str(o.cwd) for o in chosen] == ["/srv/chats/user_1"]


class AskingClaude(ScriptedClaude):
    """Also asks the SDK's permission callback about one call first, as Claude Code does for
    a tool its own rules do not allow; keeps the answers."""

    def __init__(self, script: list[Line], tool: str, arguments: dict[str, Any]) -> None:
        ask = {"subtype": "can_use_tool", "tool_name": tool, "input": arguments}
        super().__init__([{"type": "control_request", "request_id": "perm_1", "request": ask}])
        self.rest = script
        self.answers: list[dict[str, Any]] = []

    async def write(self, data: str) -> None:
        message = json.loads(data)
        if message["type"] == "control_response" and message["response"]["request_id"] == "perm_1":
            self.answers.append(message["response"]["response"])
            for line in self.rest:
                self._out.put_nowait(line)
            return
        await super().write(data)


@pytest.mark.parametrize(
    ("rule", "behavior", "says"),
    [
        ({"tool_deny": "Bash"}, "deny", "TURNSTREAM_TOOL_DENY"),
        ({"tool_approval": "Ba*"}, "deny", "cannot wait"),
        ({"tool_deny": "Write"}, "allow", None),
    ],
)
async def test_the_tool_policy_answers_claude_codes_permission_requests(rule, behavior, says):
    transports: list[AskingClaude] = []

    def connect(_ctx: RunContext) -> Transport:
        script = [assistant("msg_1", text("Done.")), result()]
        transports.append(AskingClaude(script, "Bash", {"command": "rm -r out"}))
        return transports[-1]

    agent = from_claude(ClaudeAgentOptions(max_turns=4), transport=connect)
    ctx = make_ctx([user("clean up")])
    ctx = dataclasses.replace(ctx, settings=ctx.settings.model_copy(update=rule))
    events = [
        Event(EventType.DELTA, {"text": e}) if isinstance(e, str) else e async for e in agent(ctx)
    ]

    [answer] = transports[0].answers
    assert answer["behavior"] == behavior
    if says is not None:
        assert says in answer["message"]
    assert text_of(events) == "Done."
