-- add_to_group: add a task to an aggregation group.
-- KEYS[1] task hash  <ns>:{q}:t:<id>
-- KEYS[2] group zset <ns>:{q}:g:<group>
-- KEYS[3] groups set <ns>:{q}:groups
-- ARGV[1] encoded TaskMessage
-- ARGV[2] task id
-- ARGV[3] now, Unix seconds
-- ARGV[4] group name
-- returns 1 added, 0 task id conflict; an error (the group or groups key is of another type) when nothing was
-- written (writes are not undone when a script fails: the ones Redis may refuse come first, undone here)
if redis.call("EXISTS", KEYS[1]) == 1 then
  return 0
end
local refused = join_group(KEYS[2], KEYS[3], ARGV[3], ARGV[2], ARGV[4])
if refused then
  return refused
end
redis.call("HSET", KEYS[1], "msg", ARGV[1], "state", "aggregating", "group", ARGV[4])
return 1
