-- Workflow helpers, prepended after _lib.lua to the wf_*.lua scripts. Defines local helpers only.
--
-- A workflow W lives under its home queue's prefix of the framework's own keys, <ext>:{home}:wf:<id>:
--   <...>          HASH meta: name, status (running | failed | succeeded | cancelled), created, finished, total,
--                  done (steps finished: succeeded, or failed with their failure handed on), failed (steps
--                  failed that block their dependants), open (steps released as tasks and not finished),
--                  retention / kept (seconds the keys live once it ends: succeeded / otherwise), outputs
--                  (the final steps, "\n"-joined), grouped ("1": the final result is a list), error, queue, id
--   <...>:state    HASH step -> waiting | pending (released as an asynq task) | succeeded | failed | lost |
--                  cancelled
--   <...>:graph    HASH per step s: l:s dependencies not finished yet, d:s its dependencies ("\n"-joined, in
--                  order), n:s its dependants, t:s "queue\ntask id", m:s the encoded TaskMessage (kept, so a
--                  lost step can be released again), c:s "1" when its failure is handed on, u:s "lock\nttl"
--                  of a unique step, e:s the error it failed with (cleared when it runs again or succeeds),
--                  r:s "1" while a step retry_workflow resumed is still stopping for the cancel it undid
--   <...>:results  HASH step -> its result (JSON)
--   <...>:end      Pub/Sub channel: the new status each time it changes to failed, succeeded or cancelled
--   <ext>:{home}:workflows:running  ZSET id -> created: the workflows not ended (the checker walks these)
--
-- wf_env(keys, k, args, a): the workflow's keys at keys[k..k+4] (meta, state, graph, results, running) and
-- args[a..a+8]: ns, ext, now (Unix s), now (ns), lease expiry (Unix s), in-flight TTL (s), handoff channel
-- prefix ("" = no handoff), wake-up channel ("" = none), workflow id.

local function wf_env(keys, k, args, a)
  return {
    meta = keys[k], state = keys[k + 1], graph = keys[k + 2], results = keys[k + 3], running = keys[k + 4],
    channel = keys[k] .. ":end",
    ns = args[a], ext = args[a + 1], now = args[a + 2], now_ns = args[a + 3], lease = args[a + 4],
    ttl = args[a + 5], handoff = args[a + 6], wakeup = args[a + 7], id = args[a + 8],
  }
end

-- the "\n"-separated parts of s (none for nil, false or "")
local function wf_lines(s)
  local out = {}
  if s then
    for part in string.gmatch(s, "[^\n]+") do
      out[#out + 1] = part
    end
  end
  return out
end

-- the asynq key prefix and our own key prefix of queue q
local function wf_prefixes(W, queue)
  return W.ns .. ":{" .. queue .. "}:", W.ext .. ":{" .. queue .. "}:"
end

-- wf_task(W, step): the queue and id of the step's task, and that queue's asynq and own key prefixes
local function wf_task(W, step)
  local where = wf_lines(redis.call("HGET", W.graph, "t:" .. step))
  local qp, xp = wf_prefixes(W, where[1])
  return where[1], where[2], qp, xp
end

local KEEP = { "meta", "state", "graph", "results" }

-- wf_reopen(W): a workflow that ended (its keys expiring, out of the running index) has a step at work again
-- without being resumed: one of its archived steps was run again, and succeeded (its result is stored, its
-- dependants may be released) while another failed step still keeps the workflow failed. Its keys stop
-- expiring and it is back in the running index, until wf_settle ends it again once none of its steps runs:
-- the keeping time counts from then, every key of it expires together, and the checker watches what it
-- released.
local function wf_reopen(W)
  if redis.call("HDEL", W.meta, "finished") == 0 then
    return
  end
  for _, name in ipairs(KEEP) do
    redis.call("PERSIST", W[name])
  end
  redis.call("ZADD", W.running, redis.call("HGET", W.meta, "created"), W.id)
end

-- wf_gone(W): true when the workflow's record has no status: it expired, or it was deleted by hand. What is
-- left of it (a step's state, the graph, results) is deleted with it: a step finishing then changes nothing,
-- neither releasing dependants of a workflow that is gone nor writing a record without a status.
local function wf_gone(W)
  if redis.call("HEXISTS", W.meta, "status") == 1 then
    return false
  end
  redis.call("DEL", W.meta, W.state, W.graph, W.results)
  return true
end

-- wf_release(W, step): the step may run: store its task as asynq's enqueue does (or hand it to an idle
-- worker). Returns nil, or the error that keeps it from running (its unique lock is held, its id is taken).
local function wf_release(W, step)
  local spec = redis.call("HMGET", W.graph, "t:" .. step, "m:" .. step, "u:" .. step)
  local where = wf_lines(spec[1])
  local queue, id, msg = where[1], where[2], spec[2]
  local qp, xp = wf_prefixes(W, queue)
  local task_key = qp .. "t:" .. id
  if redis.call("EXISTS", task_key) == 1 then
    return "TaskIdConflict: a task with id " .. id .. " already exists in queue " .. queue
  end
  local unique_key = nil
  if spec[3] then
    local lock = wf_lines(spec[3])
    if not redis.call("SET", lock[1], id, "NX", "EX", lock[2]) then
      return "DuplicateTask: a task with the same type and payload holds the unique lock in queue " .. queue
    end
    unique_key = lock[1]
  end
  redis.call("SADD", W.ns .. ":queues", queue)
  local handed = false
  if W.handoff ~= "" then
    local hk = { xp .. "waiters", qp .. "paused", qp .. "active", qp .. "lease" }
    local ha = { queue, W.lease, xp .. "inflight:", W.handoff, W.ttl }
    handed = hand_off(hk, 1, ha, 1, qp .. "pending", task_key, id, msg, unique_key)
  end
  if not handed then
    redis.call("HSET", task_key, "msg", msg, "state", "pending", "pending_since", W.now_ns)
    if unique_key then -- as asynq's unique enqueue: its delete (and ours) releases the lock through this field
      redis.call("HSET", task_key, "unique_key", unique_key)
    end
    if redis.call("LPUSH", qp .. "pending", id) == 1 and W.wakeup ~= "" then
      redis.call("PUBLISH", W.wakeup, queue)
    end
  end
  wf_reopen(W)
  redis.call("HSET", W.state, step, "pending")
  redis.call("HDEL", W.graph, "e:" .. step)
  redis.call("HINCRBY", W.meta, "open", 1)
  return nil
end

-- wf_settle(W): after a change, end the workflow when it can end: succeeded once every step is done;
-- failed or cancelled once no step of it is still released. An ended workflow's keys expire (retention for
-- a success, kept otherwise) and it leaves the running index.
local function wf_settle(W)
  local m = redis.call("HMGET", W.meta, "status", "total", "done", "open", "finished", "retention", "kept")
  local status = m[1]
  if status == "running" and tonumber(m[3]) >= tonumber(m[2]) then
    status = "succeeded"
    redis.call("HSET", W.meta, "status", status)
    redis.call("PUBLISH", W.channel, status)
  end
  if status ~= "running" and tonumber(m[4]) <= 0 and not m[5] then
    redis.call("HSET", W.meta, "finished", W.now)
    local seconds = m[7]
    if status == "succeeded" then
      seconds = m[6]
    end
    for _, name in ipairs(KEEP) do
      redis.call("EXPIRE", W[name], seconds)
    end
    redis.call("ZREM", W.running, W.id)
  end
end

-- wf_resume(W): a failed or cancelled workflow runs again: its keys stop expiring, it is running again, and
-- it no longer shows the error it stopped with (a step that fails again sets its own).
local function wf_resume(W)
  local m = redis.call("HMGET", W.meta, "status", "created")
  if m[1] == "running" then
    return
  end
  redis.call("HSET", W.meta, "status", "running")
  redis.call("HDEL", W.meta, "finished", "error")
  for _, name in ipairs(KEEP) do
    redis.call("PERSIST", W[name])
  end
  redis.call("ZADD", W.running, m[2], W.id)
end

-- wf_rerun(W, step): the step's task was archived by its worker for a cancel of the workflow that
-- retry_workflow undid while the step was still stopping (r:step). Its cancel request is dropped and, when the
-- archive was that cancel's (the request was still stored, the task is archived), the task is made pending
-- again as the inspector's "run" does: the resumed workflow goes on. Returns true when the step runs again.
local function wf_rerun(W, step)
  local queue, id, qp, xp = wf_task(W, step)
  if redis.call("DEL", xp .. "cancel:" .. id) == 0 then
    return false
  end
  local task_key = qp .. "t:" .. id
  if redis.call("HGET", task_key, "state") ~= "archived" or redis.call("ZREM", qp .. "archived", id) == 0 then
    return false
  end
  redis.call("HSET", task_key, "state", "pending", "pending_since", W.now_ns)
  if redis.call("LPUSH", qp .. "pending", id) == 1 and W.wakeup ~= "" then
    redis.call("PUBLISH", W.wakeup, queue)
  end
  return true
end

local wf_failed

-- wf_release_ready(W, step): step's dependency finished (succeeded, or failed and handed on): count it, and
-- release step when that was its last one (unless the workflow was cancelled).
local function wf_release_ready(W, step, status)
  if redis.call("HINCRBY", W.graph, "l:" .. step, -1) == 0 and status ~= "cancelled" then
    local err = wf_release(W, step)
    if err then
      wf_failed(W, step, err, "failed")
    end
  end
end

-- wf_succeeded(W, step, result): the step's task succeeded (its transition ran in this script).
local function wf_succeeded(W, step, result)
  if wf_gone(W) then
    return -- the workflow ended and expired, or was deleted
  end
  local was = redis.call("HGET", W.state, step)
  if not was or was == "succeeded" then
    return -- not a step of this workflow, or this success was counted already
  end
  local handed_on = redis.call("HGET", W.graph, "c:" .. step) == "1"
  wf_reopen(W) -- run again from the archive after the workflow ended: it ends again below, from now
  redis.call("HSET", W.state, step, "succeeded")
  redis.call("HDEL", W.graph, "e:" .. step, "r:" .. step)
  if result ~= "" then
    redis.call("HSET", W.results, step, result)
  end
  if was == "pending" then
    redis.call("HINCRBY", W.meta, "open", -1)
  elseif was == "failed" or was == "lost" or was == "cancelled" then
    -- run again from the archive (dashboard, CLI, inspector, Go's asynq CLI) and succeeded this time
    if handed_on and was ~= "cancelled" then
      wf_settle(W)
      return -- its failure was handed on already: it counted as done, its dependants were released
    end
    if was ~= "cancelled" and redis.call("HINCRBY", W.meta, "failed", -1) <= 0 then
      wf_resume(W)
    end
  end
  redis.call("HINCRBY", W.meta, "done", 1)
  local status = redis.call("HGET", W.meta, "status")
  for _, dependant in ipairs(wf_lines(redis.call("HGET", W.graph, "n:" .. step))) do
    wf_release_ready(W, dependant, status)
  end
  wf_settle(W)
end

-- wf_failed(W, step, error, kind): the step failed for good (kind "failed": archived, revoked, or it could not
-- be released; "lost": its task vanished without our outcome). Handed on (c:step), it counts as done and its
-- dependants run without its result; otherwise the workflow fails and its dependants wait (shown cancelled).
-- A step resumed while it was stopping (r:step) that was archived for the cancel runs again instead (wf_rerun).
wf_failed = function(W, step, err, kind)
  if wf_gone(W) then
    return
  end
  local was = redis.call("HGET", W.state, step)
  if not was or was == "succeeded" or was == "failed" or was == "lost" or was == "cancelled" then
    return
  end
  local status = redis.call("HGET", W.meta, "status")
  if redis.call("HDEL", W.graph, "r:" .. step) == 1 and status ~= "cancelled" and wf_rerun(W, step) then
    return -- pending again, still open
  end
  if was == "pending" then
    redis.call("HINCRBY", W.meta, "open", -1)
  end
  if status == "cancelled" then
    redis.call("HSET", W.state, step, "cancelled")
    wf_settle(W)
    return
  end
  redis.call("HSET", W.state, step, kind)
  redis.call("HSET", W.graph, "e:" .. step, err)
  if redis.call("HGET", W.graph, "c:" .. step) == "1" then
    redis.call("HINCRBY", W.meta, "done", 1)
    for _, dependant in ipairs(wf_lines(redis.call("HGET", W.graph, "n:" .. step))) do
      wf_release_ready(W, dependant, status)
    end
  else
    redis.call("HINCRBY", W.meta, "failed", 1)
    if status == "running" then
      redis.call("HSET", W.meta, "status", "failed", "error", "step " .. step .. ": " .. err)
      redis.call("PUBLISH", W.channel, "failed")
    end
  end
  wf_settle(W)
end

-- HSET key with the field/value pairs in flat, a chunk at a time (unpack's stack limit)
local function wf_hset(key, flat)
  for c = 1, #flat, 1000 do
    redis.call("HSET", key, unpack(flat, c, math.min(c + 999, #flat)))
  end
end
