-- wf_start: store a new workflow and release the steps that depend on nothing (see _workflow.lua for the keys).
-- KEYS[1..5] the workflow's meta, state, graph, results and running index
-- KEYS[6]    the home queue's index of workflows <ext>:{home}:workflows (ZSET id -> created)
-- ARGV[1..9] the workflow's environment (see wf_env)
-- ARGV[10] name, ARGV[11] created (Unix s), ARGV[12] retention (s), ARGV[13] kept (s) after a failure or a
--          cancel, ARGV[14] the final steps ("\n"-joined), ARGV[15] "1" when the final result is a list,
--          ARGV[16] home queue, ARGV[17] the number of steps k
-- then k groups of 7: name, queue, task id, encoded TaskMessage, dependencies ("\n"-joined, in order),
--          "1" when its failure is handed on, "lock\nttl" for a unique step ("" = none)
-- returns 1 started; 0 a workflow with this id exists; {-1, step} a first step's unique lock is held;
--         {-2, step} a step's task id is taken (nothing is written in these cases)
local W = wf_env(KEYS, 1, ARGV, 1)
if redis.call("EXISTS", W.meta) == 1 then
  return 0
end
local k = tonumber(ARGV[17])
local steps = {}
for i = 1, k do
  local o = 18 + (i - 1) * 7
  steps[i] = {
    name = ARGV[o], queue = ARGV[o + 1], id = ARGV[o + 2], msg = ARGV[o + 3], deps = ARGV[o + 4],
    handed_on = ARGV[o + 5], unique = ARGV[o + 6],
  }
end
local dependants = {}
for _, s in ipairs(steps) do
  local qp = W.ns .. ":{" .. s.queue .. "}:"
  if redis.call("EXISTS", qp .. "t:" .. s.id) == 1 then
    return { -2, s.name }
  end
  s.dep_list = wf_lines(s.deps)
  if #s.dep_list == 0 and s.unique ~= "" and redis.call("EXISTS", wf_lines(s.unique)[1]) == 1 then
    return { -1, s.name }
  end
  for _, d in ipairs(s.dep_list) do
    local list = dependants[d]
    if not list then
      list = {}
      dependants[d] = list
    end
    list[#list + 1] = s.name
  end
end
redis.call("HSET", W.meta, "id", W.id, "name", ARGV[10], "status", "running", "created", ARGV[11],
  "total", k, "done", 0, "failed", 0, "open", 0, "retention", ARGV[12], "kept", ARGV[13],
  "outputs", ARGV[14], "grouped", ARGV[15], "queue", ARGV[16])
local state, graph = {}, {}
for _, s in ipairs(steps) do
  state[#state + 1] = s.name
  state[#state + 1] = "waiting"
  local g = #graph
  graph[g + 1] = "l:" .. s.name
  graph[g + 2] = #s.dep_list
  graph[g + 3] = "t:" .. s.name
  graph[g + 4] = s.queue .. "\n" .. s.id
  graph[g + 5] = "m:" .. s.name
  graph[g + 6] = s.msg
  if s.deps ~= "" then
    graph[#graph + 1] = "d:" .. s.name
    graph[#graph + 1] = s.deps
  end
  if dependants[s.name] then
    graph[#graph + 1] = "n:" .. s.name
    graph[#graph + 1] = table.concat(dependants[s.name], "\n")
  end
  if s.handed_on == "1" then
    graph[#graph + 1] = "c:" .. s.name
    graph[#graph + 1] = "1"
  end
  if s.unique ~= "" then
    graph[#graph + 1] = "u:" .. s.name
    graph[#graph + 1] = s.unique
  end
end
wf_hset(W.state, state)
wf_hset(W.graph, graph)
redis.call("ZADD", KEYS[6], ARGV[11], W.id)
redis.call("ZADD", W.running, ARGV[11], W.id)
for _, s in ipairs(steps) do
  if #s.dep_list == 0 then
    local err = wf_release(W, s.name)
    if err then
      wf_failed(W, s.name, err, "failed")
    end
  end
end
return 1
