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
-- returns 1 when enqueued (or handed off, see hand_off in _lib.lua), 0 when a task with this id already exists;
-- an error (the pending list is a key of another type) when nothing was written
if redis.call("EXISTS", KEYS[1]) == 1 then
  return 0
end
if KEYS[3] and hand_off(KEYS, 3, ARGV, 5, KEYS[2], KEYS[1], ARGV[2], ARGV[1]) then
  return 1
end
local pushed = redis.call("LPUSH", KEYS[2], ARGV[2]) -- first: when it fails, no task hash is left behind
redis.call("HSET", KEYS[1], "msg", ARGV[1], "state", "pending", "pending_since", ARGV[3])
if pushed == 1 and ARGV[4] ~= "" then
  redis.call("PUBLISH", ARGV[4], ARGV[5])
end
return 1
