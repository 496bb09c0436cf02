-- run_all: one batch of Inspector "run all": make up to N tasks of one zset pending now.
-- Called again until it takes fewer than N ids. IDs without a task record are dropped, not moved, and so
-- are IDs whose record is in another state (a stale entry: the task is elsewhere, perhaps running).
-- KEYS[1] source zset <ns>:{q}:scheduled | retry | archived | completed | g:<group>
-- KEYS[2] pending     <ns>:{q}:pending
-- KEYS[3] groups set  <ns>:{q}:groups
-- ARGV[1] task key prefix <ns>:{q}:t:
-- ARGV[2] N, the most ids to take
-- ARGV[3] group name when KEYS[1] is a group zset, else ""
-- ARGV[4] now, nanoseconds (pending_since)
-- ARGV[5] wake-up channel ("" = do not publish)
-- ARGV[6] queue name
-- ARGV[7] optional: the state of the tasks of KEYS[1] (absent or "" = not checked)
-- returns {ids taken from the source, tasks made pending}
local ids = redis.call("ZRANGE", KEYS[1], 0, tonumber(ARGV[2]) - 1)
if #ids == 0 then
  return {0, 0}
end
local want = ARGV[7] or ""
local moved = 0
for _, id in ipairs(ids) do
  local key = ARGV[1] .. id
  if bulk_target(key, want) then
    redis.call("HSET", key, "state", "pending", "pending_since", ARGV[4])
    redis.call("LPUSH", KEYS[2], id)
    moved = moved + 1
  end
end
redis.call("ZREM", KEYS[1], unpack(ids))
if ARGV[3] ~= "" and redis.call("ZCARD", KEYS[1]) == 0 then
  redis.call("SREM", KEYS[3], ARGV[3])
end
if moved > 0 and ARGV[5] ~= "" then
  redis.call("PUBLISH", ARGV[5], ARGV[6])
end
return {#ids, moved}
