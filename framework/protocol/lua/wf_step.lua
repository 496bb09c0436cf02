-- wf_step: finish a workflow step's task and advance its workflow, in one script. Composed by scripts.py as
-- wf_done (done.lua), wf_complete (mark_complete.lua) and wf_archive (archive.lua): that transition's body is
-- the local function transition(KEYS, ARGV) above this text, run unchanged on its own keys and arguments.
-- Only when it changed the task (it was still active here) is the workflow advanced: the step's result is
-- stored and the dependants whose last dependency this was are released as asynq tasks, or the failure
-- policy applied. A worker that dies before this script leaves the task active (recovered by its lease, run
-- again); one that dies after it leaves nothing to do: advancing happens exactly once.
-- KEYS[1..n]     the transition's keys (n = ARGV[1])
-- KEYS[n+1..n+5] the workflow's meta, state, graph, results and running index (see _workflow.lua)
-- ARGV[1] n, the number of the transition's keys
-- ARGV[2] m, the number of the transition's arguments
-- ARGV[3..m+2] the transition's arguments
-- ARGV[m+3..m+11] the workflow's environment (see wf_env in _workflow.lua)
-- ARGV[m+12] the step's name
-- ARGV[m+13] "ok" (succeeded) or "failed"
-- ARGV[m+14] the result (JSON, "" = none) for "ok"; the error text for "failed"
-- returns what the transition returns
local n, m = tonumber(ARGV[1]), tonumber(ARGV[2])
local tkeys, targs = {}, {}
for i = 1, n do
  tkeys[i] = KEYS[i]
end
for i = 1, m do
  targs[i] = ARGV[2 + i]
end
local reply = transition(tkeys, targs)
local changed = reply
if type(reply) == "table" then
  changed = reply[1]
end
if changed ~= 1 then
  return reply
end
local W = wf_env(KEYS, n + 1, ARGV, m + 3)
local step, outcome, value = ARGV[m + 12], ARGV[m + 13], ARGV[m + 14]
if outcome == "ok" then
  wf_succeeded(W, step, value)
else
  wf_failed(W, step, value, "failed")
end
return reply
