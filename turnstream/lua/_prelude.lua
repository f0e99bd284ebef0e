-- _prelude: the shared head of the run scripts (create, claim, append, heartbeat, finish,
-- requeue).
--
-- Not a script by itself: live/state.py loads it once and puts it in front of
-- each run script's own text (`_prelude.lua` + `<name>.lua`) before registering
-- the pair as one script. So every run script takes these KEYS and ARGV first:
--
-- KEYS[1] stream     chat:stream:{cid}:{sid}
-- KEYS[2] run        chat:run:{cid}:{sid}     the run hash (fields: keys.RunField)
-- KEYS[3] status     task:status:{cid}:{sid}
-- KEYS[4] cancel     cancel:{cid}:{sid}
-- KEYS[5] active     chat:active:{cid}
-- ARGV[1] now (ms)
-- ARGV[2] maxlen     entries kept in the stream
-- ARGV[3] ttl (ms)   the run's keys' lifetime
-- ARGV[4] channel    chat:notify:{cid}:{sid}, where each entry is published
-- ARGV[5] run_sid    the session id
-- ARGV[6] publish    'PUBLISH', or 'SPUBLISH' (sharded pub/sub: Redis 7+, and a cluster)
-- A script's own arguments start at ARGV[7]; its events, as (type, data) pairs, come last.
--
-- Every key a run script touches carries the conversation's hash tag `{cid}`: these
-- five, and the few a script names from a value it read (a status key built from
-- `task:status:{cid}:` and a session id), whose tag is in the prefix. So each script
-- stays in one slot of a cluster. The reapers' indexes (chat:leases:{shard-N}, ...)
-- live elsewhere: the caller updates them around the script (live/indexes.py).

local stream, run, status, cancel, active = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now, maxlen, ttl, channel = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local run_sid, publish = ARGV[5], ARGV[6]
local slack = math.max(1, math.floor(maxlen / 10))
local last_id = false

-- Trim the stream down to `maxlen`, recording the newest id trimmed away: that is
-- how a resume knows its cursor fell into the gap (409, not a silent hole). A run
-- whose hash has `archived_through` (archiving is on: runs/archiver.py) loses only
-- entries up to that id, the ones SQL already holds.
local function trim_now()
  local len = redis.call('XLEN', stream)
  if len <= maxlen then return end
  local bound = redis.call('HGET', run, 'archived_through') or '+'
  local head = redis.call('XRANGE', stream, '-', bound, 'COUNT', len - maxlen)
  if #head == 0 then return end
  local newest = head[#head][1]
  redis.call('XTRIM', stream, 'MINID', newest)
  redis.call('XDEL', stream, newest)
  redis.call('HSET', run, 'trimmed_through', newest)
end

-- Trim in steps of `slack`: on every `slack`-th event once the stream is that far over.
local function trim(seq)
  if seq <= maxlen + slack or seq % slack ~= 0 then return end
  if redis.call('XLEN', stream) <= maxlen + slack then return end
  trim_now()
end

-- Write one event with the run's next seq, and publish it to the run's channel.
local function add(etype, data)
  local seq = redis.call('HINCRBY', run, 'seq', 1)
  last_id = redis.call('XADD', stream, '*', 'type', etype, 'seq', seq, 'ts', now, 'data', data)
  -- Followers get the entry pushed at once, one field a line
  -- (StreamEntry.from_notice reads it back).
  redis.call(publish, channel,
    last_id .. '\n' .. etype .. '\n' .. seq .. '\n' .. now .. '\n' .. data)
  trim(seq)
end

-- Write the events given as (type, data) pairs from ARGV[first] on.
local function add_from(first)
  for i = first, #ARGV, 2 do add(ARGV[i], ARGV[i + 1]) end
end

-- Give the run's keys `ms` more to live; `chat:active` only while it still names this run.
local function keep(ms)
  redis.call('PEXPIRE', stream, ms)
  redis.call('PEXPIRE', run, ms)
  redis.call('PEXPIRE', status, ms)
  if redis.call('GET', active) == run_sid then redis.call('PEXPIRE', active, ms) end
end

local function is_terminal(s)
  return s == 'completed' or s == 'error' or s == 'cancelled'
end

-- The run script's own text follows.
