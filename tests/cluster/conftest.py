"""Fixtures for tests/cluster/: what each master holds, and an app's settings on the
pytest worker's own Redis Cluster of three masters (`cluster_url` in tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from api_support import quick_settings
from redis.cluster import RedisCluster

from turnstream.config import Settings


@pytest.fixture(autouse=True)
def _layout(cluster_layout: None) -> None:
    """The keys as a cluster names them, and SPEC's names again for the tests after these."""


@pytest.fixture
def masters(cluster_url: str) -> Iterator[list[redis.Redis]]:
    """A plain client of each master, to ask each one what it holds."""
    with RedisCluster.from_url(cluster_url) as client:
        nodes = client.get_primaries()
    clients = [redis.Redis(host=n.host, port=n.port, decode_responses=True) for n in nodes]
    yield clients
    for c in clients:
        c.close()


@pytest.fixture
def cluster_settings(sqlite_url: str, cluster_url: str, tmp_path) -> Settings:
    """An in-process app's settings on the cluster; a quick demo agent."""
    return quick_settings(sqlite_url, cluster_url, tmp_path, cluster=True)
