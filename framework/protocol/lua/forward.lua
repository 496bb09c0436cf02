-- forward: move due tasks from the scheduled or retry zset to pending (or back to their group).
-- KEYS[1] source zset <ns>:{q}:scheduled or <ns>:{q}:retry
-- KEYS[2] pending     <ns>:{q}:pending
-- KEYS[3] groups set  <ns>:{q}:groups
-- ARGV[1] now, Unix seconds
-- ARGV[2] task key prefix  <ns>:{q}:t:
-- ARGV[3] now, nanoseconds (pending_since)
-- ARGV[4] group key prefix <ns>:{q}:g:
-- ARGV[5] wake-up channel ("" = do not publish)
-- ARGV[6] queue name
-- returns {ids taken (at most 100), score of the earliest task left or -1}
-- An id without a task record is dropped from the source rather than given a record without a msg.
-- A task back into its group has left any aggregation it failed in (it ran since, or was archived and run again):
-- the failed attempts counted on it then (fw_agg_attempts, see aggregation_failed.lua) are cleared.
local ids = redis.call("ZRANGE", KEYS[1], "-inf", ARGV[1], "BYSCORE", "LIMIT", 0, 100)
local to_pending = 0
for _, id in ipairs(ids) do
  local key = ARGV[2] .. id
  local group = redis.call("HGET", key, "group")
  if redis.call("HEXISTS", key, "msg") == 0 then
    -- dangling id: nothing to run
  elseif group and group ~= "" then
    redis.call("ZADD", ARGV[4] .. group, ARGV[1], id)
    redis.call("SADD", KEYS[3], group)
    redis.call("HSET", key, "state", "aggregating")
    redis.call("HDEL", key, "fw_agg_attempts")
  else
    redis.call("LPUSH", KEYS[2], id)
    redis.call("HSET", key, "state", "pending", "pending_since", ARGV[3])
    to_pending = to_pending + 1
  end
end
if #ids > 0 then
  redis.call("ZREM", KEYS[1], unpack(ids))
end
if to_pending > 0 and ARGV[5] ~= "" then
  redis.call("PUBLISH", ARGV[5], ARGV[6])
end
local nxt = redis.call("ZRANGE", KEYS[1], 0, 0, "WITHSCORES")
if #nxt == 0 then
  return {#ids, -1}
end
return {#ids, tonumber(nxt[2])}
