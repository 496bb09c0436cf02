-- schedule: add a task to process at a later time.
-- KEYS[1] task hash <ns>:{q}:t:<id>
-- KEYS[2] scheduled <ns>:{q}:scheduled
-- ARGV[1] encoded TaskMessage
-- ARGV[2] process_at, Unix seconds (integer)
-- ARGV[3] task id
-- ARGV[4] group name, "" or absent = none: when due, the forwarder adds the task to this group
-- returns 1 scheduled, 0 task id conflict; an error (the scheduled set is a key of another type) when nothing
-- was written
if redis.call("EXISTS", KEYS[1]) == 1 then
  return 0
end
redis.call("ZADD", KEYS[2], ARGV[2], ARGV[3]) -- first: when it fails, no task hash is left behind
redis.call("HSET", KEYS[1], "msg", ARGV[1], "state", "scheduled")
if ARGV[4] and ARGV[4] ~= "" then
  redis.call("HSET", KEYS[1], "group", ARGV[4])
end
return 1
