-- delete_task: delete one non-active task and its record (Inspector "delete"), releasing its
-- uniqueness lock when this task holds it.
-- KEYS[1] task hash  <ns>:{q}:t:<id>
-- KEYS[2] pending    <ns>:{q}:pending
-- KEYS[3] scheduled  <ns>:{q}:scheduled
-- KEYS[4] retry      <ns>:{q}:retry
-- KEYS[5] archived   <ns>:{q}:archived
-- KEYS[6] completed  <ns>:{q}:completed
-- KEYS[7] groups set <ns>:{q}:groups
-- ARGV[1] task id
-- ARGV[2] group key prefix <ns>:{q}:g:
-- ARGV[3] optional: the queue's prefix of the framework's own keys <ext>:{q}: (absent or "" = announce nothing)
-- ARGV[4] optional: the aggregation sets <ns>:{q}:aggregation_sets (absent or "" = do not look for staged tasks)
-- returns 1 deleted, 0 not found or staged, -1 the task is active
--
-- A grouped task staged in an aggregation set (state aggregating, no longer in its group) is being merged into
-- an aggregate task: the aggregator may have read its payload already, so deleting its record would not keep
-- it from running in the aggregate. It is left alone (0; the caller tells it from "not found" by its state), as
-- archive_task.lua leaves it; if the aggregation fails the task is back in its group within minutes.
--
-- Announcing: when the task's waiting marker <ext>:{q}:waiting:<id> exists, "deleted" is published on
-- <ext>:{q}:outcome:<id> and the marker deleted, so its waiters learn it will not run (Go's delete announces
-- nothing; its waiters find the record gone).
-- staged(sets, prefix, id): whether an aggregation set of the group (a key of sets starting with prefix) holds id
local function staged(sets, prefix, id)
  if sets == "" then
    return false
  end
  for _, set in ipairs(redis.call("ZRANGE", sets, 0, -1)) do
    if string.sub(set, 1, #prefix) == prefix and redis.call("ZSCORE", set, id) then
      return true
    end
  end
  return false
end

local id = ARGV[1]
local fields = redis.call("HMGET", KEYS[1], "msg", "state", "group", "unique_key")
local state = fields[2]
if not fields[1] or not state then
  return 0
end
if state == "active" then
  return -1
end
if state == "pending" then
  redis.call("LREM", KEYS[2], 0, id)
elseif state == "aggregating" then
  local group = fields[3] or ""
  if leave_group(ARGV[2], group, id, KEYS[7]) == 0 and staged(ARGV[4] or "", ARGV[2] .. group .. ":", id) then
    return 0
  end
else
  local sources = {scheduled = KEYS[3], retry = KEYS[4], archived = KEYS[5], completed = KEYS[6]}
  if sources[state] then
    redis.call("ZREM", sources[state], id)
  else
    -- a state that names no state (another client's record, or damaged): wherever the id is, it goes
    redis.call("LREM", KEYS[2], 0, id)
    for _, key in ipairs({KEYS[3], KEYS[4], KEYS[5], KEYS[6]}) do
      redis.call("ZREM", key, id)
    end
    if fields[3] and fields[3] ~= "" then
      leave_group(ARGV[2], fields[3], id, KEYS[7])
    end
  end
end
redis.call("DEL", KEYS[1])
release_unique(fields[4] or "", id)
announce(ARGV[3] or "", id, "deleted")
return 1
