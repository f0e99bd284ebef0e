"""Identifiers of SPEC §2: UUIDv7 for rows, composed session ids for runs."""

from __future__ import annotations

import os
import re
import time
import uuid

USER_ID_PATTERN = re.compile(r"[A-Za-z0-9._@-]{1,64}")
_UUID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def uuid7() -> str:
    """A time-ordered UUID (RFC 9562 version 7): 48-bit ms timestamp, then randomness."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (rand >> 68) << 64  # 12 bits rand_a
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def is_uuid(value: str) -> bool:
    # fullmatch, not match: `$` would also accept a trailing newline.
    return bool(_UUID_PATTERN.fullmatch(value))


def is_user_id(value: str) -> bool:
    return bool(USER_ID_PATTERN.fullmatch(value))


def session_id(user_id: str, message_id: str) -> str:
    """The run's id: made by the server, unique because the reply's message id is."""
    return f"conversation:{user_id}:{message_id}"


def session_user(sid: str) -> str | None:
    """The user id in a session id made by `session_id` (None for any other string)."""
    prefix, _, rest = sid.partition(":")
    user_id, _, message_id = rest.rpartition(":")
    return user_id if prefix == "conversation" and user_id and is_uuid(message_id) else None
