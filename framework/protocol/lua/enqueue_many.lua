-- enqueue_many: put new tasks of one queue in its pending list, in one call (the batch path of enqueue).
-- KEYS[1] pending    <ns>:{q}:pending
-- KEYS[2] optional, for handoffs: waiters <ext>:{q}:waiters (framework's own key)
-- KEYS[3] with KEYS[2]: paused <ns>:{q}:paused
-- KEYS[4] with KEYS[2]: active <ns>:{q}:active
-- KEYS[5] with KEYS[2]: lease  <ns>:{q}:lease
-- ARGV[1] task key prefix <ns>:{q}:t:
-- ARGV[2] now, nanoseconds (pending_since)
-- ARGV[3] wake-up channel ("" = do not publish)
-- ARGV[4] queue name (the wake-up message)
-- ARGV[5] lease expiry, Unix s (now + 30; used with KEYS[2])
-- ARGV[6] in-flight key prefix <ext>:{q}:inflight: (used with KEYS[2])
-- ARGV[7] handoff channel prefix <ext>:handoff: (used with KEYS[2])
-- ARGV[8] in-flight set TTL, seconds (used with KEYS[2])
-- ARGV[9], ARGV[10], ... pairs: task id, encoded TaskMessage
-- returns, per task in order, 1 enqueued (or handed off) or 0 when a task with this id already exists;
-- each task is stored exactly as enqueue.lua stores it, and the ids are pushed in order with one LPUSH;
-- an error (the pending list is a key of another type) when no task was stored (their hashes are deleted).
-- While workers wait and nothing is pending, the first tasks go one to each waiter (see hand_off in _lib.lua).
local out = {}
local ids = {}
local offer = KEYS[2] ~= nil
for i = 9, #ARGV, 2 do
  local id = ARGV[i]
  local key = ARGV[1] .. id
  if redis.call("EXISTS", key) == 1 then
    out[#out + 1] = 0
  elseif offer and hand_off(KEYS, 2, ARGV, 4, KEYS[1], key, id, ARGV[i + 1]) then
    out[#out + 1] = 1
  else
    offer = false -- once one task waits in the list, later ones wait behind it (FIFO)
    redis.call("HSET", key, "msg", ARGV[i + 1], "state", "pending", "pending_since", ARGV[2])
    ids[#ids + 1] = id
    out[#out + 1] = 1
  end
end
if #ids > 0 then
  local pushed = redis.pcall("LPUSH", KEYS[1], unpack(ids))
  if type(pushed) == "table" then -- refused: the tasks written above would be in no list
    for _, id in ipairs(ids) do
      redis.call("DEL", ARGV[1] .. id)
    end
    return pushed
  end
  if pushed == #ids and ARGV[3] ~= "" then
    redis.call("PUBLISH", ARGV[3], ARGV[4])
  end
end
return out
