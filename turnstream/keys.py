"""Every Redis key turnstream reads or writes, in one place (SPEC §3).

On one Redis node the keys are named as below. On a Redis Cluster
(`TURNSTREAM_REDIS_CLUSTER`, `use_cluster_layout`) the part in angle brackets is
wrapped in braces, a hash tag: every key of one conversation carries `{<cid>}` and
shares its hash slot, so every per-run script stays one atomic script on one node;
per-user keys carry `{<uid>}`; and each global index is SHARDS keys, tagged
`{shard-N}`, a conversation's runs listed in shard `shard_of(cid)` (docs/cluster.md).

    chat:stream:<cid>:{sid}   stream  run events: type, seq, ts (ms), data (JSON); ~stream_maxlen
    task:status:<cid>:{sid}   string  queued | running | completed | error | cancelled
    cancel:<cid>:{sid}        string  present while a stop is asked; 300 s
    chat:run:<cid>:{sid}      hash    the run record (its fields: `RunField`); times in ms
    chat:active:<cid>         string  session id of the conversation's newest run
    chat:session:<cid>        string  cached conversation with its newest 32 messages (JSON,
                                      `truncated` past them); session_ttl
    chat:owner:<cid>          string  the conversation's user id ("" once deleted); OWNER_TTL
    chat:approval:<cid>:{aid} string  the session id of the run that asked approval `aid`;
                                      as the run's keys while it waits
    chat:notify:<cid>:{sid}   channel every entry written to the run's stream, pushed to the
                                      API processes whose clients follow the run

    chat:user-runs:<uid>      zset    status keys of the user's active runs (the cap's count),
                                      scored by when each was reserved (ms, Redis's clock)
    chat:rate:<uid>           zset    session ids of the runs the user started, scored by
                                      start time (ms); the last minute's are kept
    chat:idem:<uid>:{digest}  string  session id a POST with that Idempotency-Key started; 24 h

    chat:leases               zset    "{cid} {sid}" scored by lease expiry (ms): the reaper's index
    chat:queued               zset    "{cid} {sid}" of each queued run, scored by when a reaper
                                      next looks at it (ms; `look_at` in its hash)
    chat:waiting              zset    "{cid} {sid}" of each run waiting for approvals, scored by
                                      when they expire (ms; `wait_until`): the reapers deny them
    chat:durations            list    durations (ms) of recently completed runs, newest first
                                      (on a cluster each of these four is chat:leases:{shard-N}…)
    chat:secret               string  stream tokens' signing key (if none is configured)

The run's keys share a lifetime: refreshed on every write while the run lives,
`stream_ttl` after it ends. Nothing on a request path lists keys: every lookup
starts from a name built here. The index shards live in other slots than the runs
they list, so no script writes both: an entry is a hint, added before the change
that needs it and checked against the run's hash by whoever reads it
(live/indexes.py).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

CANCEL_TTL_SECONDS = 300
IDEMPOTENCY_TTL_SECONDS = 24 * 3600
OWNER_TTL_SECONDS = 24 * 3600
DURATIONS_KEPT = 100

# The global indexes' shards on a cluster. Fixed: a process with another number would
# look for runs in shards nobody writes to.
SHARDS = 16

SECRET = "chat:secret"  # the stream tokens' signing key, unless TURNSTREAM_SECRET_KEY is set

# Whether keys carry hash tags. One node keeps the names frontends and operators know
# (SPEC §3), and an upgrade leaves its live runs where they are; a cluster needs the tags.
_cluster = False


def use_cluster_layout(on: bool) -> None:
    """Name keys for a Redis Cluster (on) or one node: once, as the process connects."""
    global _cluster
    _cluster = on


def _tag(value: str) -> str:
    return f"{{{value}}}" if _cluster else value


def shard_count() -> int:
    """How many shards each global index has: SHARDS on a cluster, one on one node."""
    return SHARDS if _cluster else 1


def shard_of(cid: str) -> int:
    """The index shard of a conversation's runs (crc32: the same in every process)."""
    return zlib.crc32(cid.encode()) % shard_count()


def _index(name: str, shard: int) -> str:
    return f"{name}:{{shard-{shard}}}" if _cluster else name


def leases(shard: int) -> str:
    """Running runs by lease expiry: the reaper's index."""
    return _index("chat:leases", shard)


def queued(shard: int) -> str:
    """Queued runs by the reapers' next look: none is ever stranded (runs/requeue.py)."""
    return _index("chat:queued", shard)


def waiting(shard: int) -> str:
    """Runs waiting for approvals, by expiry (live/approvals.py)."""
    return _index("chat:waiting", shard)


def durations(shard: int) -> str:
    return _index("chat:durations", shard)


def every_shard(index: Callable[[int], str]) -> list[str]:
    """All the shards of one index (`leases`, `queued`, ...), for the passes that cover them."""
    return [index(shard) for shard in range(shard_count())]


def active(cid: str) -> str:
    return f"chat:active:{_tag(cid)}"


def session_cache(cid: str) -> str:
    return f"chat:session:{_tag(cid)}"


def user_runs(user_id: str) -> str:
    return f"chat:user-runs:{_tag(user_id)}"


def rate(user_id: str) -> str:
    return f"chat:rate:{_tag(user_id)}"


def owner(cid: str) -> str:
    return f"chat:owner:{_tag(cid)}"


def approval(cid: str, approval_id: str) -> str:
    return f"chat:approval:{_tag(cid)}:{approval_id}"


def idempotency(user_id: str, digest: str) -> str:
    return f"chat:idem:{_tag(user_id)}:{digest}"


def status_prefix(cid: str) -> str:
    """`task:status:{cid}:`: a script appends a session id it has read (chat:active's).

    The tag comes before the session id, so the key it builds is in the script's slot.
    """
    return f"task:status:{_tag(cid)}:"


def run_prefix(cid: str) -> str:
    return f"chat:run:{_tag(cid)}:"


def stream_prefix(cid: str) -> str:
    return f"chat:stream:{_tag(cid)}:"


class RunField:
    """The fields of the run hash `chat:run:{cid}:{sid}`, by who writes them.

    The Lua scripts in turnstream/lua/ spell these names too; tests/runs/test_state.py
    checks that they use no other.
    """

    # The request that starts the run (RunState.create).
    SESSION_ID = "session_id"
    CONVERSATION_ID = "conversation_id"
    USER_ID = "user_id"
    MESSAGE_ID = "message_id"  # the reply's message id
    USER_MESSAGE_ID = "user_message_id"  # the question's ("" when regenerating)
    MESSAGE = "message"  # the question's text
    PREPARED = "prepared"  # "1" once the run's SQL side is written (runs/service.py)
    # The create script.
    STATUS = "status"  # as task:status
    CREATED_AT = "created_at"  # ms
    SEQ = "seq"  # the seq of the newest event; every script that writes one takes the next
    AFTER = "after"  # the session id of the run this one waits for (multitask=enqueue)
    ENQUEUED = "enqueued"  # "1" while it waited: its question is stored when its turn comes
    # The create script; moved on by the requeue script while the run waits for another.
    CLAIM_BY = "claim_by"  # ms: a worker must have claimed the queued run by then
    # The create, decide and requeue scripts: when the reapers next look at the queued run
    # (ms): its score in chat:queued, which the index's readers check against this.
    LOOK_AT = "look_at"
    # The claim and heartbeat scripts.
    STARTED_AT = "started_at"  # ms
    WORKER = "worker"
    LEASE_UNTIL = "lease_until"  # ms, as its score in chat:leases
    # The append script, and the trim every event-writing script does.
    BATCH = "batch"  # the number of the newest batch written (a batch sent twice is written once)
    TRIMMED_THROUGH = "trimmed_through"  # the newest entry id trimmed away
    # The create script ("0-0" when archiving is on), then the archived script: the newest
    # entry id SQL holds (runs/archiver.py). The trim never drops an entry past it.
    ARCHIVED_THROUGH = "archived_through"
    # The wait script (live/approvals.py): the run waits for the user's decisions.
    ASKED = "asked"  # the approval ids of the calls waiting, in call order (JSON)
    PENDING = "pending"  # how many of them are undecided; the decide script counts down
    WAIT_UNTIL = "wait_until"  # ms: when they expire, as its score in chat:waiting
    APPROVAL = "approval:"  # + an approval id: its request's data, with the decision once made
    # The finish script.
    ENDED_AT = "ended_at"  # ms
    ERROR = "error"  # the error text, for status `error`


@dataclass(frozen=True)
class RunKeys:
    """The keys of one run, named once so that no two modules spell them differently."""

    cid: str
    sid: str

    @property
    def stream(self) -> str:
        return stream_prefix(self.cid) + self.sid

    @property
    def status(self) -> str:
        return status_prefix(self.cid) + self.sid

    @property
    def cancel(self) -> str:
        return f"cancel:{_tag(self.cid)}:{self.sid}"

    @property
    def run(self) -> str:
        return run_prefix(self.cid) + self.sid

    @property
    def active(self) -> str:
        return active(self.cid)

    @property
    def channel(self) -> str:
        return f"chat:notify:{_tag(self.cid)}:{self.sid}"

    @property
    def shard(self) -> int:
        """The shard of the global indexes that lists this run."""
        return shard_of(self.cid)

    @property
    def lease_member(self) -> str:
        """The run's member in the index shards (`chat:leases:…` and the others)."""
        return f"{self.cid} {self.sid}"

    @classmethod
    def from_lease_member(cls, member: str) -> RunKeys:
        cid, sid = member.split(" ", 1)
        return cls(cid, sid)
