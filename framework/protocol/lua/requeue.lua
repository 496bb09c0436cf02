-- requeue: put an unfinished task back at the head of its queue (worker shutdown); spends no retry.
-- KEYS[1] task hash <ns>:{q}:t:<id>
-- KEYS[2] active    <ns>:{q}:active
-- KEYS[3] lease     <ns>:{q}:lease
-- KEYS[4] pending   <ns>:{q}:pending
-- ARGV[1] task id
-- returns 1 requeued, 0 not found
if redis.call("LREM", KEYS[2], 0, ARGV[1]) == 0 then
  return 0
end
redis.call("ZREM", KEYS[3], ARGV[1])
redis.call("RPUSH", KEYS[4], ARGV[1])
redis.call("HSET", KEYS[1], "state", "pending")
return 1
