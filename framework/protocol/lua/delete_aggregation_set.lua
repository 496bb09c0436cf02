-- delete_aggregation_set: after the aggregated task was enqueued, delete the set and its member tasks.
-- A member's uniqueness lock is released when that member holds it.
-- KEYS[1] aggregation set  <ns>:{q}:g:<group>:<set id>
-- KEYS[2] aggregation sets <ns>:{q}:aggregation_sets
-- ARGV[1] task key prefix <ns>:{q}:t:
-- ARGV[2] optional: the queue's prefix of the framework's own keys <ext>:{q}: (absent or "" = announce nothing)
-- returns the number of member tasks deleted
--
-- Announcing: each member whose waiting marker <ext>:{q}:waiting:<id> exists has "aggregated\n<set id>"
-- published on <ext>:{q}:outcome:<id> (the set id is the aggregate task's id that our aggregator gives), and
-- the marker deleted; the queue's flag <ext>:{q}:waited is looked at first, as in done.lua. Go's aggregator
-- announces nothing: its members' waiters find their records gone.
local ids = redis.call("ZRANGE", KEYS[1], 0, -1)
local n = 0
announce_removed(ARGV[2] or "", ids, "aggregated\n" .. string.match(KEYS[1], "([^:]*)$"))
for _, id in ipairs(ids) do
  local key = ARGV[1] .. id
  local unique_key = redis.call("HGET", key, "unique_key")
  if unique_key and unique_key ~= "" and redis.call("GET", unique_key) == id then
    redis.call("DEL", unique_key)
  end
  n = n + redis.call("DEL", key)
end
redis.call("DEL", KEYS[1])
redis.call("ZREM", KEYS[2], KEYS[1])
return n
