-- delete_expired_completed: delete completed tasks whose retention has run out.
-- KEYS[1] completed <ns>:{q}:completed
-- ARGV[1] now, Unix seconds
-- ARGV[2] task key prefix <ns>:{q}:t:
-- ARGV[3] batch size
-- returns the number of entries taken from KEYS[1]
-- An entry whose record names another task state is stale (the task is elsewhere, perhaps running): the entry
-- goes, the record stays.
local ids = redis.call("ZRANGE", KEYS[1], "-inf", ARGV[1], "BYSCORE", "LIMIT", 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local state = redis.call("HGET", ARGV[2] .. id, "state")
  if not state or listed_here(state, "completed") then
    redis.call("DEL", ARGV[2] .. id)
  end
end
if #ids > 0 then
  redis.call("ZREM", KEYS[1], unpack(ids))
end
return #ids
