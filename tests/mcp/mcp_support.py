"""What the MCP tests share: the test server (server.py) as a config entry, and config files."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SERVER = Path(__file__).with_name("server.py")


def stdio(*args: str) -> dict[str, Any]:
    """The config entry that runs server.py over stdio."""
    return {"command": sys.executable, "args": [str(SERVER), *args]}


def write_config(path: Path, servers: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"mcpServers": servers}), encoding="utf-8")
    return path
