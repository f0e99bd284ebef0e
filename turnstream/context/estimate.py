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
characters, by at most a third. A conversation's own `usage.prompt_tokens`
corrects it from the second turn on (context/budget.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

_PIECE = re.compile(r"[A-Za-z]+|[0-9]+| ?[^\sA-Za-z0-9]|\s+")
_BY_UTF8_LENGTH = {1: 0.8, 2: 0.55, 3: 2.0, 4: 3.0}
# What the chat format adds around each message (role, separators), and per request.
MESSAGE_OVERHEAD = 4
REQUEST_OVERHEAD = 3


def text_tokens(text: str) -> float:
    """The estimated token count of `text`."""
    total = 0.0
    for match in _PIECE.finditer(text):
        piece = match.group()
        last = piece[-1]
        if last.isascii() and last.isalpha():
            capitals = sum(1 for c in piece[1:] if c.isupper())
            total += 0.5 + 0.2 * len(piece) + 0.6 * capitals
        elif last.isascii() and last.isdigit():
            total += len(piece) // 3 + 1
        elif piece.isspace():
            total += 0 if piece == " " else 1
        else:
            total += _BY_UTF8_LENGTH[len(last.encode())]
    return total


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
