-- reclaim_stale_aggregation_sets: put the tasks of aggregation sets past their deadline (the aggregating
-- worker died or its aggregate function failed) back into their group, so a later check aggregates them.
-- KEYS[1] aggregation sets <ns>:{q}:aggregation_sets
-- KEYS[2] groups set       <ns>:{q}:groups
-- ARGV[1] now, Unix seconds
-- ARGV[2] group key prefix <ns>:{q}:g:
-- returns the number of sets reclaimed
local stale = redis.call("ZRANGE", KEYS[1], "-inf", ARGV[1], "BYSCORE")
for _, set_key in ipairs(stale) do
  -- set key = <group key>:<set id>; a set id (UUID) has no colon, a group name may
  local cut = string.find(set_key, ":[^:]*$")
  local group_key = string.sub(set_key, 1, cut - 1)
  local members = redis.call("ZRANGE", set_key, 0, -1, "WITHSCORES")
  if #members > 0 then
    local scored = {}
    for i = 1, #members, 2 do
      scored[#scored + 1] = members[i + 1]
      scored[#scored + 1] = members[i]
    end
    redis.call("ZADD", group_key, unpack(scored))
    redis.call("SADD", KEYS[2], string.sub(group_key, #ARGV[2] + 1))
  end
  redis.call("DEL", set_key)
  redis.call("ZREM", KEYS[1], set_key)
end
return #stale
