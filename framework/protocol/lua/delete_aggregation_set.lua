-- delete_aggregation_set: after the aggregated task was enqueued, delete the set and its member tasks.
-- A member's uniqueness lock is released when that member holds it. A member whose record is no longer an
-- aggregating task (it was deleted while staged, and its id taken by a new task) is left alone.
-- KEYS[1] aggregation set  <ns>:{q}:g:<group>:<set id>
-- KEYS[2] aggregation sets <ns>:{q}:aggregation_sets
-- ARGV[1] task key prefix <ns>:{q}:t:
-- ARGV[2] optional: the queue's prefix of the framework's own keys <ext>:{q}: (absent or "" = announce nothing)
-- ARGV[3] optional: the aggregate task's id (absent or "" = the set id)
-- returns the number of member tasks deleted
--
-- Announcing: each member whose waiting marker <ext>:{q}:waiting:<id> exists has "aggregated\n<aggregate id>"
-- published on <ext>:{q}:outcome:<id>, and the marker deleted; the queue's flag <ext>:{q}:waited is looked at
-- first, as in done.lua. Go's aggregator announces nothing: its members' waiters find their records gone.
local aggregate_id = ARGV[3] or ""
if aggregate_id == "" then
  aggregate_id = string.match(KEYS[1], "([^:]*)$")
end
local n = delete_merged(KEYS[1], ARGV[1], ARGV[2] or "", aggregate_id)
redis.call("DEL", KEYS[1])
redis.call("ZREM", KEYS[2], KEYS[1])
return n
