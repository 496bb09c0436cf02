-- retry: move a failed active task to the retry zset.
-- KEYS[1] task hash       <ns>:{q}:t:<id>
-- KEYS[2] active          <ns>:{q}:active
-- KEYS[3] lease           <ns>:{q}:lease
-- KEYS[4] retry           <ns>:{q}:retry
-- KEYS[5] processed total, KEYS[6] processed day, KEYS[7] processed minute ("" = none)
-- KEYS[8] failed total,    KEYS[9] failed day,    KEYS[10] failed minute ("" = none)
-- ARGV[1] task id
-- ARGV[2] encoded TaskMessage (retried, error_msg, last_failed_at updated)
-- ARGV[3] retry at, Unix seconds
-- ARGV[4] 1 when this counts as a failure (stats), 0 otherwise
-- ARGV[5] day counter EXPIREAT (Unix s)
-- ARGV[6] minute counter TTL (s)
-- returns 1 moved, 0 not found
if redis.call("LREM", KEYS[2], 0, ARGV[1]) == 0 then
  return 0
end
redis.call("ZREM", KEYS[3], ARGV[1])
redis.call("ZADD", KEYS[4], ARGV[3], ARGV[1])
redis.call("HSET", KEYS[1], "msg", ARGV[2], "state", "retry")
if ARGV[4] == "1" then
  bump(KEYS[5], KEYS[6], KEYS[7], 1, ARGV[5], ARGV[6])
  bump(KEYS[8], KEYS[9], KEYS[10], 1, ARGV[5], ARGV[6])
end
return 1
