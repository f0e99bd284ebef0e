"""The test MCP server (server.py) serving Streamable HTTP on a loopback port."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from helpers import free_port, wait_until
from mcp_support import SERVER


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    """server.py serving Streamable HTTP on 127.0.0.1, for the tests of one module."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(SERVER), "--http", str(port)], stderr=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: _accepts(port), timeout=20, what="the MCP server on HTTP")
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(10)
