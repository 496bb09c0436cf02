-- enqueue: put a new task in the pending list, or hand it straight to an idle worker.
-- KEYS[1] task hash  <ns>:{q}:t:<id>
-- KEYS[2] pending    <ns>:{q}:pending
-- KEYS[3] optional, for the handoff: waiters <ext>:{q}:waiters (framework's own key)
-- KEYS[4] with KEYS[3]: paused <ns>:{q}:paused
-- KEYS[5] with KEYS[3]: active <ns>:{q}:active
-- KEYS[6] with KEYS[3]: lease  <ns>:{q}:lease
-- ARGV[1] encoded TaskMessage
-- ARGV[2] task id
-- ARGV[3] now, nanoseconds (pending_since)
-- ARGV[4] wake-up channel ("" = do not publish)
-- ARGV[5] queue name (the wake-up message)
-- ARGV[6] with KEYS[3]: lease expiry, Unix s (now + 30)
-- ARGV[7] with KEYS[3]: in-flight key prefix <ext>:{q}:inflight:
-- ARGV[8] with KEYS[3]: handoff channel prefix <ext>:handoff:
-- ARGV[9] with KEYS[3]: in-flight set TTL, seconds
-- returns 1 when enqueued (or handed off), 0 when a task with this id already exists in the queue
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

if redis.call("EXISTS", KEYS[1]) == 1 then
  return 0
end
if KEYS[3] and hand_off(KEYS, 3, ARGV, 5, KEYS[2], KEYS[1], ARGV[2], ARGV[1]) then
  return 1
end
redis.call("HSET", KEYS[1], "msg", ARGV[1], "state", "pending", "pending_since", ARGV[3])
if redis.call("LPUSH", KEYS[2], ARGV[2]) == 1 and ARGV[4] ~= "" then
  redis.call("PUBLISH", ARGV[4], ARGV[5])
end
return 1
