"""The Redis keys' names: SPEC §3's on one node, hash-tagged on a cluster.

Frontends, operators and their scripts read the per-run keys by name, so on one
node the names are exactly those of the spec, and an upgrade finds live runs
where the previous version left them.
"""

from __future__ import annotations

import pytest
from redis.cluster import key_slot

from turnstream import keys
from turnstream.keys import RunKeys

CID = "0199a1b2-0000-7000-8000-000000000001"
SID = f"conversation:alice:{CID}"


def test_one_node_names_the_keys_as_the_spec_does():
    k = RunKeys(CID, SID)
    assert k.stream == f"chat:stream:{CID}:{SID}"
    assert k.status == f"task:status:{CID}:{SID}"
    assert k.cancel == f"cancel:{CID}:{SID}"
    assert k.run == f"chat:run:{CID}:{SID}"
    assert keys.active(CID) == f"chat:active:{CID}"
    assert keys.session_cache(CID) == f"chat:session:{CID}"
    assert keys.every_shard(keys.leases) == ["chat:leases"]
    assert keys.every_shard(keys.queued) == ["chat:queued"]


@pytest.mark.usefixtures("cluster_layout")
def test_on_a_cluster_a_conversations_keys_share_a_slot_and_a_users_theirs():
    k = RunKeys(CID, SID)
    conversation = [k.stream, k.status, k.cancel, k.run, k.channel, keys.active(CID)]
    conversation += [keys.session_cache(CID), keys.owner(CID), keys.approval(CID, "a1")]
    assert all(f"{{{CID}}}" in name for name in conversation)
    assert {key_slot(name.encode()) for name in conversation} == {key_slot(CID.encode())}
    user = [keys.user_runs("alice"), keys.rate("alice"), keys.idempotency("alice", "d")]
    assert {key_slot(name.encode()) for name in user} == {key_slot(b"alice")}
    assert len(keys.every_shard(keys.leases)) == keys.SHARDS
    assert len({key_slot(name.encode()) for name in keys.every_shard(keys.leases)}) > 1
