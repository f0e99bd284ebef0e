-- wait: running -> waiting for the user's decisions on tool calls; the worker lets go.
--
-- Runs after _prelude.lua: KEYS[1..5] and ARGV[1..6] are the prelude's.
-- ARGV[7]  the worker's name
-- ARGV[8]  the approvals' expiry (ms)
-- ARGV[9]  how long the run's keys live while it waits (ms): past the expiry
-- ARGV[10] the approvals as a JSON array of approval_request data, in call order
-- ARGV[11..] events, as (type, data) pairs (the `approval_request`s)
-- Returns {1, the lease expiry it had (ms)} if the run waits now; {0} if it is no longer
-- this worker's or a stop was asked (the worker ends it instead). The caller listed it
-- in chat:waiting:{shard-N} before this, and takes it out of chat:leases:{shard-N}
-- after (live/indexes.py).
--
-- A waiting run keeps task:status `running` (SPEC §3: it is the conversation's live
-- run) and has no lease: no reaper can take it for a dead worker's. Its hash says
-- `waiting`, `asked` lists the approval ids, and each approval is a field
-- `approval:{id}` (its request's data; `approved`/`reason` once decided).

local worker, expires, keep_ms = ARGV[7], ARGV[8], tonumber(ARGV[9])

if redis.call('HGET', run, 'status') ~= 'running'
  or redis.call('HGET', run, 'worker') ~= worker
  or redis.call('EXISTS', cancel) == 1 then
  return {0}
end
local ids = {}
for _, approval in ipairs(cjson.decode(ARGV[10])) do
  local field = 'approval:' .. approval.approvalId
  table.insert(ids, approval.approvalId)
  redis.call('HSET', run, field, cjson.encode(approval))
end
-- `batch` goes: the worker that goes on numbers its batches from 1 again (append.lua).
local lease_until = redis.call('HGET', run, 'lease_until') or ''
redis.call('HDEL', run, 'worker', 'lease_until', 'batch')
redis.call('HSET', run, 'status', 'waiting', 'asked', cjson.encode(ids), 'pending', #ids,
  'wait_until', expires)
add_from(11)
keep(keep_ms)
return {1, lease_until}
