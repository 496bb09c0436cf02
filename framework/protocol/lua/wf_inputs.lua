-- wf_inputs: the results a step's dependencies left, in the order of its dependencies.
-- KEYS[1] the workflow's meta, KEYS[2] its graph, KEYS[3] its results (see _workflow.lua)
-- ARGV[1] the step's name
-- returns one entry per dependency: its result (JSON), or nil when it has none (it failed and handed its
-- failure on, or returned nothing); 0 when the workflow is gone (its record expired or was deleted) or has no
-- such step: there is nothing to read its input from, and no result can be told from a missing one
if redis.call("HEXISTS", KEYS[1], "status") == 0 or redis.call("HEXISTS", KEYS[2], "t:" .. ARGV[1]) == 0 then
  return 0
end
local deps = wf_lines(redis.call("HGET", KEYS[2], "d:" .. ARGV[1]))
local out = {}
for c = 1, #deps, 1000 do
  local values = redis.call("HMGET", KEYS[3], unpack(deps, c, math.min(c + 999, #deps)))
  for _, v in ipairs(values) do
    out[#out + 1] = v
  end
end
return out
