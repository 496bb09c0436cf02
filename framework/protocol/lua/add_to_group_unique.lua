-- add_to_group_unique: add to an aggregation group unless the uniqueness lock is held.
-- KEYS[1] task hash   <ns>:{q}:t:<id>
-- KEYS[2] group zset  <ns>:{q}:g:<group>
-- KEYS[3] groups set  <ns>:{q}:groups
-- KEYS[4] unique lock <ns>:{q}:unique:<type>:<md5(payload)>
-- ARGV[1] encoded TaskMessage
-- ARGV[2] task id
-- ARGV[3] now, Unix seconds
-- ARGV[4] group name
-- ARGV[5] lock TTL, whole seconds
-- returns 1 added, 0 task id conflict, -1 duplicate; an error (the group or groups key is of another type) when
-- nothing was written and the lock is not taken
if not redis.call("SET", KEYS[4], ARGV[2], "NX", "EX", ARGV[5]) then
  return -1
end
if redis.call("EXISTS", KEYS[1]) == 1 then
  redis.call("DEL", KEYS[4])
  return 0
end
local refused = join_group(KEYS[2], KEYS[3], ARGV[3], ARGV[2], ARGV[4])
if refused then
  redis.call("DEL", KEYS[4])
  return refused
end
redis.call("HSET", KEYS[1], "msg", ARGV[1], "state", "aggregating", "group", ARGV[4], "unique_key", KEYS[4])
return 1
