-- cancel: the caller cancels one task (Client.cancel): one not yet running is deleted, a running one is
-- asked to stop and then archived instead of retried.
-- KEYS[1] task hash      <ns>:{q}:t:<id>
-- KEYS[2] pending        <ns>:{q}:pending
-- KEYS[3] scheduled      <ns>:{q}:scheduled
-- KEYS[4] retry          <ns>:{q}:retry
-- KEYS[5] groups set     <ns>:{q}:groups
-- KEYS[6] cancel request <ext>:{q}:cancel:<id> (framework's own key)
-- ARGV[1] task id
-- ARGV[2] group key prefix <ns>:{q}:g:
-- ARGV[3] the queue's prefix of the framework's own keys <ext>:{q}:
-- ARGV[4] the cancel channel <ns>:cancel
-- ARGV[5] seconds the cancel request is kept
-- returns "deleted" (it was pending, scheduled, retry or aggregating: deleted, its uniqueness lock released
-- when it holds it, "cancelled" published on <ext>:{q}:outcome:<id> and the waiting marker deleted),
-- "cancelling" (active: the request is stored and the id published on the cancel channel, as asynq's
-- CancelProcessing does), the state of a task that already finished ("completed", "archived"), or ""
-- when there is no such task
local id = ARGV[1]
local fields = redis.call("HMGET", KEYS[1], "msg", "state", "group", "unique_key")
local state = fields[2]
if not fields[1] or not state then
  return ""
end
if state == "active" then
  redis.call("SET", KEYS[6], "1", "EX", ARGV[5])
  redis.call("PUBLISH", ARGV[4], id)
  return "cancelling"
end
if state == "pending" then
  redis.call("LREM", KEYS[2], 0, id)
elseif state == "scheduled" then
  redis.call("ZREM", KEYS[3], id)
elseif state == "retry" then
  redis.call("ZREM", KEYS[4], id)
elseif state == "aggregating" then
  leave_group(ARGV[2], fields[3] or "", id, KEYS[5])
else
  return state
end
redis.call("DEL", KEYS[1])
release_unique(fields[4] or "", id)
redis.call("DEL", ARGV[3] .. "waiting:" .. id)
redis.call("PUBLISH", ARGV[3] .. "outcome:" .. id, "cancelled")
return "deleted"
