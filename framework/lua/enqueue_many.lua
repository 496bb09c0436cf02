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
-- each task is stored exactly as enqueue.lua stores it, and the ids are pushed in order with one LPUSH.
-- While workers wait and nothing is pending, the first tasks go one to each waiter (see hand_off).
-- hand_off(keys, ka, args, aa, id, msg): give a new task straight to an idle worker (framework's own path).
-- keys[ka..ka+3]: waiters <ext>:{q}:waiters, paused, active, lease; args[aa..aa+4]: queue name, lease expiry
-- (Unix s), in-flight key prefix <ext>:{q}:inflight:, handoff channel prefix <ext>:handoff:, in-flight TTL.
-- Only when a worker waits, nothing is pending (FIFO holds) and the queue is not paused. The most recent
-- waiter is tried first; the task is published on its channel and, when a subscriber got it, stored exactly
-- as asynq's dequeue leaves it (state active, in the active list, leased) and recorded in that worker's
-- in-flight set. A waiter nobody listens for any more (a dead or stopped worker) is dropped.
-- Returns true when the task was handed off (the caller stores nothing more).
local function hand_off(keys, ka, args, aa, pending, task_key, id, msg)
  local waiters = keys[ka]
  if redis.call("LLEN", waiters) == 0 or redis.call("LLEN", pending) > 0 or redis.call("EXISTS", keys[ka + 1]) == 1 then
    return false
  end
  local queue = args[aa]
  local note = #queue .. ":" .. queue .. #id .. ":" .. id .. msg
  while true do
    local worker = redis.call("LPOP", waiters)
    if not worker then
      return false
    end
    if redis.call("PUBLISH", args[aa + 3] .. worker, note) > 0 then
      redis.call("HSET", task_key, "msg", msg, "state", "active")
      redis.call("LPUSH", keys[ka + 2], id)
      redis.call("ZADD", keys[ka + 3], args[aa + 1], id)
      local inflight = args[aa + 2] .. worker
      redis.call("SADD", inflight, id)
      redis.call("EXPIRE", inflight, args[aa + 4])
      return true
    end
  end
end

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
if #ids > 0 and redis.call("LPUSH", KEYS[1], unpack(ids)) == #ids and ARGV[3] ~= "" then
  redis.call("PUBLISH", ARGV[3], ARGV[4])
end
return out
