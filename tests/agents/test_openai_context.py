"""The openai agent and the model's context window: one retry on a tighter history after
`context_length_exceeded`, then a clear error; `reasoning_effort` passed through."""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

from fake_openai import FakeServer, fake_tokens
from openai_rules import assert_valid

from turnstream.context.fit import tighter
from turnstream.events import EventType

from .support import make_ctx, of_type, run, settings_for


def long_history(turns: int = 20) -> list[dict[str, Any]]:
    history: list[dict[str, Any]] = [{"role": "system", "content": "You are terse."}]
    for n in range(turns):
        history.append({"role": "user", "content": f"question {n} " + "word " * 60})
        history.append({"role": "assistant", "content": f"answer {n} " + "word " * 60})
    return [*history, {"role": "user", "content": "the newest question"}]


def ctx_with_refit(fake: FakeServer, history: list[dict[str, Any]], **settings: Any) -> Any:
    ctx = make_ctx(settings_for(fake.base_url, **settings), history)
    return dataclasses.replace(ctx, refit=partial(tighter, keep=3, chars=500))


async def test_a_history_too_long_for_the_model_is_retried_once_tighter(fake: FakeServer) -> None:
    history = long_history()
    fake.context_limit = int(fake_tokens(history) * 0.8)

    events = await run(ctx_with_refit(fake, history))

    assert "".join(d.data["text"] for d in of_type(events, EventType.DELTA))
    assert of_type(events, EventType.ERROR) == []
    assert len(fake.too_long) == 1 and len(fake.requests) == 2
    retried = fake.requests[1]["messages"]
    assert_valid(retried)
    assert fake_tokens(retried) <= fake.context_limit
    assert retried[0] == history[0] and retried[-1] == history[-1]


async def test_a_second_refusal_ends_the_run_with_a_clear_code(fake: FakeServer) -> None:
    fake.context_limit = 50

    events = await run(ctx_with_refit(fake, long_history()))

    (error,) = of_type(events, EventType.ERROR)
    assert error.data["code"] == "context_length_exceeded"
    assert "maximum context length is 50 tokens" in error.data["message"]
    assert len(fake.requests) == 2  # one retry, no more


async def test_without_a_refit_the_refusal_ends_the_run_at_once(fake: FakeServer) -> None:
    fake.context_limit = 50

    events = await run(make_ctx(settings_for(fake.base_url), long_history()))

    assert [e.data["code"] for e in of_type(events, EventType.ERROR)] == ["context_length_exceeded"]
    assert len(fake.requests) == 1


async def test_reasoning_effort_goes_with_every_call_when_set(fake: FakeServer) -> None:
    await run(make_ctx(settings_for(fake.base_url, reasoning_effort="low")))
    await run(make_ctx(settings_for(fake.base_url)))

    assert fake.requests[0]["reasoning_effort"] == "low"
    assert "reasoning_effort" not in fake.requests[1]
