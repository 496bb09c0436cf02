-- remove_queue: delete an empty queue's keys (Inspector "delete queue"). The caller then removes the
-- name from <ns>:queues (a key of another Cluster slot). A forced removal first empties every
-- non-active state in batches (delete_all.lua), then calls this. Daily counters, per-minute counters
-- and uniqueness locks are left to expire.
-- KEYS[1] pending           <ns>:{q}:pending
-- KEYS[2] active            <ns>:{q}:active
-- KEYS[3] groups set        <ns>:{q}:groups
-- KEYS[4] aggregation sets  <ns>:{q}:aggregation_sets
-- KEYS[5] scheduled         <ns>:{q}:scheduled
-- KEYS[6] retry             <ns>:{q}:retry
-- KEYS[7] archived          <ns>:{q}:archived
-- KEYS[8] completed         <ns>:{q}:completed
-- KEYS[9] lease             <ns>:{q}:lease
-- KEYS[10] paused           <ns>:{q}:paused
-- KEYS[11] processed total  <ns>:{q}:processed
-- KEYS[12] failed total     <ns>:{q}:failed
-- returns 1 removed, -1 the queue still has tasks, -2 the queue has active tasks
if redis.call("LLEN", KEYS[2]) > 0 then
  return -2
end
if redis.call("LLEN", KEYS[1]) > 0 or redis.call("SCARD", KEYS[3]) > 0 then
  return -1
end
for i = 4, 8 do
  if redis.call("ZCARD", KEYS[i]) > 0 then
    return -1
  end
end
redis.call("DEL", unpack(KEYS))
return 1
