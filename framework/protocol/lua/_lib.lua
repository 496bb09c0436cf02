-- Shared prelude, prepended to every script by scripts.py. Defines local helpers only.

-- bump(total, day, minute, n, day_expireat, minute_ttl)
-- INCRBY the daily counter (EXPIREAT set when it is created), the per-minute counter (framework's own
-- key, expires) and the all-time total, which restarts at n instead of overflowing MaxInt64.
local function bump(total, day, minute, n, day_expireat, minute_ttl)
  if redis.call("INCRBY", day, n) == n then
    redis.call("EXPIREAT", day, day_expireat)
  end
  if minute ~= "" and redis.call("INCRBY", minute, n) == n then
    redis.call("EXPIRE", minute, minute_ttl)
  end
  local ok = pcall(redis.call, "INCRBY", total, n)
  if not ok then
    redis.call("SET", total, n)
  end
end

-- release_unique(unique_key, id): delete the uniqueness lock only when this task holds it.
local function release_unique(unique_key, id)
  if unique_key ~= "" and redis.call("GET", unique_key) == id then
    redis.call("DEL", unique_key)
  end
end

-- Takes task id out of aggregation group <prefix><group> (a ZSET), and the group out of the queue's groups SET
-- when that empties it. Returns ZREM's count (1 when the task was in the group).
local function leave_group(prefix, group, id, groups)
  local gkey = prefix .. group
  local removed = redis.call("ZREM", gkey, id)
  if redis.call("ZCARD", gkey) == 0 then
    redis.call("SREM", groups, group)
  end
  return removed
end

-- join_group(group, groups, now, id, name): add the task id to its group zset and the group's name to the
-- queue's groups set, before its task hash is written; nil, or Redis's error when either key is of another
-- type, with nothing left written (a script's writes are not undone when it fails).
local function join_group(group, groups, now, id, name)
  local added = redis.pcall("SADD", groups, name)
  if type(added) == "table" then
    return added
  end
  local joined = redis.pcall("ZADD", group, now, id)
  if type(joined) == "table" then
    if added == 1 then
      redis.call("SREM", groups, name)
    end
    return joined
  end
  return nil
end

-- trim_archive(archived, cutoff, keep, task_prefix): keep the archive within its caps, as asynq does (tasks
-- archived before the cutoff go, then all but the newest keep). A task it drops loses its record, and the
-- uniqueness lock it holds (it holds it while archived; with its record gone the lock would only keep its
-- duplicates out until it expired). Returns nothing: a caller that archived a task tells whether the caps
-- dropped it at once by whether its record still exists.
local function trim_archive(archived, cutoff, keep, task_prefix)
  local function drop(id)
    local unique_key = redis.call("HGET", task_prefix .. id, "unique_key")
    if unique_key then
      release_unique(unique_key, id)
    end
    redis.call("DEL", task_prefix .. id)
  end
  local old = redis.call("ZRANGE", archived, "-inf", cutoff, "BYSCORE")
  for _, id in ipairs(old) do
    drop(id)
  end
  if #old > 0 then
    redis.call("ZREMRANGEBYSCORE", archived, "-inf", cutoff)
  end
  local excess = redis.call("ZRANGE", archived, 0, -(tonumber(keep) + 1))
  for _, id in ipairs(excess) do
    drop(id)
  end
  if #excess > 0 then
    redis.call("ZREMRANGEBYRANK", archived, 0, -(tonumber(keep) + 1))
  end
end

-- take_batch(source, kind, n, last, task_prefix): one batch of a bulk action: up to n ids taken off its source,
-- the oldest first. kind "list" (a pending list): not past ``last``, the newest id counted when the user
-- confirmed the action ("" = no bound; tasks enqueued after it are spared), and none once it left the list;
-- otherwise a zset, lowest scores first. Returns the ids, which are no longer in the source.
local function take_batch(source, kind, n, last, task_prefix)
  local ids
  if kind == "list" then
    ids = redis.call("LRANGE", source, -n, -1)
    if last ~= "" and #ids > 0 then
      local at = redis.call("LPOS", source, last, "RANK", -1, "MAXLEN", n)
      if at then -- the last one counted is among these: the ones left of it came after the count
        local len = redis.call("LLEN", source)
        ids = {unpack(ids, #ids - (len - at) + 1)}
      elseif #ids < n or redis.call("HGET", task_prefix .. last, "state") ~= "pending" then
        ids = {} -- it left the list, taken from this end like every task counted before it
      end
    end
    if #ids > 0 then
      redis.call("LTRIM", source, 0, -(#ids + 1))
    end
  else
    ids = redis.call("ZRANGE", source, 0, n - 1)
    if #ids > 0 then
      redis.call("ZREM", source, unpack(ids))
    end
  end
  return ids
end

local TASK_STATES = {pending = 1, active = 1, scheduled = 1, retry = 1, archived = 1, completed = 1, aggregating = 1}

-- listed_here(state, want): whether a bulk action may act on a task taken off the source of the tasks in state
-- ``want`` ("" = not checked) whose record says ``state``. A record in another of asynq's states is a stale
-- entry: the task is elsewhere (perhaps running) and is left alone.
local function listed_here(state, want)
  return want == "" or state == want or not TASK_STATES[state]
end

-- bulk_target(key, want): listed_here for the task whose record is ``key``; a record without a state counts
-- when it exists (an id without a record is only dropped from the source).
local function bulk_target(key, want)
  local state = redis.call("HGET", key, "state")
  if state then
    return listed_here(state, want)
  end
  return redis.call("EXISTS", key) == 1
end

-- hand_off(keys, ka, args, aa, pending, task_key, id, msg, unique_key): give a new task straight to an idle worker (framework's own path).
-- keys[ka..ka+3]: waiters <ext>:{q}:waiters, paused, active, lease; args[aa..aa+4]: queue name, lease expiry
-- (Unix s), in-flight key prefix <ext>:{q}:inflight:, handoff channel prefix <ext>:handoff:, in-flight TTL.
-- Only when a worker waits, nothing is pending (FIFO holds) and the queue is not paused. The most recent
-- waiter is tried first; the task is published on its channel and, when a subscriber got it, stored exactly
-- as asynq's dequeue leaves it (state active, in the active list, leased) and recorded in that worker's
-- in-flight set. A waiter nobody listens for any more (a dead or stopped worker) is dropped.
-- Returns true when the task was handed off (the caller stores nothing more).
local function hand_off(keys, ka, args, aa, pending, task_key, id, msg, unique_key)
  local waiters = keys[ka]
  if redis.call("LLEN", waiters) == 0 or redis.call("LLEN", pending) > 0 or redis.call("EXISTS", keys[ka + 1]) == 1 then
    return false
  end
  local queue = args[aa]
  local note = #queue .. ":" .. queue .. #id .. ":" .. id .. msg
  while true do
    local worker = redis.call("LPOP", waiters)
    if not worker then
      return false
    end
    if redis.call("PUBLISH", args[aa + 3] .. worker, note) > 0 then
      redis.call("HSET", task_key, "msg", msg, "state", "active")
      if unique_key then -- the lock's key, as asynq's unique enqueue stores it (its delete releases the lock)
        redis.call("HSET", task_key, "unique_key", unique_key)
      end
      redis.call("LPUSH", keys[ka + 2], id)
      redis.call("ZADD", keys[ka + 3], args[aa + 1], id)
      local inflight = args[aa + 2] .. worker
      redis.call("SADD", inflight, id)
      redis.call("EXPIRE", inflight, args[aa + 4])
      return true
    end
  end
end

-- Tell a task's waiters its outcome: when its waiting marker <ext>:{q}:waiting:<id> exists (xprefix =
-- <ext>:{q}:, "" = announce nothing), publish message on <ext>:{q}:outcome:<id> and delete the marker.
local function announce(xprefix, id, message)
  if xprefix ~= "" and redis.call("DEL", xprefix .. "waiting:" .. id) == 1 then
    redis.call("PUBLISH", xprefix .. "outcome:" .. id, message)
  end
end

-- The same for the tasks ids, removed before they ran. The queue's flag <ext>:{q}:waited is looked at
-- first: nobody waits, one EXISTS.
local function announce_removed(xprefix, ids, message)
  if xprefix == "" or #ids == 0 or redis.call("EXISTS", xprefix .. "waited") == 0 then
    return
  end
  for _, id in ipairs(ids) do
    announce(xprefix, id, message)
  end
end

-- delete_merged(set_key, task_prefix, xprefix, aggregate_id): delete the member tasks of an aggregation set whose
-- aggregate task was enqueued, releasing the uniqueness locks they hold, and tell their waiters (see
-- announce_removed) they were merged into ``aggregate_id``. A member whose record is no longer an aggregating
-- task (deleted while staged, its id since taken by a new task) is left alone. Returns the records deleted.
local function delete_merged(set_key, task_prefix, xprefix, aggregate_id)
  local ids = {}
  local unique_keys = {}
  for _, id in ipairs(redis.call("ZRANGE", set_key, 0, -1)) do
    local fields = redis.call("HMGET", task_prefix .. id, "state", "unique_key")
    if not fields[1] or fields[1] == "aggregating" then
      ids[#ids + 1] = id
      unique_keys[#ids] = fields[2] or ""
    end
  end
  announce_removed(xprefix, ids, "aggregated\n" .. aggregate_id)
  local n = 0
  for i, id in ipairs(ids) do
    release_unique(unique_keys[i], id)
    n = n + redis.call("DEL", task_prefix .. id)
  end
  return n
end
