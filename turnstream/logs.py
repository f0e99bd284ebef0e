"""Log lines as text (the default) or as JSON objects, carrying the ids of what they are about.

TURNSTREAM_LOG_FORMAT=json writes one JSON object a line:

    {"ts": "2026-12-01T09:30:00.123Z", "level": "WARNING", "logger": "turnstream.runs",
     "message": "run … failed", "request_id": "…", "conversation_id": "…",
     "session_id": "…", "user_id": "…"}

The ids are those known where the line is logged, kept in a context variable:
the request id by the API's middleware (api/request_context.py), the user and
conversation by the API's dependencies, the conversation, run and user by the
executor for a run's lines (`bind`). An id not known is left out; an exception's
traceback goes in `exc`.

This module imports nothing from turnstream, so that every layer may bind ids.
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"
IDS = ("request_id", "conversation_id", "session_id", "user_id")

_ids: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("turnstream_log_ids")


def bind(**ids: str | None) -> None:
    """Add these ids to the lines this task (and the tasks it starts) logs from now on."""
    current = _ids.get({})
    _ids.set({**current, **{name: value for name, value in ids.items() if value}})


def current_ids() -> Mapping[str, str]:
    return _ids.get({})


def fresh(**ids: str) -> contextvars.Token[Mapping[str, str]]:
    """Only these ids from now on (a new request); `restore` with the token returned."""
    return _ids.set(dict(ids))


def restore(token: contextvars.Token[Mapping[str, str]]) -> None:
    _ids.reset(token)


class ContextFilter(logging.Filter):
    """Copies the ids known where a line is logged onto its record, for later formatting."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in current_ids().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, message, the ids known, and `exc`."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        line: dict[str, object] = {
            "ts": ts.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        known = current_ids()
        for name in IDS:
            value = getattr(record, name, None) or known.get(name)
            if value:
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(log_format: LogFormat, level: int | str | None = None) -> None:
    """Format the root logger's lines as `log_format`.

    Text: a handler of TEXT_FORMAT on stderr when the root logger has none (as
    `logging.basicConfig` would), else what is there stays. JSON: every root
    handler (one on stderr if there is none) formats as JsonFormatter.
    """
    root = logging.getLogger()
    if not root.handlers:
        stderr = logging.StreamHandler()
        stderr.setFormatter(logging.Formatter(TEXT_FORMAT))
        root.addHandler(stderr)
    if log_format == "json":
        for handler in root.handlers:
            handler.setFormatter(JsonFormatter())
            if not any(isinstance(f, ContextFilter) for f in handler.filters):
                handler.addFilter(ContextFilter())
    if level is not None:
        root.setLevel(level)
