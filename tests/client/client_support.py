"""What the client's tests share: a real `turnstream serve` and tokens for it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from servers import Server, create_token

WORDS = 40  # the demo agent's reply: 40 words, 30 ms apart, about 1.2 s
FILE_LIMIT = 64 * 1024  # TURNSTREAM_WORKSPACE_FILE_BYTES: one byte more is a 413


@dataclass(frozen=True)
class Served:
    url: str
    database_url: str

    def token(self, user_id: str) -> str:
        """A new bearer token of `user_id` (the user is created if needed)."""
        return create_token(self.database_url, user_id)


@contextmanager
def serve(tmp: Path, **env: str) -> Iterator[Served]:
    """`turnstream serve` in embedded mode (its own Valkey and SQLite file), with a demo
    agent slow enough to break a connection in the middle of its reply, and the workspace
    tools (`/tool write_file {…}`) on."""
    database_url = f"sqlite+aiosqlite:///{tmp}/ts.db"
    env = {
        "TURNSTREAM_REDIS_URL": "",  # embedded mode
        "TURNSTREAM_DATA_DIR": str(tmp / "data"),
        "TURNSTREAM_DATABASE_URL": database_url,
        "TURNSTREAM_DEMO_WORDS": str(WORDS),
        "TURNSTREAM_DEMO_DELAY_MS": "30",
        "TURNSTREAM_RUNS_PER_MINUTE": "1000",
        "TURNSTREAM_MAX_ACTIVE_RUNS": "100",
        "TURNSTREAM_TOOLS": "basic,workspace",
        "TURNSTREAM_WORKSPACE_FILE_BYTES": str(FILE_LIMIT),
        **env,
    }
    with Server(env, tmp / "serve.log") as server:
        yield Served(server.url, database_url)
    assert "Traceback" not in server.output(), server.output()
