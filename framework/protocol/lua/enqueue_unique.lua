-- enqueue_unique: enqueue unless a task with the same type and payload holds the uniqueness lock.
-- KEYS[1] task hash   <ns>:{q}:t:<id>
-- KEYS[2] pending     <ns>:{q}:pending
-- KEYS[3] unique lock <ns>:{q}:unique:<type>:<md5(payload)>
-- ARGV[1] encoded TaskMessage
-- ARGV[2] task id
-- ARGV[3] now, nanoseconds (pending_since)
-- ARGV[4] lock TTL, whole seconds
-- ARGV[5] wake-up channel ("" = do not publish)
-- ARGV[6] queue name
-- returns 1 enqueued, 0 task id conflict (the lock is not taken), -1 duplicate (lock held); an error (the
-- pending list is a key of another type) when nothing was written (the lock is not taken)
if not redis.call("SET", KEYS[3], ARGV[2], "NX", "EX", ARGV[4]) then
  return -1
end
if redis.call("EXISTS", KEYS[1]) == 1 then
  redis.call("DEL", KEYS[3])
  return 0
end
local pushed = redis.pcall("LPUSH", KEYS[2], ARGV[2])
if type(pushed) == "table" then
  redis.call("DEL", KEYS[3])
  return pushed
end
redis.call("HSET", KEYS[1], "msg", ARGV[1], "state", "pending", "pending_since", ARGV[3], "unique_key", KEYS[3])
if pushed == 1 and ARGV[5] ~= "" then
  redis.call("PUBLISH", ARGV[5], ARGV[6])
end
return 1
