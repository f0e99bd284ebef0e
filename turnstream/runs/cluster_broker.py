"""The run queue on a Redis Cluster: taskiq-redis's RedisStreamClusterBroker, adapted.

`TURNSTREAM_REDIS_CLUSTER=true` puts the queue (one stream, `TURNSTREAM_QUEUE_NAME`,
on the master that holds its slot) behind taskiq-redis's cluster broker. Three things
it does not do as the single-node broker (runs/broker.py) is set up to, made up here:

- it reads every message waiting at once (no COUNT): here one per read, so that a
  SIGTERMed worker holds no message it has not handed to taskiq;
- a lost connection ends its `listen`, and the worker with it: here the worker waits
  for the cluster and reads on, its runs in flight riding out the outage (an
  unreachable cluster is a ConnectionError, as on one node: live/client.py);
- it never reclaims a message a crashed worker took (no XAUTOCLAIM). Nothing is lost:
  such a run is handed out again by the queued-run look (runs/requeue.py) if it never
  started, or ended by the reaper once its lease lapses if it did. The message stays
  pending in the group, a few bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any

from redis.exceptions import RedisError
from taskiq import AckableMessage
from taskiq_redis import RedisStreamClusterBroker

from turnstream.live.client import ClusterClient

logger = logging.getLogger("turnstream.worker")

_RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)


class ClusterStreamBroker(RedisStreamClusterBroker):
    """One message per read, and an outage pauses the worker instead of ending it."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        # Our cluster client: a cluster it cannot reach is a ConnectionError (a RedisError,
        # which `listen` waits out and the API answers 503), not RedisClusterException.
        self.redis = ClusterClient.from_url(url)

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        failures = 0
        while True:
            try:
                fetched: Any = await self.redis.xreadgroup(
                    self.consumer_group_name,
                    self.consumer_name,
                    {self.queue_name: ">"},
                    count=1,
                    block=self.block,
                    noack=False,
                )
            except RedisError as exc:
                delay = _RETRY_SECONDS[min(failures, len(_RETRY_SECONDS) - 1)]
                failures += 1
                logger.warning("run queue unreachable (%s); trying again in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                # A master that came back empty has lost the consumer group too.
                with contextlib.suppress(RedisError):
                    await self._declare_consumer_group()
                continue
            failures = 0
            for stream, messages in fetched or []:
                for message_id, fields in messages:
                    yield AckableMessage(
                        data=fields[b"data"],
                        ack=self._ack_generator(id=message_id, queue_name=stream),
                    )


def cluster_stream_broker(
    redis_url: str, queue_name: str, *, group: str = "turnstream-workers"
) -> ClusterStreamBroker:
    """The cluster's stream broker with the settings of runs/broker.py's `stream_broker`."""
    return ClusterStreamBroker(
        redis_url,
        queue_name=queue_name,
        consumer_group_name=group,
        consumer_id="0",  # a group created late still sees messages sent before it
        xread_block=2000,
    )
