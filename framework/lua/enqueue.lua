-- enqueue: put a new task in the pending list.
-- KEYS[1] task hash  <ns>:{q}:t:<id>
-- KEYS[2] pending    <ns>:{q}:pending
-- ARGV[1] encoded TaskMessage
-- ARGV[2] task id
-- ARGV[3] now, nanoseconds (pending_since)
-- ARGV[4] wake-up channel ("" = do not publish)
-- ARGV[5] queue name (the wake-up message)
-- returns 1 when enqueued, 0 when a task with this id already exists in the queue
if redis.call("EXISTS", KEYS[1]) == 1 then
  return 0
end
redis.call("HSET", KEYS[1], "msg", ARGV[1], "state", "pending", "pending_since", ARGV[3])
if redis.call("LPUSH", KEYS[2], ARGV[2]) == 1 and ARGV[4] ~= "" then
  redis.call("PUBLISH", ARGV[4], ARGV[5])
end
return 1
