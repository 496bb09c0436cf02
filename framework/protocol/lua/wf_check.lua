-- wf_check: find a workflow's released steps whose task vanished without our outcome (a Go asynq worker ran
-- it, which knows nothing of workflows, or it was deleted), and fail them as lost, naming why: the workflow
-- then fails (or hands the failure on) instead of waiting for ever. A task found completed but still released
-- was finished outside our scripts too (a Go worker with a retention) and is lost the same way. A task
-- archived by hand (the inspector's or Go's asynq CLI's archive) fails its step as any archive does.
-- KEYS[1..5] the workflow's meta, state, graph, results and running index
-- ARGV[1..9] the workflow's environment (see wf_env)
-- returns the names of the steps found lost (not those found archived)
local W = wf_env(KEYS, 1, ARGV, 1)
if wf_gone(W) then
  return {} -- its record expired or was deleted since the caller found it
end
local states = redis.call("HGETALL", W.state)
local lost = {}
for i = 1, #states, 2 do
  if states[i + 1] == "pending" then
    local step = states[i]
    local queue, id, qp = wf_task(W, step)
    local state = redis.call("HGET", qp .. "t:" .. id, "state")
    if state == "archived" then
      -- archived by hand (the inspector, Go's asynq CLI): a failure like any other; running it again resumes
      wf_failed(W, step, redis.call("HGET", W.graph, "e:" .. step)
        or ("task " .. id .. " in queue " .. queue .. " was archived outside a worker"), "failed")
    elseif not state or state == "completed" then
      local how = "vanished"
      if state then
        how = "was completed"
      end
      lost[#lost + 1] = step
      wf_failed(W, step, "StepLost: task " .. id .. " in queue " .. queue .. " " .. how
        .. " without the framework's outcome (a worker that does not run workflows, such as Go asynq's, ran it,"
        .. " or it was deleted); serve workflow steps' queues with framework workers only", "lost")
    end
  end
end
return lost
