-- schedule_unique: schedule unless the uniqueness lock is held.
-- KEYS[1] task hash   <ns>:{q}:t:<id>
-- KEYS[2] scheduled   <ns>:{q}:scheduled
-- KEYS[3] unique lock <ns>:{q}:unique:<type>:<md5(payload)>
-- ARGV[1] encoded TaskMessage
-- ARGV[2] process_at, Unix seconds (integer)
-- ARGV[3] task id
-- ARGV[4] lock TTL, whole seconds
-- ARGV[5] group name, "" or absent = none: when due, the forwarder adds the task to this group
-- returns 1 scheduled, 0 task id conflict (the lock is not taken), -1 duplicate (lock held); an error (the
-- scheduled set is a key of another type) when nothing was written (the lock is not taken)
if not redis.call("SET", KEYS[3], ARGV[3], "NX", "EX", ARGV[4]) then
  return -1
end
if redis.call("EXISTS", KEYS[1]) == 1 then
  redis.call("DEL", KEYS[3])
  return 0
end
local added = redis.pcall("ZADD", KEYS[2], ARGV[2], ARGV[3])
if type(added) == "table" then
  redis.call("DEL", KEYS[3])
  return added
end
redis.call("HSET", KEYS[1], "msg", ARGV[1], "state", "scheduled", "unique_key", KEYS[3])
if ARGV[5] and ARGV[5] ~= "" then
  redis.call("HSET", KEYS[1], "group", ARGV[5])
end
return 1
