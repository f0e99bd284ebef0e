"""Fitting a history, step by step, on stored messages and on live transcripts."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

import pytest
from openai_rules import assert_valid

from turnstream.context.fit import Fitting, live_turns, stored_turns, tighter
from turnstream.store.views import MessageView

NOW = datetime(2026, 12, 7, tzinfo=UTC)


def conversation(turns: int, *, result_chars: int = 3000, seed: int = 0) -> list[MessageView]:
    """`turns` turns; some call a tool (once or twice) whose result is `result_chars` long."""
    rnd = random.Random(seed)
    out: list[MessageView] = []

    def add(role: str, **fields: Any) -> None:
        n = len(out)
        out.append(MessageView(id=f"m{n}", sequence=n, created_at=NOW, role=role, **fields))  # type: ignore[arg-type]

    for t in range(turns):
        add("user", content=f"question {t} " + "words " * rnd.randint(5, 50))
        calls = rnd.choice([0, 0, 1, 2])
        if calls:
            ids = [f"call_{t}_{i}" for i in range(calls)]
            tool_calls = [
                {"id": i, "type": "function", "function": {"name": "flood", "arguments": "{}"}}
                for i in ids
            ]
            add("assistant", content=None, tool_calls=tool_calls)
            for i in ids:
                add("tool", content=f"{i}: " + "x" * result_chars, tool_call_id=i)
        add("assistant", content=f"answer {t} " + "text " * rnd.randint(5, 80))
    add("user", content="the newest question")
    return out


def tool_results(history: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in history if m["role"] == "tool"]


def test_a_history_under_the_budget_is_left_whole() -> None:
    stored = conversation(5)
    fitting = Fitting([], stored_turns(stored), 1.0)
    assert fitting.cut_tool_results(10**9, keep=3, chars=100) == 0
    assert fitting.split(10**9) == 0
    history = fitting.history()
    assert_valid(history)
    assert len(history) == len(stored)


def test_old_tool_results_are_cut_oldest_first_and_the_newest_kept_whole() -> None:
    stored = conversation(30, seed=1)
    fitting = Fitting([], stored_turns(stored), 1.0)
    whole = fitting.tokens()
    fitting.cut_tool_results(whole - 2_000, keep=3, chars=500)  # a little over: a few cuts
    results = tool_results(fitting.history())
    cut = [r for r in results if "characters cut; the full result" in r]
    assert cut and len(cut) < len(results) - 3
    assert results[: len(cut)] == cut  # the oldest ones
    assert all(len(r) > 3000 for r in results[-3:])  # the newest three whole
    assert cut[0].startswith("call_") and "2,5" in cut[0]  # head kept, count said
    assert fitting.tokens() <= whole - 2_000


def test_all_but_the_newest_results_are_cut_when_the_budget_needs_it() -> None:
    fitting = Fitting([], stored_turns(conversation(30, seed=2)), 1.0)
    fitting.cut_tool_results(0, keep=2, chars=100)
    results = tool_results(fitting.history())
    assert sum("characters cut" in r for r in results) == len(results) - 2


@pytest.mark.parametrize("seed", range(30))
def test_a_split_keeps_whole_turns_the_newest_question_and_the_rules(seed: int) -> None:
    stored = conversation(40, seed=seed)
    fitting = Fitting([{"role": "system", "content": "summary"}], stored_turns(stored), 1.3)
    target = random.Random(seed).randint(100, fitting.tokens())
    fitting.turns = fitting.turns[fitting.split(target) :]
    history = fitting.history()
    assert_valid(history)
    assert history[0]["content"] == "summary"
    assert history[-1] == {"role": "user", "content": "the newest question"}
    assert history[1]["role"] == "user"  # a turn starts with its question
    assert len(fitting.turns) == 1 or fitting.tokens() <= target


def test_tighter_cuts_a_live_transcript_to_the_factor_keeping_lead_and_newest_turn() -> None:
    stored = conversation(25, seed=3)
    transcript = [
        {"role": "system", "content": "be brief"},
        *(m for t in stored_turns(stored) for m in t.messages),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "now", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "now", "content": "y" * 4000},
    ]
    before = json.dumps(transcript)
    lead, turns = live_turns(transcript)
    whole = Fitting(lead, turns, 1.0).tokens()

    fitted = tighter(transcript, keep=1, chars=200)

    assert json.dumps(transcript) == before  # the tool loop's own list is not changed
    assert_valid(fitted)
    lead, turns = live_turns(fitted)
    assert Fitting(lead, turns, 1.0).tokens() <= 0.7 * whole
    assert fitted[0] == {"role": "system", "content": "be brief"}
    assert fitted[-3:] == transcript[-3:]  # the newest question, its call and result whole
