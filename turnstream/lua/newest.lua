-- newest: the conversation's owner and newest run in one round trip (the session
-- endpoints' hot path: their ownership check and their answer).
--
-- KEYS[1]  chat:active:{cid}
-- KEYS[2]  chat:owner:{cid}
-- ARGV[1]  chat:run:{cid}:      the run hash key prefix
-- ARGV[2]  chat:stream:{cid}:   the stream key prefix
-- Returns {the cached owner (nil if not cached, "" once deleted), the run hash as a
-- flat list (empty if no run is kept), the stream's newest entry (empty if none)}.
--
-- The run's keys are named by the session id read here, so they cannot be passed
-- in KEYS. See "Redis Cluster" in docs/architecture.md.

local owner = redis.call('GET', KEYS[2])
local sid = redis.call('GET', KEYS[1])
if not sid then return {owner, {}, {}} end
local run = redis.call('HGETALL', ARGV[1] .. sid)
local newest = redis.call('XREVRANGE', ARGV[2] .. sid, '+', '-', 'COUNT', 1)
return {owner, run, newest}
