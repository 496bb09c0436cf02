-- dequeue: move up to N tasks from pending to active and lease them (skipped when the queue is paused).
-- KEYS[1] pending  <ns>:{q}:pending
-- KEYS[2] active   <ns>:{q}:active
-- KEYS[3] lease    <ns>:{q}:lease
-- KEYS[4] paused   <ns>:{q}:paused
-- KEYS[5] suspects <ext>:{q}:suspects (framework's own key): ids of tasks recovered from a worker that died
--         running them; each runs alone, so that a task which kills its worker is the only one charged
-- KEYS[6] optional: in-flight set of the dequeuing worker <ext>:{q}:inflight:<server id> (framework's own
--         key); the ids taken are added to it in the same step, so a worker killed at any moment after
--         this script has its tasks on record for the recoverer
-- KEYS[7] optional, with KEYS[6]: waiters <ext>:{q}:waiters (framework's own key); when nothing is pending
--         the worker's id is put at its head, so the next enqueue hands its task straight to this worker
-- ARGV[1] task key prefix <ns>:{q}:t:
-- ARGV[2] lease expiry, Unix seconds (now + 30)
-- ARGV[3] N, the most tasks to take
-- ARGV[4] TTL of the in-flight set, seconds (when KEYS[6] is given)
-- ARGV[5] "1" when the dequeuing worker holds no task at all (it may take a suspect), else "0"
-- ARGV[6] the worker's server id (when KEYS[7] is given)
-- returns a flat list id1, msg1, id2, msg2, ... of the tasks taken (empty when paused or nothing is pending);
-- {id, msg, 1}: a suspect, taken alone (by a worker that holds nothing); {0}: a suspect is next and the
-- worker holds tasks, so nothing was taken (the worker finishes what it holds, then asks again alone).
-- A batch stops before the first suspect in it: the suspect and the ids after it go back to the head.
-- The same transition as N times asynq's RPOPLPUSH + HSET/HDEL + ZADD, with the list and lease writes of
-- the whole batch done once: RPOP with a count (Redis >= 6.2), one LPUSH (same resulting order), one ZADD.
-- The messages are read with one SORT ... GET <prefix>*->msg over the batch just pushed to the head of
-- active (the pattern carries the queue's hash tag, so a Cluster accepts it); a queue name holding a "*"
-- (which the pattern would substitute) or a server refusing the SORT reads them with one HGET each.
local call = redis.call
if call("EXISTS", KEYS[4]) == 1 then
  return {}
end
local want = ARGV[3]
local suspect = false
local suspects = call("EXISTS", KEYS[5]) == 1
if suspects then
  local head = call("LINDEX", KEYS[1], -1)
  if head and call("SISMEMBER", KEYS[5], head) == 1 then
    if ARGV[5] ~= "1" then
      return {0}
    end
    want, suspect = 1, true
  end
end
local popped = call("RPOP", KEYS[1], want)
if not popped then
  if KEYS[7] then
    call("LREM", KEYS[7], 0, ARGV[6])
    call("LPUSH", KEYS[7], ARGV[6])
    call("EXPIRE", KEYS[7], ARGV[4])
  end
  return {}
end
local n = #popped
if suspects and not suspect then
  for j = 2, n do
    if call("SISMEMBER", KEYS[5], popped[j]) == 1 then
      -- back to the head, in their order: the suspect is next for a worker that holds nothing
      local back = {}
      for k = n, j, -1 do
        back[#back + 1] = popped[k]
      end
      call("RPUSH", KEYS[1], unpack(back))
      for k = n, j, -1 do
        popped[k] = nil
      end
      n = j - 1
      break
    end
  end
end
call("LPUSH", KEYS[2], unpack(popped, 1, n))
local msgs = false
if not string.find(ARGV[1], "*", 1, true) then
  local got = redis.pcall("SORT", KEYS[2], "BY", "nosort", "LIMIT", 0, n, "GET", ARGV[1] .. "*->msg")
  if type(got) == "table" and not got.err and #got == n then
    msgs = got -- the head of active: the last id popped first
  end
end
local prefix, expiry = ARGV[1], ARGV[2]
local out, lease, ids = {}, {}, {}
local nout, nids = 0, 0
for j = 1, n do
  local id = popped[j]
  local key = prefix .. id
  local msg
  if msgs then
    msg = msgs[n - j + 1]
  else
    msg = call("HGET", key, "msg")
  end
  if msg then
    call("HSET", key, "state", "active")
    call("HDEL", key, "pending_since")
    nids = nids + 1
    ids[nids] = id
    lease[2 * nids - 1] = expiry
    lease[2 * nids] = id
    out[nout + 1] = id
    out[nout + 2] = msg
    nout = nout + 2
  else
    -- an id without a task record cannot run: it is dropped rather than left to block the queue
    call("LREM", KEYS[2], 1, id)
  end
end
if nids > 0 then
  call("ZADD", KEYS[3], unpack(lease))
  if KEYS[6] then
    call("SADD", KEYS[6], unpack(ids))
    call("EXPIRE", KEYS[6], ARGV[4])
  end
end
if suspect and nout > 0 then
  out[nout + 1] = 1
end
return out
