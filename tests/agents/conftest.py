"""The fake OpenAI-compatible server, fresh for each test, with fresh tool state."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fake_openai import FakeServer, serving

from . import toolbox


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    toolbox.reset()
    async with serving() as state:
        yield state
        assert state.refused == []  # no request broke OpenAI's transcript rules
