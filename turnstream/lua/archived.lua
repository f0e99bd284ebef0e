-- archived: note that SQL holds the run's events through an id, and trim what that frees.
--
-- Runs after _prelude.lua: KEYS[1..5] and ARGV[1..6] are the prelude's.
-- ARGV[7]  the newest entry id SQL holds (runs/archiver.py copied it and every one before)
-- Returns 1 if the mark moved on, 0 if not: the run's keys are gone, the run is not
-- archived (no `archived_through`: archiving was off when it was created), or the
-- mark is at that id or past it already. The mark only moves forward.

local through = ARGV[7]

local function id_key(id)
  local ms, n = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(n)
end

local current = redis.call('HGET', run, 'archived_through')
if not current then return 0 end
local current_ms, current_n = id_key(current)
local through_ms, through_n = id_key(through)
if through_ms < current_ms or (through_ms == current_ms and through_n <= current_n) then
  return 0
end
redis.call('HSET', run, 'archived_through', through)
trim_now()
return 1
