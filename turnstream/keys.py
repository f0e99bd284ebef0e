"""Every Redis key turnstream reads or writes, in one place (SPEC §3).

    chat:stream:{cid}:{sid}   stream  run events: type, seq, ts (ms), data (JSON); ~stream_maxlen
    task:status:{cid}:{sid}   string  queued | running | completed | error | cancelled
    cancel:{cid}:{sid}        string  present while a stop is asked; 300 s
    chat:run:{cid}:{sid}      hash    the run record (its fields: `RunField`); times in ms
    chat:active:{cid}         string  session id of the conversation's newest run
    chat:session:{cid}        string  cached conversation with its newest 32 messages (JSON,
                                      `truncated` past them); session_ttl
    chat:leases               zset    "{cid} {sid}" scored by lease expiry (ms): the reaper's index
    chat:queued               zset    "{cid} {sid}" of each queued run, scored by when a reaper
                                      next looks at it (ms): first its claim deadline (`claim_by`
                                      in its hash), then each time it is handed out again
    chat:waiting              zset    "{cid} {sid}" of each run waiting for approvals, scored by
                                      when they expire (ms): the reapers deny them then
    chat:approval:{cid}:{aid} string  the session id of the run that asked approval `aid`;
                                      as the run's keys while it waits
    chat:user-runs:{uid}      zset    status keys of the user's active runs (the cap's count)
    chat:rate:{uid}           zset    session ids of the runs the user started, scored by
                                      start time (ms); the last minute's are kept
    chat:owner:{cid}          string  the conversation's user id ("" once deleted); OWNER_TTL
    chat:idem:{uid}:{digest}  string  session id a POST with that Idempotency-Key started; 24 h
    chat:durations            list    durations (ms) of recently completed runs, newest first
    chat:secret               string  stream tokens' signing key (if none is configured)

    chat:notify:{cid}:{sid}   channel every entry written to the run's stream, pushed to the
                                      API processes whose clients follow the run

The run's keys share a lifetime: refreshed on every write while the run lives,
`stream_ttl` after it ends. Nothing on a request path lists keys: every lookup
starts from a name built here.
"""

from __future__ import annotations

from dataclasses import dataclass

CANCEL_TTL_SECONDS = 300
IDEMPOTENCY_TTL_SECONDS = 24 * 3600
OWNER_TTL_SECONDS = 24 * 3600
DURATIONS_KEPT = 100

LEASES = "chat:leases"
QUEUED = "chat:queued"  # queued runs, for the reaper: none is ever stranded (runs/requeue.py)
WAITING = "chat:waiting"  # runs waiting for approvals, by expiry (live/approvals.py)
SECRET = "chat:secret"  # the stream tokens' signing key, unless TURNSTREAM_SECRET_KEY is set
DURATIONS = "chat:durations"


def active(cid: str) -> str:
    return f"chat:active:{cid}"


def session_cache(cid: str) -> str:
    return f"chat:session:{cid}"


def user_runs(user_id: str) -> str:
    return f"chat:user-runs:{user_id}"


def rate(user_id: str) -> str:
    return f"chat:rate:{user_id}"


def owner(cid: str) -> str:
    return f"chat:owner:{cid}"


def approval(cid: str, approval_id: str) -> str:
    return f"chat:approval:{cid}:{approval_id}"


def idempotency(user_id: str, digest: str) -> str:
    return f"chat:idem:{user_id}:{digest}"


def status_prefix(cid: str) -> str:
    """`task:status:{cid}:`: a script appends a session id it has read (chat:active's)."""
    return f"task:status:{cid}:"


def run_prefix(cid: str) -> str:
    return f"chat:run:{cid}:"


def stream_prefix(cid: str) -> str:
    return f"chat:stream:{cid}:"


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
        return f"cancel:{self.cid}:{self.sid}"

    @property
    def run(self) -> str:
        return run_prefix(self.cid) + self.sid

    @property
    def active(self) -> str:
        return active(self.cid)

    @property
    def channel(self) -> str:
        return f"chat:notify:{self.cid}:{self.sid}"

    @property
    def lease_member(self) -> str:
        """The run's member in `chat:leases` and `chat:queued`."""
        return f"{self.cid} {self.sid}"

    @classmethod
    def from_lease_member(cls, member: str) -> RunKeys:
        cid, sid = member.split(" ", 1)
        return cls(cid, sid)
