"""The openai agent's tool loop, against the scripted fake server (tests/fake_openai.py).

Every request the loop makes is checked with OpenAI's transcript rules by the
server (the `fake` fixture fails a test in which one was refused). The tools
are in toolbox.py, registered as TURNSTREAM_TOOLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
from fake_openai import FakeServer, serving, text_reply, tool_reply
from openai_rules import check_transcript

from turnstream.agents.base import AgentEvent
from turnstream.agents.openai import OpenAIAgentError, openai_agent
from turnstream.agents.tools import load_tools
from turnstream.errors import Misconfigured
from turnstream.events import Event, EventType

from . import toolbox
from .support import HISTORY, TOOLS, make_ctx, of_type, run, settings_for


def results_by_id(events: list[AgentEvent]) -> dict[str, dict[str, Any]]:
    return {r.data["id"]: r.data for r in of_type(events, EventType.TOOL_RESULT)}


def text_of(events: list[AgentEvent]) -> str:
    return "".join(d.data["text"] for d in of_type(events, EventType.DELTA))


def kinds(events: list[AgentEvent]) -> list[str]:
    return [e.type.value for e in events if isinstance(e, Event)]


async def test_two_steps_call_a_tool_then_answer_with_its_result(fake: FakeServer) -> None:
    fake.script = [
        tool_reply(("call_1", "get_weather", '{"city": "Paris"}'), usage=(20, 5)),
        text_reply("It is sunny in Paris.", usage=(35, 6)),
    ]

    events = await run(make_ctx(settings_for(fake.base_url, tools=TOOLS)))

    assert kinds(events) == ["usage", "tool_call", "tool_result", "delta", "delta", "usage"]
    assert results_by_id(events) == {
        "call_1": {"id": "call_1", "content": "sunny, 21 C in Paris", "isError": False}
    }
    assert text_of(events) == "It is sunny in Paris."
    usage = of_type(events, EventType.USAGE)
    assert sum(u.data["prompt_tokens"] for u in usage) == 55
    assert sum(u.data["completion_tokens"] for u in usage) == 11
    # The second model call gets the assistant's tool call and the tool's result appended.
    assert len(fake.requests) == 2
    call = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert fake.requests[1]["messages"] == [
        *HISTORY,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": call}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C in Paris"},
    ]
    assert toolbox.state.calls == [("get_weather", {"city": "Paris", "unit": "C"})]


async def test_registered_tools_are_sent_with_their_schemas(fake: FakeServer) -> None:
    await run(make_ctx(settings_for(fake.base_url, tools=TOOLS)))

    tools = {t["function"]["name"]: t for t in fake.requests[0]["tools"]}
    assert set(tools) == {t.__name__ for t in toolbox.TOOLS}
    assert tools["get_weather"] == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "the city's name, such as Paris."},
                    "unit": {"type": "string", "description": "C or F.", "default": "C"},
                },
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }
    assert "ctx" not in tools["whoami"]["function"]["parameters"]["properties"]


async def test_without_tools_no_tools_are_sent(fake: FakeServer) -> None:
    await run(make_ctx(settings_for(fake.base_url)))

    assert "tools" not in fake.requests[0]


async def test_calls_of_one_step_run_concurrently(fake: FakeServer) -> None:
    fake.script = [tool_reply(("a", "nap_a", "{}"), ("b", "nap_b", "{}")), text_reply("Rested.")]

    events = await run(make_ctx(settings_for(fake.base_url, tools=TOOLS)))

    assert set(results_by_id(events)) == {"a", "b"}
    (start_a, end_a), (start_b, end_b) = toolbox.state.spans["nap_a"], toolbox.state.spans["nap_b"]
    assert max(start_a, start_b) < min(end_a, end_b)  # each started before the other ended
    assert max(end_a, end_b) - min(start_a, start_b) < 0.55  # in turn: at least 0.6 s


async def test_a_tool_past_its_timeout_is_cancelled_and_gives_an_error(fake: FakeServer) -> None:
    fake.script = [tool_reply(("call_1", "hang", "{}")), text_reply("Too slow.")]

    events = await run(make_ctx(settings_for(fake.base_url, tools=TOOLS, tool_timeout_seconds=0.2)))

    result = results_by_id(events)["call_1"]
    assert result["isError"] is True
    assert result["content"] == "hang timed out after 0.2 s"
    assert toolbox.state.cancelled and toolbox.state.finished.is_set()
    assert text_of(events) == "Too slow."


async def test_an_exception_is_an_error_result_and_the_run_goes_on(fake: FakeServer) -> None:
    fake.script = [
        tool_reply(
            ("bad", "explode", '{"reason": "no fuel"}'), ("good", "add", '{"a": 2, "b": 3}')
        ),
        text_reply("One failed."),
    ]

    events = await run(make_ctx(settings_for(fake.base_url, tools=TOOLS)))

    results = results_by_id(events)
    assert results["bad"]["isError"] is True
    assert results["bad"]["content"] == "explode failed: RuntimeError: boom: no fuel"
    assert results["good"] == {"id": "good", "content": "5", "isError": False}
    tool_messages = [m for m in fake.requests[1]["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages] == [results["bad"]["content"], "5"]
    assert text_of(events) == "One failed."


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"a": 2, "b": ', "The arguments are not valid JSON"),
        ("[2, 3]", "The arguments must be one JSON object"),
        ('{"a": "two", "b": 3}', "Invalid arguments: a: Input should be a valid integer"),
        ('{"a": 2}', "Invalid arguments: b: Field required"),
        ('{"a": 2, "b": 3, "c": 4}', "Invalid arguments: c: Extra inputs are not permitted"),
    ],
)
async def test_malformed_arguments_are_an_error_and_the_tool_is_not_called(
    fake: FakeServer, arguments: str, expected: str
) -> None:
    fake.script = [tool_reply(("call_1", "add", arguments)), text_reply("Sorry.")]

    events = await run(make_ctx(settings_for(fake.base_url, tools=TOOLS)))

    result = results_by_id(events)["call_1"]
    assert result["isError"] is True
    assert result["content"].startswith(expected)
    assert toolbox.state.calls == []
    [call] = of_type(events, EventType.TOOL_CALL)
    assert call.data["arguments"] == arguments  # what the model wrote, as it wrote it


async def test_an_unknown_name_is_an_error_and_nothing_is_called(fake: FakeServer) -> None:
    # `forbidden` exists in the toolbox module but is not registered.
    fake.script = [tool_reply(("call_1", "forbidden", "{}")), text_reply("Hm.")]

    events = await run(make_ctx(settings_for(fake.base_url, tools=TOOLS)))

    result = results_by_id(events)["call_1"]
    assert result["isError"] is True
    assert result["content"].startswith("Unknown tool 'forbidden'; the tools are: add, explode")
    assert toolbox.state.calls == []


async def test_output_is_capped(fake: FakeServer) -> None:
    fake.script = [tool_reply(("call_1", "flood", '{"size": 5000}')), text_reply("Long.")]

    events = await run(make_ctx(settings_for(fake.base_url, tools=TOOLS, tool_output_chars=300)))

    content = results_by_id(events)["call_1"]["content"]
    assert len(content) == 300
    assert content.startswith("x" * 200)
    assert content.endswith("[truncated: the output had 5000 characters]")
    assert fake.requests[1]["messages"][-1]["content"] == content  # the model gets it capped too


async def test_the_step_limit_ends_a_runaway_loop_with_an_error(fake: FakeServer) -> None:
    fake.chunks = tool_reply(("call_x", "add", '{"a": 1, "b": 1}'))  # asks for a tool every time

    events = await run(make_ctx(settings_for(fake.base_url, tools=TOOLS, max_steps=3)))

    assert len(fake.requests) == 3
    assert len(of_type(events, EventType.TOOL_CALL)) == 3
    assert len(toolbox.state.calls) == 2  # the last step's call is not run…
    results = of_type(events, EventType.TOOL_RESULT)
    assert len(results) == 3  # …but answered, so the transcript stays valid
    assert results[-1].data["isError"] is True
    assert results[-1].data["content"].startswith("Not run")
    last = events[-1]
    assert isinstance(last, Event) and last.type == EventType.ERROR
    assert last.data["code"] == "step_limit"
    assert "TURNSTREAM_MAX_STEPS" in last.data["message"]
    ids = [c.data["id"] for c in of_type(events, EventType.TOOL_CALL)]
    assert len(set(ids)) == 3  # a repeated id is replaced: each call answered once


async def test_the_tool_context_carries_the_runs_user_and_conversation(fake: FakeServer) -> None:
    fake.script = [tool_reply(("call_1", "whoami", '{"note": "hi"}')), text_reply("Done.")]

    events = await run(make_ctx(settings_for(fake.base_url, tools=TOOLS)))

    [ctx] = toolbox.state.contexts
    assert ctx is not None
    assert (ctx.user_id, ctx.conversation_id, ctx.session_id) == ("user_1", "conv_1", "sess_1")
    assert ctx.tool_call_id == "call_1"
    content = json.loads(results_by_id(events)["call_1"]["content"])
    assert content == {"user": "user_1", "conversation": "conv_1", "note": "hi"}


async def test_a_stop_during_a_tool_cancels_the_tool_task(fake: FakeServer) -> None:
    """As the executor stops a run: it cancels the task pulling the agent, then closes it."""
    fake.script = [tool_reply(("call_1", "hang", "{}"))]
    agent = openai_agent(make_ctx(settings_for(fake.base_url, tools=TOOLS)))
    seen: list[AgentEvent] = []

    async def pull() -> None:
        async for event in agent:
            seen.append(event)

    step = asyncio.ensure_future(pull())
    await asyncio.wait_for(toolbox.state.started.wait(), 5)
    step.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await step
    await agent.aclose()

    assert toolbox.state.finished.is_set()  # the tool's `finally` ran…
    assert toolbox.state.task is not None and toolbox.state.task.cancelled()  # …as it was cancelled
    assert kinds(seen) == ["usage", "tool_call"]


async def test_closing_the_agent_mid_step_cancels_the_running_tools(fake: FakeServer) -> None:
    """A consumer that stops pulling after the first result: the other call is cancelled."""
    fake.script = [tool_reply(("fast", "add", '{"a": 1, "b": 2}'), ("slow", "hang", "{}"))]
    agent = openai_agent(make_ctx(settings_for(fake.base_url, tools=TOOLS)))

    async with asyncio.timeout(5):
        async for event in agent:
            if isinstance(event, Event) and event.type == EventType.TOOL_RESULT:
                assert event.data["id"] == "fast"
                break
        await toolbox.state.started.wait()
        await agent.aclose()

    assert toolbox.state.finished.is_set()
    assert toolbox.state.task is not None and toolbox.state.task.cancelled()


async def test_several_specs_and_list_attributes_are_loaded() -> None:
    module = toolbox.__name__
    tools = load_tools(f"{module}:get_weather, {module}:forbidden")

    assert list(tools) == ["get_weather", "forbidden"]
    assert list(load_tools(f"{module}:TOOLS")) == [t.__name__ for t in toolbox.TOOLS]
    assert dict(load_tools(None)) == {} == dict(load_tools(" "))
    # The same function twice (a set named twice, or a set that implies another): once.
    assert list(load_tools(f"{module}:add,{module}:TOOLS")) == [
        "add",
        *(t.__name__ for t in toolbox.TOOLS if t.__name__ != "add"),
    ]


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        (
            "no_colon_here",
            "is neither a short name (basic, workspace, sandbox, web) nor of the form",
        ),
        ("turnstream.no_such_module:x", "cannot load"),
        (f"{toolbox.__name__}:nothing", "cannot load"),
        (f"{toolbox.__name__}:state", "not a function"),
        (f"{toolbox.__name__}:TOOLS,{toolbox.__name__}:ANOTHER_ADD", "two tools are named 'add'"),
    ],
)
def test_a_bad_tools_setting_says_what_is_wrong(spec: str, problem: str) -> None:
    with pytest.raises(Misconfigured, match="TURNSTREAM_TOOLS") as info:
        load_tools(spec)

    assert problem in str(info.value)


async def test_the_fake_server_refuses_a_broken_transcript_as_openai_does() -> None:
    broken = [
        *HISTORY,
        {"role": "assistant", "content": None, "tool_calls": [tool_call_entry("c1")]},
        {"role": "user", "content": "never mind"},
    ]
    assert check_transcript(broken) != []

    async with serving() as fake:
        with pytest.raises(OpenAIAgentError, match="HTTP 400") as info:
            await run(make_ctx(settings_for(fake.base_url), history=broken))
        assert "unanswered: ['c1']" in str(info.value)
        assert len(fake.refused) == 1


def tool_call_entry(call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "x", "arguments": "{}"}}
