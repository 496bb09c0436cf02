-- aggregation_check: when a group is ready, move (up to max size of) its tasks into a new aggregation set.
-- A group is ready when it holds max size tasks or more, when its oldest task waited max delay, or when
-- no task joined it for the grace period. Empty groups are dropped from the groups set.
-- KEYS[1] group zset       <ns>:{q}:g:<group>
-- KEYS[2] aggregation set  <ns>:{q}:g:<group>:<set id> (new, set id = UUID)
-- KEYS[3] aggregation sets <ns>:{q}:aggregation_sets
-- KEYS[4] groups set       <ns>:{q}:groups
-- ARGV[1] max size (0 = no limit)
-- ARGV[2] max delay, seconds (0 = no limit)
-- ARGV[3] grace period, seconds
-- ARGV[4] deadline of the new set, Unix seconds (now + 2 min); past it the set is put back in the group
-- ARGV[5] now, Unix seconds (fractions allowed)
-- ARGV[6] group name
-- returns 1 when a set was created, 0 when the group is not ready (or empty)
local size = redis.call("ZCARD", KEYS[1])
if size == 0 then
  redis.call("SREM", KEYS[4], ARGV[6])
  return 0
end
local max_size = tonumber(ARGV[1])
local max_delay = tonumber(ARGV[2])
local now = tonumber(ARGV[5])
local ready = max_size > 0 and size >= max_size
if not ready and max_delay > 0 then
  local oldest = redis.call("ZRANGE", KEYS[1], 0, 0, "WITHSCORES")
  ready = tonumber(oldest[2]) <= now - max_delay
end
if not ready then
  -- scores are whole seconds: a task scored s joined during [s, s + 1), so it has been quiet for at
  -- least the grace period once s + 1 <= now - grace
  local newest = redis.call("ZRANGE", KEYS[1], -1, -1, "WITHSCORES")
  ready = tonumber(newest[2]) + 1 <= now - tonumber(ARGV[3])
end
if not ready then
  return 0
end
local take = size
if max_size > 0 and max_size < size then
  take = max_size
end
local members = redis.call("ZRANGE", KEYS[1], 0, take - 1, "WITHSCORES")
-- ZADD in chunks: unpack() takes a few thousand values at most, and a group may hold any number of tasks
local scored = {}
for i = 1, #members, 2 do
  scored[#scored + 1] = members[i + 1]
  scored[#scored + 1] = members[i]
  if #scored == 1000 or i + 1 == #members then
    redis.call("ZADD", KEYS[2], unpack(scored))
    scored = {}
  end
end
redis.call("ZREMRANGEBYRANK", KEYS[1], 0, take - 1)
redis.call("ZADD", KEYS[3], ARGV[4], KEYS[2])
if take == size then
  redis.call("SREM", KEYS[4], ARGV[6])
end
return 1
