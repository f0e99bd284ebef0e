-- count_start: a sliding one-minute window of the runs a user started
-- (no burst at a minute's edge).
--
-- KEYS[1]  chat:rate:{uid}
-- ARGV[1]  now (ms)
-- ARGV[2]  the window (ms)
-- ARGV[3]  the runs allowed in the window
-- ARGV[4]  the new run's session id
-- Returns 0 if the run may start (and counts it), else the ms until the oldest
-- start leaves the window.

local rate = KEYS[1]
local now, window, limit, sid = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]

local since = now - window
redis.call('ZREMRANGEBYSCORE', rate, '-inf', since)
if redis.call('ZCARD', rate) >= limit then
  local oldest = redis.call('ZRANGE', rate, 0, 0, 'WITHSCORES')
  return tonumber(oldest[2]) - since
end
redis.call('ZADD', rate, ARGV[1], sid)
redis.call('PEXPIRE', rate, ARGV[2])
return 0
