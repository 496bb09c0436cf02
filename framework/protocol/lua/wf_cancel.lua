-- wf_cancel: cancel a workflow. Composed by scripts.py with cancel.lua's body as transition(KEYS, ARGV), run
-- for each released step that has not finished: one not yet running is deleted, a running one is asked to
-- stop (its worker archives it; the step is then marked cancelled). Waiting steps never run.
-- KEYS[1..5] the workflow's meta, state, graph, results and running index
-- ARGV[1..9] the workflow's environment (see wf_env)
-- ARGV[10] the cancel channel <ns>:cancel
-- ARGV[11] seconds a cancel request for a running step is kept
-- returns {status before, steps deleted, steps asked to stop}; status "" when there is no such workflow
local W = wf_env(KEYS, 1, ARGV, 1)
local status = redis.call("HGET", W.meta, "status")
if not status then
  return { "", 0, 0 }
end
if status == "succeeded" or status == "cancelled" then
  return { status, 0, 0 }
end
redis.call("HSET", W.meta, "status", "cancelled")
redis.call("PUBLISH", W.channel, "cancelled")
local states = redis.call("HGETALL", W.state)
local deleted, stopping = 0, 0
for i = 1, #states, 2 do
  local step = states[i]
  if states[i + 1] == "pending" then
    local _, id, qp, xp = wf_task(W, step)
    local keys = { qp .. "t:" .. id, qp .. "pending", qp .. "scheduled", qp .. "retry", qp .. "groups",
      xp .. "cancel:" .. id }
    local reply = transition(keys, { id, qp .. "g:", xp, ARGV[10], ARGV[11] })
    if reply == "cancelling" then
      stopping = stopping + 1
    else
      -- deleted now, or gone or finished outside our scripts (archived or completed through Go's tools)
      redis.call("HSET", W.state, step, "cancelled")
      redis.call("HINCRBY", W.meta, "open", -1)
      if reply == "deleted" then
        deleted = deleted + 1
      end
    end
  end
end
wf_settle(W)
return { status, deleted, stopping }
