-- append: write a batch of events while the run is running.
--
-- Runs after _prelude.lua: KEYS[1..5] and ARGV[1..6] are the prelude's.
-- ARGV[7]  the batch's number ('' for none)
-- ARGV[8..] events, as (type, data) pairs
-- Returns {the last id written ('' if none), whether a stop was asked (0/1)};
-- {'', 1} once the run is no longer running.
--
-- A batch sent again after a lost reply (a dropped connection, a client retry)
-- is written once: its number is kept. The hot path: no TTL refresh here, the
-- worker's heartbeat does that.

local batch = ARGV[7]

if redis.call('HGET', run, 'status') ~= 'running' then return {'', 1} end
if batch ~= '' then
  if redis.call('HGET', run, 'batch') == batch then
    return {'', redis.call('EXISTS', cancel)}
  end
  redis.call('HSET', run, 'batch', batch)
end
add_from(8)
return {last_id, redis.call('EXISTS', cancel)}
