"""The token estimate against real counts: OpenAI's o200k and cl100k encodings, recorded in
corpus.json by scripts/token_corpus.py (the tokenizer is not needed to run these tests)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from turnstream.config import Settings
from turnstream.context.budget import budget, scale, window
from turnstream.context.estimate import messages_tokens, text_tokens

CORPUS: list[dict[str, Any]] = json.loads((Path(__file__).parent / "corpus.json").read_text())
RESERVE = Settings().reserve_tokens
BUDGET = budget(Settings(context_tokens=32_000))
# What OpenAI's chat format adds: 3 tokens per message and 3 to prime the reply.
PER_MESSAGE, PER_REQUEST = 3, 3


def true_tokens(entry: dict[str, Any]) -> int:
    return max(entry["o200k_base"], entry["cl100k_base"])


def request_of(entries: list[dict[str, Any]]) -> tuple[list[dict[str, str]], int]:
    """The entries as user messages, and the request's real token count."""
    messages = [{"role": "user", "content": e["text"]} for e in entries]
    return messages, PER_REQUEST + sum(true_tokens(e) + PER_MESSAGE for e in entries)


def requests(seed: int) -> list[list[dict[str, Any]]]:
    """The corpus shuffled and cut into requests of up to the default budget's real tokens."""
    entries = list(CORPUS)
    random.Random(seed).shuffle(entries)
    out: list[list[dict[str, Any]]] = [[]]
    for entry in entries:
        if sum(true_tokens(e) for e in out[-1]) + true_tokens(entry) > BUDGET:
            out.append([])
        out[-1].append(entry)
    return out


def test_the_corpus_has_every_kind_of_text() -> None:
    kinds = {e["kind"] for e in CORPUS}
    assert {"prose", "code", "json", "base64", "cjk-random", "emoji", "chinese"} <= kinds


@pytest.mark.parametrize("entry", CORPUS, ids=lambda e: e["kind"])
def test_each_text_is_estimated_within_a_fifth_under_and_twice_over(entry: dict[str, Any]) -> None:
    estimate, real = text_tokens(entry["text"]), true_tokens(entry)
    assert 0.8 * real <= estimate <= 2 * real, (entry["kind"], estimate, real)


@pytest.mark.parametrize("seed", range(20))
def test_no_request_is_undercounted_by_more_than_the_reserve(seed: int) -> None:
    for entries in requests(seed):
        messages, real = request_of(entries)
        assert messages_tokens(messages) >= real - RESERVE, [e["kind"] for e in entries]


def test_the_measured_count_of_the_last_turn_corrects_the_next_one() -> None:
    """Random base64 is undercounted; scaled by the last turn's measured count it is not."""
    b64 = next(e for e in CORPUS if e["kind"] == "base64")
    prose = [e for e in CORPUS if e["kind"] == "prose"]
    first, first_real = request_of([b64, prose[0]])
    ratio = scale((messages_tokens(first), first_real))
    second, second_real = request_of([b64, prose[0], prose[1], prose[2]])
    assert messages_tokens(second) < second_real  # the estimate alone undercounts
    assert second_real <= ratio * messages_tokens(second) <= 1.1 * second_real


def test_the_scale_is_bounded() -> None:
    assert scale(None) == 1.0
    assert scale((100, 1_000)) == 4.0
    assert scale((1_000, 100)) == 0.5


def test_the_window_comes_from_the_setting_or_the_model() -> None:
    assert window(Settings(context_tokens=50_000)) == 50_000
    assert window(Settings(openai_model="gpt-4o-2024-08-06")) == 128_000
    assert window(Settings(openai_model="openai/gpt-4.1-mini")) == 1_000_000
    assert window(Settings(openai_model="llama3.2")) == 32_000
    assert budget(Settings(context_tokens=10_000, reserve_tokens=4_000)) == 6_000
    assert budget(Settings(context_tokens=10_000, reserve_tokens=20_000)) == 1_000
