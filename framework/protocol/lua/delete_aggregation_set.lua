-- delete_aggregation_set: after the aggregated task was enqueued, delete the set and its member tasks.
-- A member's uniqueness lock is released when that member holds it.
-- KEYS[1] aggregation set  <ns>:{q}:g:<group>:<set id>
-- KEYS[2] aggregation sets <ns>:{q}:aggregation_sets
-- ARGV[1] task key prefix <ns>:{q}:t:
-- returns the number of member tasks deleted
local ids = redis.call("ZRANGE", KEYS[1], 0, -1)
local n = 0
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
