"""Small helpers shared by tests (fixtures live in conftest.py)."""

import socket
import time


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, *, timeout: float, what: str, interval: float = 0.1):
    """Call `check()` until it returns something truthy, and return that.

    After `timeout` seconds it fails, naming `what` and the last value seen,
    so that a wait never passes or hangs silently.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {value!r}")
        time.sleep(interval)
