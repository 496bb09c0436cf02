-- aggregation_failed: count a failed attempt to aggregate a staged set (its aggregate function raised, returned
-- what could not be enqueued, or did not return in time) on each of its tasks, and archive the tasks that reached
-- the most attempts, so that a batch the function always fails on is not staged again for good.
-- A task's attempts are kept in its record (field fw_agg_attempts, ours; asynq ignores it), so they outlive the set:
-- reclaim_stale_aggregation_sets.lua puts the task back into its group with them, and they go on counting in the
-- next set it is staged in. A task that reached the most attempts leaves the set in this step: it is archived
-- (state archived, in the archive at now, the archive trimmed to its caps as every archive is) with the message
-- given for it (the caller's, its error_msg and last_failed_at set, which name the attempts) and its count
-- cleared: run again from the archive (by any client), it may come back into its group through a retry, and
-- then has its full attempts again, as a task new to the group. Or it is deleted when the message given is "" (the
-- caller cannot decode its message: aggregating the set would have deleted it too), releasing the uniqueness lock
-- it holds. Once none of its tasks is left the set is deleted; otherwise the others stay staged, and go back into
-- their group at the set's deadline as after any failed attempt.
-- Nothing is done to a set no longer registered (a recoverer reclaimed it, or it was deleted) or whose aggregate
-- task was enqueued (a task record under the set id: reclaim_stale_aggregation_sets.lua deletes it), nor to ids
-- whose record is gone or no longer an aggregating task (read_aggregation_set.lua leaves them out too).
-- KEYS[1] aggregation set  <ns>:{q}:g:<group>:<set id>
-- KEYS[2] aggregation sets <ns>:{q}:aggregation_sets
-- KEYS[3] archived         <ns>:{q}:archived
-- ARGV[1] task key prefix <ns>:{q}:t:
-- ARGV[2] most attempts (at least 1)
-- ARGV[3] now, Unix seconds
-- ARGV[4] cutoff: archived before this are deleted (now - 90 days)
-- ARGV[5] most archived tasks kept (10000)
-- ARGV[6] the queue's prefix of the framework's own keys <ext>:{q}: ("" = announce nothing)
-- ARGV[7], ARGV[8], ... pairs: a task id, the message it is archived with ("" = delete the task)
-- returns {0}: nothing done, the set is gone or merged;
--         {1, id, attempts, msg, ...}: nothing done, these tasks reach the most attempts with this one and no
--         message was given for them (their current messages, for the caller to call again with theirs);
--         {2, attempts, archived, deleted, left}: counted; the most attempts a task of the set has now, how many
--         tasks were archived and deleted, how many are left staged
--
-- Announcing: each task archived whose waiting marker <ext>:{q}:waiting:<id> exists has "archived" published on
-- <ext>:{q}:outcome:<id>, as the worker's archive does, and the marker deleted ("deleted" when the caps dropped it
-- at once: its record is gone); each task deleted has "deleted" published. The queue's flag <ext>:{q}:waited is
-- looked at first, as in archive_all.lua.

if not redis.call("ZSCORE", KEYS[2], KEYS[1]) then
  return {0}
end
local task_prefix = ARGV[1]
local set_id = string.match(KEYS[1], "([^:]*)$")
if set_id ~= "" and redis.call("EXISTS", task_prefix .. set_id) == 1 then
  return {0}
end
local most = tonumber(ARGV[2])
local given = {}
for i = 7, #ARGV - 1, 2 do
  given[ARGV[i]] = ARGV[i + 1]
end

-- first only read: a task that reaches the most attempts needs its message before anything is written
local staged = {}
local due = {1}
for _, id in ipairs(redis.call("ZRANGE", KEYS[1], 0, -1)) do
  local fields = redis.call("HMGET", task_prefix .. id, "msg", "state", "fw_agg_attempts")
  if fields[1] and (not fields[2] or fields[2] == "aggregating") then
    local n = (tonumber(fields[3]) or 0) + 1
    staged[#staged + 1] = {id, n}
    if n >= most and not given[id] then
      due[#due + 1] = id
      due[#due + 1] = n
      due[#due + 1] = fields[1]
    end
  end
end
if #due > 1 then
  return due
end

local top = 0
local archived = {}
local deleted = {}
for _, task in ipairs(staged) do
  local id, n = task[1], task[2]
  local key = task_prefix .. id
  if n > top then
    top = n
  end
  if n < most then
    redis.call("HSET", key, "fw_agg_attempts", n)
  else
    if given[id] == "" then
      release_unique(redis.call("HGET", key, "unique_key") or "", id)
      redis.call("DEL", key)
      deleted[#deleted + 1] = id
    else
      redis.call("HSET", key, "msg", given[id], "state", "archived")
      redis.call("HDEL", key, "fw_agg_attempts")
      redis.call("ZADD", KEYS[3], ARGV[3], id)
      archived[#archived + 1] = id
    end
    redis.call("ZREM", KEYS[1], id)
  end
end
local left = #staged - #archived - #deleted
if left == 0 and #archived + #deleted > 0 then
  redis.call("DEL", KEYS[1])
  redis.call("ZREM", KEYS[2], KEYS[1])
end
if #archived > 0 then
  trim_archive(KEYS[3], ARGV[4], ARGV[5], task_prefix)
end
local xprefix = ARGV[6]
if xprefix ~= "" and #archived + #deleted > 0 and redis.call("EXISTS", xprefix .. "waited") == 1 then
  for _, id in ipairs(archived) do
    if redis.call("EXISTS", task_prefix .. id) == 1 then
      announce(xprefix, id, "archived")
    else
      announce(xprefix, id, "deleted")
    end
  end
  for _, id in ipairs(deleted) do
    announce(xprefix, id, "deleted")
  end
end
return {2, top, #archived, #deleted, left}
