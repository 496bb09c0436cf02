-- enqueue_many: put new tasks of one queue in its pending list, in one call (the batch path of enqueue).
-- KEYS[1] pending    <ns>:{q}:pending
-- ARGV[1] task key prefix <ns>:{q}:t:
-- ARGV[2] now, nanoseconds (pending_since)
-- ARGV[3] wake-up channel ("" = do not publish)
-- ARGV[4] queue name (the wake-up message)
-- ARGV[5], ARGV[6], ... pairs: task id, encoded TaskMessage
-- returns, per task in order, 1 enqueued or 0 when a task with this id already exists in the queue;
-- each task is stored exactly as enqueue.lua stores it, and the ids are pushed in order with one LPUSH
local out = {}
local ids = {}
for i = 5, #ARGV, 2 do
  local id = ARGV[i]
  local key = ARGV[1] .. id
  if redis.call("EXISTS", key) == 1 then
    out[#out + 1] = 0
  else
    redis.call("HSET", key, "msg", ARGV[i + 1], "state", "pending", "pending_since", ARGV[2])
    ids[#ids + 1] = id
    out[#out + 1] = 1
  end
end
if #ids > 0 and redis.call("LPUSH", KEYS[1], unpack(ids)) == #ids and ARGV[3] ~= "" then
  redis.call("PUBLISH", ARGV[3], ARGV[4])
end
return out
