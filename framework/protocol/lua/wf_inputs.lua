-- wf_inputs: the results a step's dependencies left, in the order of its dependencies.
-- KEYS[1] the workflow's graph, KEYS[2] its results (see _workflow.lua)
-- ARGV[1] the step's name
-- returns one entry per dependency: its result (JSON), or nil when it has none (it failed and handed its
-- failure on, or returned nothing)
local deps = wf_lines(redis.call("HGET", KEYS[1], "d:" .. ARGV[1]))
local out = {}
for c = 1, #deps, 1000 do
  local values = redis.call("HMGET", KEYS[2], unpack(deps, c, math.min(c + 999, #deps)))
  for _, v in ipairs(values) do
    out[#out + 1] = v
  end
end
return out
