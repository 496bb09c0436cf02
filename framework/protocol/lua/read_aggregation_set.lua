-- read_aggregation_set: the tasks staged in an aggregation set, and the set's deadline.
-- KEYS[1] aggregation set  <ns>:{q}:g:<group>:<set id>
-- KEYS[2] aggregation sets <ns>:{q}:aggregation_sets
-- ARGV[1] task key prefix <ns>:{q}:t:
-- returns {deadline (Unix s, -1 when the set is not registered), id1, msg1, id2, msg2, ...} in the order
-- the tasks joined the group (whole seconds; tasks of the same second in id order); ids without a task
-- record are left out, and so are ids whose record is no longer an aggregating task (deleted while staged,
-- and the id taken by a new task)
local out = {-1}
local deadline = redis.call("ZSCORE", KEYS[2], KEYS[1])
if deadline then
  out[1] = tonumber(deadline)
end
local ids = redis.call("ZRANGE", KEYS[1], 0, -1)
for _, id in ipairs(ids) do
  local fields = redis.call("HMGET", ARGV[1] .. id, "msg", "state")
  if fields[1] and (not fields[2] or fields[2] == "aggregating") then
    out[#out + 1] = id
    out[#out + 1] = fields[1]
  end
end
return out
