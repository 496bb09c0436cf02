-- archive_task: archive one non-active task now (Inspector "archive"): pending, scheduled, retry,
-- completed or aggregating -> archived, then trim the archive to its caps as the worker's archive does.
-- The message is not changed (no error is recorded); the score is the time of archiving.
-- KEYS[1] task hash  <ns>:{q}:t:<id>
-- KEYS[2] pending    <ns>:{q}:pending
-- KEYS[3] scheduled  <ns>:{q}:scheduled
-- KEYS[4] retry      <ns>:{q}:retry
-- KEYS[5] archived   <ns>:{q}:archived
-- KEYS[6] completed  <ns>:{q}:completed
-- KEYS[7] groups set <ns>:{q}:groups
-- ARGV[1] task id
-- ARGV[2] group key prefix <ns>:{q}:g:
-- ARGV[3] now, Unix seconds
-- ARGV[4] cutoff: archived before this are deleted (now - 90 days)
-- ARGV[5] most archived tasks kept (10000)
-- ARGV[6] task key prefix <ns>:{q}:t:
-- ARGV[7] optional: the queue's prefix of the framework's own keys <ext>:{q}: (absent or "" = announce nothing)
-- returns 1 archived, 0 not found, -1 the task is active, -2 the task is already archived
--
-- Announcing: when the task's waiting marker <ext>:{q}:waiting:<id> exists, "archived" is published on
-- <ext>:{q}:outcome:<id>, as the worker's archive does, and the marker deleted; "deleted" instead when the
-- caps dropped the task at once (its record is gone).

local id = ARGV[1]
local fields = redis.call("HMGET", KEYS[1], "msg", "state", "group")
local state = fields[2]
if not fields[1] or not state then
  return 0
end
if state == "active" then
  return -1
end
if state == "archived" then
  return -2
end
local removed = 0
if state == "pending" then
  removed = redis.call("LREM", KEYS[2], 0, id)
elseif state == "aggregating" then
  removed = leave_group(ARGV[2], fields[3] or "", id, KEYS[7])
else
  local sources = {scheduled = KEYS[3], retry = KEYS[4], completed = KEYS[6]}
  if sources[state] then
    removed = redis.call("ZREM", sources[state], id)
  end
end
if removed == 0 then
  return 0
end
redis.call("ZADD", KEYS[5], ARGV[3], id)
redis.call("HSET", KEYS[1], "state", "archived")
redis.call("HDEL", KEYS[1], "pending_since")
trim_archive(KEYS[5], ARGV[4], ARGV[5], ARGV[6])
if redis.call("EXISTS", KEYS[1]) == 1 then
  announce(ARGV[7] or "", id, "archived")
else
  announce(ARGV[7] or "", id, "deleted")
end
return 1
