-- mark_complete: finish a task that succeeded with a retention: keep it in the completed zset.
-- KEYS[1] task hash       <ns>:{q}:t:<id>
-- KEYS[2] active          <ns>:{q}:active
-- KEYS[3] lease           <ns>:{q}:lease
-- KEYS[4] completed       <ns>:{q}:completed
-- KEYS[5] processed total <ns>:{q}:processed
-- KEYS[6] processed day   <ns>:{q}:processed:<YYYY-MM-DD>
-- KEYS[7] processed minute (framework's own key; "" = none)
-- ARGV[1] task id
-- ARGV[2] encoded TaskMessage with completed_at set
-- ARGV[3] expiry of the record: completed_at + retention (Unix s)
-- ARGV[4] day counter EXPIREAT (Unix s)
-- ARGV[5] minute counter TTL (s)
-- ARGV[6] unique lock key ("" = none)
-- ARGV[7] optional: the result, stored in the record's result field ("" or absent = leave the field as it is)
-- ARGV[8] optional: the queue's prefix of the framework's own keys <ext>:{q}: ("" or absent = announce
--         nothing); when the waiting marker <ext>:{q}:waiting:<id> exists, "completed" is published on
--         <ext>:{q}:outcome:<id> and the marker deleted
-- returns 1 completed, 0 not found
if redis.call("LREM", KEYS[2], 0, ARGV[1]) == 0 then
  return 0
end
redis.call("ZREM", KEYS[3], ARGV[1])
redis.call("ZADD", KEYS[4], ARGV[3], ARGV[1])
if ARGV[7] and ARGV[7] ~= "" then
  redis.call("HSET", KEYS[1], "msg", ARGV[2], "state", "completed", "result", ARGV[7])
else
  redis.call("HSET", KEYS[1], "msg", ARGV[2], "state", "completed")
end
bump(KEYS[5], KEYS[6], KEYS[7], 1, ARGV[4], ARGV[5])
release_unique(ARGV[6], ARGV[1])
announce(ARGV[8] or "", ARGV[1], "completed")
return 1
