"""A real `turnstream serve` for the client's tests, one per test module (client_support.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from client_support import Served, serve


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(tmp_path_factory.mktemp("serve")) as server:
        yield server


@pytest.fixture
def alice(served: Served) -> str:
    """A bearer token of user alice."""
    return served.token("alice")


@pytest.fixture
def bob(served: Served) -> str:
    """A bearer token of user bob."""
    return served.token("bob")
