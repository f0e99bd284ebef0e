"""Counting tokens without a tokenizer: a conservative estimate from the text alone.

No model's vocabulary ships with turnstream (tiktoken downloads its files on
first use, which many deployments cannot), so a text is cut the way GPT-style
tokenizers pre-split it (letter runs, digit runs, punctuation, spaces) and each
piece is priced by what such tokenizers give it:

    a run of ASCII letters   0.5 + 0.2 per letter + 0.6 per capital inside it
                             (a word is one or two tokens; mixed case, as in
                             base64 or identifiers, splits into more)
    a run of digits          one token per three digits, plus one
    a space                  nothing (it joins the next word); other whitespace: 1
    any other character      by its UTF-8 length: 0.8 (ASCII punctuation),
                             0.55 (Cyrillic, Greek, accents), 2.0 (CJK), 3.0 (emoji)

On the test corpus (tests/context/corpus.json, counted with OpenAI's o200k and
cl100k encodings; docs/long-conversations.md has the table) this overcounts
prose and code by a third or so and undercounts only random base64 and rare CJK
characters, by at most 15 %. A conversation's own `usage.prompt_tokens`
corrects it from the second turn on (context/budget.py).
"""

from __future__ import annotations

import json
import re
import string
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

# Counted with C-level regex and str calls, never per character in Python: a history of
# the budget's size is estimated every turn (a per-piece loop took 4 ms per 2,000 characters).
_LETTER_RUN = re.compile(r"[A-Za-z]+")
_INNER_CAPITAL = re.compile(r"(?<=[A-Za-z])[A-Z]")
_DIGIT_RUN = re.compile(r"[0-9]+")
_OTHER_WHITESPACE = re.compile(r"\s{2,}|[^\S ]")  # runs of two or more, or a newline, tab...
_LETTERS_DIGITS_SPACES = str.maketrans("", "", string.ascii_letters + string.digits + " \t\n\r")
_TWO_BYTES = re.compile("[\u0080-\u07ff]")
_THREE_BYTES = re.compile("[\u0800-\uffff]")
_FOUR_BYTES = re.compile("[\U00010000-\U0010ffff]")
# What the chat format adds around each message (role, separators), and per request.
MESSAGE_OVERHEAD = 4
REQUEST_OVERHEAD = 3
# Estimates of long texts by (hash, length): a conversation's messages come back every turn.
_MEMO: OrderedDict[tuple[int, int], float] = OrderedDict()
_MEMO_SIZE = 50_000
_MEMO_FROM = 256  # characters; shorter texts are counted again


def text_tokens(text: str) -> float:
    """The estimated token count of `text`."""
    if len(text) < _MEMO_FROM:
        return _count(text)
    key = (hash(text), len(text))
    found = _MEMO.get(key)
    if found is None:
        found = _MEMO[key] = _count(text)
        if len(_MEMO) > _MEMO_SIZE:
            _MEMO.popitem(last=False)
    return found


def _count(text: str) -> float:
    letter_runs = _LETTER_RUN.subn("", text)
    letters = len(text) - len(letter_runs[0])
    digit_runs = _DIGIT_RUN.subn("", text)
    digits = len(text) - len(digit_runs[0])
    total = 0.5 * letter_runs[1] + 0.2 * letters + 0.6 * len(_INNER_CAPITAL.findall(text))
    total += digit_runs[1] + digits / 3 + len(_OTHER_WHITESPACE.findall(text))
    if text.isascii():
        return total + 0.8 * len(text.translate(_LETTERS_DIGITS_SPACES))
    wide = [len(p.findall(text)) for p in (_TWO_BYTES, _THREE_BYTES, _FOUR_BYTES)]
    punctuation = len(text.translate(_LETTERS_DIGITS_SPACES)) - sum(wide)
    return total + 0.8 * punctuation + 0.55 * wide[0] + 2.0 * wide[1] + 3.0 * wide[2]


def message_tokens(message: dict[str, Any]) -> float:
    """One OpenAI chat message: its content, tool calls and overhead."""
    total = float(MESSAGE_OVERHEAD)
    content = message.get("content")
    if isinstance(content, str):
        total += text_tokens(content)
    elif content is not None:
        total += text_tokens(json.dumps(content))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        total += MESSAGE_OVERHEAD + text_tokens(str(function.get("name", "")))
        total += text_tokens(str(function.get("arguments", "")))
    return total


def messages_tokens(messages: Iterable[dict[str, Any]]) -> int:
    """A whole request's messages, rounded up."""
    return int(REQUEST_OVERHEAD + sum(message_tokens(m) for m in messages)) + 1
