-- newest: the conversation's newest run in one round trip (the session endpoints' hot path).
--
-- KEYS[1]  chat:active:{cid}
-- ARGV[1]  chat:run:{cid}:      the run hash key prefix
-- ARGV[2]  chat:stream:{cid}:   the stream key prefix
-- Returns false if no run is kept, else {the run hash as a flat list, the stream's
-- newest entry (an empty list if none)}.
--
-- The run's keys are named by the session id read here, so they cannot be passed
-- in KEYS. See "Redis Cluster" in docs/architecture.md.

local sid = redis.call('GET', KEYS[1])
if not sid then return false end
local run = redis.call('HGETALL', ARGV[1] .. sid)
local newest = redis.call('XREVRANGE', ARGV[2] .. sid, '+', '-', 'COUNT', 1)
return {run, newest}
