-- add_to_group: add a task to an aggregation group.
-- KEYS[1] task hash  <ns>:{q}:t:<id>
-- KEYS[2] group zset <ns>:{q}:g:<group>
-- KEYS[3] groups set <ns>:{q}:groups
-- ARGV[1] encoded TaskMessage
-- ARGV[2] task id
-- ARGV[3] now, Unix seconds
-- ARGV[4] group name
-- returns 1 added, 0 task id conflict
if redis.call("EXISTS", KEYS[1]) == 1 then
  return 0
end
redis.call("HSET", KEYS[1], "msg", ARGV[1], "state", "aggregating", "group", ARGV[4])
redis.call("ZADD", KEYS[2], ARGV[3], ARGV[2])
redis.call("SADD", KEYS[3], ARGV[4])
return 1
