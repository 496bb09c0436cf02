-- list_lease_expired: the tasks whose lease ran out before a cutoff (their worker is gone).
-- KEYS[1] lease <ns>:{q}:lease
-- ARGV[1] cutoff, Unix seconds (now - 30 as asynq uses)
-- ARGV[2] task key prefix <ns>:{q}:t:
-- ARGV[3] most tasks returned
-- returns the encoded TaskMessages of those tasks
local ids = redis.call("ZRANGE", KEYS[1], "-inf", ARGV[1], "BYSCORE", "LIMIT", 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local msg = redis.call("HGET", ARGV[2] .. id, "msg")
  if msg then
    out[#out + 1] = msg
  else
    redis.call("ZREM", KEYS[1], id)
  end
end
return out
