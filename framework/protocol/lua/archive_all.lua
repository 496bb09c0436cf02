-- archive_all: one batch of Inspector "archive all": archive up to N tasks of one state, then trim
-- the archive to its caps (as every archive does). Pending tasks are taken oldest first.
-- Called again until it takes fewer than N ids. IDs without a task record are dropped, and so are IDs whose
-- record names another task state (a stale entry: the task is elsewhere, perhaps running).
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
-- ARGV[8] optional: the state of the tasks of KEYS[1] (absent or "" = not checked)
-- ARGV[9] optional: the queue's prefix of the framework's own keys <ext>:{q}: (absent or "" = announce nothing)
-- ARGV[10] optional, for a list: the id that was at its left end (the newest) when the tasks were counted;
--          the tasks left of it came after the count and are not taken, nor any once it left the list
--          (absent or "" = no bound)
-- returns {ids taken from the source, tasks archived}
--
-- Announcing: each task archived whose waiting marker <ext>:{q}:waiting:<id> exists has "archived" published
-- on <ext>:{q}:outcome:<id>, as the worker's archive does, and the marker deleted; one the caps dropped at
-- once (more were archived than the archive keeps) has "deleted" published instead: it will not run, and its
-- record is gone. The queue's flag <ext>:{q}:waited is looked at first, as in delete_all.

local n = tonumber(ARGV[2])
local ids = take_batch(KEYS[1], ARGV[3], n, ARGV[10] or "", ARGV[1])
if #ids == 0 then
  return {0, 0}
end
local want = ARGV[8] or ""
local archived = {}
for _, id in ipairs(ids) do
  local key = ARGV[1] .. id
  if bulk_target(key, want) then
    redis.call("HSET", key, "state", "archived")
    redis.call("HDEL", key, "pending_since")
    redis.call("ZADD", KEYS[2], ARGV[5], id)
    archived[#archived + 1] = id
  end
end
if ARGV[4] ~= "" and redis.call("ZCARD", KEYS[1]) == 0 then
  redis.call("SREM", KEYS[3], ARGV[4])
end
trim_archive(KEYS[2], ARGV[6], ARGV[7], ARGV[1])
local xprefix = ARGV[9] or ""
if xprefix ~= "" and #archived > 0 and redis.call("EXISTS", xprefix .. "waited") == 1 then
  for _, id in ipairs(archived) do
    if redis.call("EXISTS", ARGV[1] .. id) == 1 then
      announce(xprefix, id, "archived")
    else
      announce(xprefix, id, "deleted")
    end
  end
end
return {#ids, #archived}
