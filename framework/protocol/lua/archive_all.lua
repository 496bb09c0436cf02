-- archive_all: one batch of Inspector "archive all": archive up to N tasks of one state, then trim
-- the archive to its caps (as every archive does). Pending tasks are taken oldest first.
-- Called again until it takes fewer than N ids. IDs without a task record are dropped.
-- KEYS[1] source: pending list <ns>:{q}:pending, or zset <ns>:{q}:scheduled | retry | completed | g:<group>
-- KEYS[2] archived   <ns>:{q}:archived
-- KEYS[3] groups set <ns>:{q}:groups
-- ARGV[1] task key prefix <ns>:{q}:t:
-- ARGV[2] N, the most ids to take
-- ARGV[3] "list" or "zset": the type of KEYS[1]
-- ARGV[4] group name when KEYS[1] is a group zset, else ""
-- ARGV[5] now, Unix seconds
-- ARGV[6] cutoff: archived before this are deleted (now - 90 days)
-- ARGV[7] most archived tasks kept (10000)
-- returns {ids taken from the source, tasks archived}
local n = tonumber(ARGV[2])
local ids
if ARGV[3] == "list" then
  ids = redis.call("LRANGE", KEYS[1], -n, -1)
  if #ids > 0 then
    redis.call("LTRIM", KEYS[1], 0, -(#ids + 1))
  end
else
  ids = redis.call("ZRANGE", KEYS[1], 0, n - 1)
  if #ids > 0 then
    redis.call("ZREM", KEYS[1], unpack(ids))
  end
end
if #ids == 0 then
  return {0, 0}
end
local moved = 0
for _, id in ipairs(ids) do
  local key = ARGV[1] .. id
  if redis.call("EXISTS", key) == 1 then
    redis.call("HSET", key, "state", "archived")
    redis.call("HDEL", key, "pending_since")
    redis.call("ZADD", KEYS[2], ARGV[5], id)
    moved = moved + 1
  end
end
if ARGV[4] ~= "" and redis.call("ZCARD", KEYS[1]) == 0 then
  redis.call("SREM", KEYS[3], ARGV[4])
end
local old = redis.call("ZRANGE", KEYS[2], "-inf", ARGV[6], "BYSCORE")
for _, id in ipairs(old) do
  redis.call("DEL", ARGV[1] .. id)
end
if #old > 0 then
  redis.call("ZREMRANGEBYSCORE", KEYS[2], "-inf", ARGV[6])
end
local excess = redis.call("ZRANGE", KEYS[2], 0, -(tonumber(ARGV[7]) + 1))
for _, id in ipairs(excess) do
  redis.call("DEL", ARGV[1] .. id)
end
if #excess > 0 then
  redis.call("ZREMRANGEBYRANK", KEYS[2], 0, -(tonumber(ARGV[7]) + 1))
end
return {#ids, moved}
