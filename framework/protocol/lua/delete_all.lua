-- delete_all: one batch of Inspector "delete all": delete up to N tasks of one state and their
-- records, releasing each uniqueness lock the task holds. Pending tasks are taken oldest first.
-- Called again until it takes fewer than N ids.
-- KEYS[1] source: pending list <ns>:{q}:pending, or zset <ns>:{q}:scheduled | retry | archived |
--         completed | g:<group>
-- KEYS[2] groups set <ns>:{q}:groups
-- ARGV[1] task key prefix <ns>:{q}:t:
-- ARGV[2] N, the most ids to take
-- ARGV[3] "list" or "zset": the type of KEYS[1]
-- ARGV[4] group name when KEYS[1] is a group zset, else ""
-- ARGV[5] optional: the queue's prefix of the framework's own keys <ext>:{q}: (absent or "" = announce nothing)
-- ARGV[6] optional: what is announced (default "deleted"; "deleted\nqueue" when the queue is being removed)
-- returns {ids taken from the source, task records deleted}
--
-- Announcing: each task whose waiting marker <ext>:{q}:waiting:<id> exists has ARGV[6] published on
-- <ext>:{q}:outcome:<id>, and the marker deleted. The queue's flag <ext>:{q}:waited (set beside every marker,
-- expiring no sooner) is looked at first: a batch of a queue nobody waits on pays one EXISTS.
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
local deleted = 0
for _, id in ipairs(ids) do
  local key = ARGV[1] .. id
  local unique_key = redis.call("HGET", key, "unique_key")
  if unique_key then
    release_unique(unique_key, id)
  end
  deleted = deleted + redis.call("DEL", key)
end
announce_removed(ARGV[5] or "", ids, ARGV[6] or "deleted")
if ARGV[4] ~= "" and redis.call("ZCARD", KEYS[1]) == 0 then
  redis.call("SREM", KEYS[2], ARGV[4])
end
return {#ids, deleted}
