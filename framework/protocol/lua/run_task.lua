-- run_task: make one non-active task pending now (Inspector "run"): scheduled, retry, archived,
-- completed or aggregating -> pending. Sets pending_since, so queue latency stays meaningful.
-- KEYS[1] task hash  <ns>:{q}:t:<id>
-- KEYS[2] pending    <ns>:{q}:pending
-- KEYS[3] scheduled  <ns>:{q}:scheduled
-- KEYS[4] retry      <ns>:{q}:retry
-- KEYS[5] archived   <ns>:{q}:archived
-- KEYS[6] completed  <ns>:{q}:completed
-- KEYS[7] groups set <ns>:{q}:groups
-- ARGV[1] task id
-- ARGV[2] group key prefix <ns>:{q}:g:
-- ARGV[3] now, nanoseconds (pending_since)
-- ARGV[4] wake-up channel ("" = do not publish)
-- ARGV[5] queue name
-- returns 1 now pending, 0 not found, -1 the task is active, -2 the task is already pending
local id = ARGV[1]
local fields = redis.call("HMGET", KEYS[1], "msg", "state", "group")
local state = fields[2]
if not fields[1] or not state then
  return 0
end
if state == "active" then
  return -1
end
if state == "pending" then
  return -2
end
local removed = 0
if state == "aggregating" then
  removed = leave_group(ARGV[2], fields[3] or "", id, KEYS[7])
else
  local sources = {scheduled = KEYS[3], retry = KEYS[4], archived = KEYS[5], completed = KEYS[6]}
  if sources[state] then
    removed = redis.call("ZREM", sources[state], id)
  end
end
if removed == 0 then
  return 0
end
redis.call("HSET", KEYS[1], "state", "pending", "pending_since", ARGV[3])
if redis.call("LPUSH", KEYS[2], id) == 1 and ARGV[4] ~= "" then
  redis.call("PUBLISH", ARGV[4], ARGV[5])
end
return 1
