-- reclaim_stale_aggregation_sets: put the tasks of aggregation sets past their deadline (the aggregating
-- worker died or its aggregate function failed) back into their group, so a later check aggregates them.
-- A task put back keeps the failed attempts counted on it (fw_agg_attempts): aggregation_failed.lua archives
-- it once they reach its aggregator's max_attempts.
-- Given the task key prefix, ids without a task record (deleted while staged) or whose record is no longer
-- an aggregating task (its id since taken by a new task) are dropped, not put back.
-- A set whose aggregate task was enqueued (a task record whose id is the set id: our aggregator gives the
-- aggregate that id) had its worker die before it deleted the set: its tasks are merged already, so they
-- are deleted as delete_aggregation_set.lua does, not put back to be merged again.
-- KEYS[1] aggregation sets <ns>:{q}:aggregation_sets
-- KEYS[2] groups set       <ns>:{q}:groups
-- ARGV[1] now, Unix seconds
-- ARGV[2] group key prefix <ns>:{q}:g:
-- ARGV[3] optional: task key prefix <ns>:{q}:t: (absent or "" = every set and id is put back, as asynq does)
-- ARGV[4] optional: the queue's prefix of the framework's own keys <ext>:{q}: (absent or "" = announce nothing)
-- returns the number of sets reclaimed (put back or deleted)
local task_prefix = ARGV[3] or ""
local stale = redis.call("ZRANGE", KEYS[1], "-inf", ARGV[1], "BYSCORE")
for _, set_key in ipairs(stale) do
  -- set key = <group key>:<set id>; a set id (UUID) has no colon, a group name may
  local cut = string.find(set_key, ":[^:]*$")
  local group_key = string.sub(set_key, 1, cut - 1)
  local set_id = string.sub(set_key, cut + 1)
  if task_prefix ~= "" and set_id ~= "" and redis.call("EXISTS", task_prefix .. set_id) == 1 then
    delete_merged(set_key, task_prefix, ARGV[4] or "", set_id)
  else
    -- ZADD in chunks: unpack() takes a few thousand values at most, and a set may hold any number of tasks
    local members = redis.call("ZRANGE", set_key, 0, -1, "WITHSCORES")
    local scored = {}
    local put = 0
    for i = 1, #members, 2 do
      local keep = task_prefix == ""
      if not keep then
        local fields = redis.call("HMGET", task_prefix .. members[i], "msg", "state")
        keep = fields[1] and (not fields[2] or fields[2] == "aggregating")
      end
      if keep then
        scored[#scored + 1] = members[i + 1]
        scored[#scored + 1] = members[i]
        put = put + 1
      end
      if #scored == 1000 or (i + 1 == #members and #scored > 0) then
        redis.call("ZADD", group_key, unpack(scored))
        scored = {}
      end
    end
    if put > 0 then
      redis.call("SADD", KEYS[2], string.sub(group_key, #ARGV[2] + 1))
    end
  end
  redis.call("DEL", set_key)
  redis.call("ZREM", KEYS[1], set_key)
end
return #stale
