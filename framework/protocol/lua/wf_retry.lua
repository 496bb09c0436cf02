-- wf_retry: run a failed or cancelled workflow again. Composed by scripts.py with run_task.lua's body as
-- transition(KEYS, ARGV). Each step that failed without handing its failure on, was lost or was cancelled,
-- and whose dependencies are all done, runs again: its archived task is made pending (as the inspector's
-- "run" does), or, when its task is gone, it is released again from the stored message. A step still
-- stopping for the workflow's cancel (released, its cancel request stored) is marked r:step: when its worker
-- archives it for that cancel, it runs again (wf_rerun) instead of failing the resumed workflow. Steps that
-- wait go on waiting for their dependencies. The workflow is running again, without its old error.
-- KEYS[1..5] the workflow's meta, state, graph, results and running index
-- ARGV[1..9] the workflow's environment (see wf_env)
-- returns {status before, steps run again}; status "" when there is no such workflow
local W = wf_env(KEYS, 1, ARGV, 1)
local status = redis.call("HGET", W.meta, "status")
if not status then
  return { "", 0 }
end
if status == "succeeded" or (status == "running" and tonumber(redis.call("HGET", W.meta, "failed")) <= 0) then
  return { status, 0 }
end
local states = redis.call("HGETALL", W.state)
local again, failed, first = 0, 0, nil
wf_resume(W)
for i = 1, #states, 2 do
  local step, state = states[i], states[i + 1]
  local blocked = state == "cancelled"
    or ((state == "failed" or state == "lost") and redis.call("HGET", W.graph, "c:" .. step) ~= "1")
  local ready = tonumber(redis.call("HGET", W.graph, "l:" .. step)) <= 0
  if (blocked or state == "waiting") and ready then
    local queue, id, qp, xp = wf_task(W, step)
    redis.call("DEL", xp .. "cancel:" .. id) -- the cancel it was stopped for is undone
    local code = transition(
      { qp .. "t:" .. id, qp .. "pending", qp .. "scheduled", qp .. "retry", qp .. "archived", qp .. "completed",
        qp .. "groups" },
      { id, qp .. "g:", W.now_ns, W.wakeup, queue })
    local err = nil
    if code == 0 then
      err = wf_release(W, step) -- its task is gone: released again from the stored message
    else
      -- 1 made pending now; -1 active or -2 pending: it runs already (run again from the archive meanwhile)
      redis.call("HSET", W.state, step, "pending")
      redis.call("HDEL", W.graph, "e:" .. step)
      redis.call("HINCRBY", W.meta, "open", 1)
    end
    if err then
      redis.call("HSET", W.graph, "e:" .. step, err)
      redis.call("HSET", W.state, step, "failed")
      failed = failed + 1
      first = first or ("step " .. step .. ": " .. err)
    else
      again = again + 1
    end
  elseif state == "pending" then
    local _, id, _, xp = wf_task(W, step)
    if redis.call("EXISTS", xp .. "cancel:" .. id) == 1 then
      redis.call("HSET", W.graph, "r:" .. step, "1") -- still stopping for the cancel: it runs again once archived
      again = again + 1
    end
  elseif blocked and state ~= "cancelled" then
    failed = failed + 1
    first = first or ("step " .. step .. ": " .. (redis.call("HGET", W.graph, "e:" .. step) or state))
  end
end
redis.call("HSET", W.meta, "failed", failed)
if failed > 0 then
  redis.call("HSET", W.meta, "status", "failed", "error", first)
  redis.call("PUBLISH", W.channel, "failed")
end
wf_settle(W)
return { status, again }
