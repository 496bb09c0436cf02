-- done: finish tasks that succeeded without retention (their records are deleted).
-- KEYS[1] active          <ns>:{q}:active
-- KEYS[2] lease           <ns>:{q}:lease
-- KEYS[3] processed total <ns>:{q}:processed
-- KEYS[4] processed day   <ns>:{q}:processed:<YYYY-MM-DD>
-- KEYS[5] processed minute (framework's own key; "" = none)
-- KEYS[6] optional: in-flight set of the acknowledging worker <ext>:{q}:inflight:<server id> (framework's
--         own key); every id of the batch leaves it here, so the set holds what the worker still runs
--         instead of growing until the next heartbeat trims it in one large SREM
-- ARGV[1] task key prefix <ns>:{q}:t:
-- ARGV[2] day counter EXPIREAT (Unix s)
-- ARGV[3] minute counter TTL (s)
-- ARGV[4] the queue's prefix of the framework's own keys <ext>:{q}: ("" = announce nothing)
-- ARGV[5], ARGV[6], ARGV[7], ... triples: task id, its unique lock key ("" = none), its result ("" = none:
--         the record's result field, if any, is announced)
-- returns, per task in order, 1 done or 0 not found (no longer active: another worker owns it now)
--
-- Announcing: a task found whose waiting marker <ext>:{q}:waiting:<id> exists has "done" published on
-- <ext>:{q}:outcome:<id> (with "\n" and the result when there is one), and the marker deleted. The queue's
-- flag <ext>:{q}:waited (set beside every marker, expiring no sooner) says whether anyone waits on the queue at
-- all: a batch of a queue nobody waits on pays one EXISTS; otherwise one EXISTS over the batch's markers.
--
-- The same transition as asynq's done run once per task, in order: LREM active 0 id (every occurrence),
-- and only for a task found there: ZREM lease, DEL its record, DEL its unique lock if it still holds
-- it, stats(processed). An id given twice is found once, as a second LREM would find nothing. The
-- lease, record, lock and counter writes are done once for the batch (ZREM, DEL, MGET + DEL, bump).
--
-- The active list: k LREMs scan the whole list k times. A batch of at least REWRITE_MIN ids, on a list
-- of at most REWRITE_PER_ID entries per id and REWRITE_MAX in all, is removed in one pass instead:
-- LLEN, LRANGE the list, drop every occurrence of the batch's ids, and rewrite only the part that
-- changed. The longer end outside the outermost occurrences stays in place (LTRIM; DEL when both ends
-- are touched) and the survivors of the rest are pushed back in their order (RPUSH after a kept head,
-- or LPUSH in reverse before a kept tail), PUSH_CHUNK at a time (unpack's stack limit). The list left
-- is exactly the one the LREMs leave; it is not written when no id is found. Measured on Valkey,
-- copying the list into Lua costs about 12 LREM scans of it and re-pushing it about 12 more: from 16
-- ids the rewrite is faster when the batch's ids sit near one end (the oldest tasks finishing first,
-- the common case); when they are spread over the whole list it takes up to 2x the LREMs' time at 16
-- ids and about the same from 24.
-- The per-id bound caps what one batch copies and replicates (the survivors pushed are propagated to
-- the AOF and replicas); past it, or for smaller batches, the per-task LREM is kept.
local REWRITE_MIN = 16
local REWRITE_PER_ID = 64
local REWRITE_MAX = 10000
local PUSH_CHUNK = 1000

local n = (#ARGV - 4) / 3
local out = {}
local ids = {}
local keys = {}
local locks = {} -- unique lock key -> the found ids that name it
local lock_keys = {}
local results = {}
local function found(i)
  local id = ARGV[i]
  out[#out + 1] = 1
  ids[#ids + 1] = id
  results[#ids] = ARGV[i + 2]
  keys[#keys + 1] = ARGV[1] .. id
  local lock = ARGV[i + 1]
  if lock ~= "" then
    if not locks[lock] then
      locks[lock] = {}
      lock_keys[#lock_keys + 1] = lock
    end
    locks[lock][id] = true
  end
end

local len = -1
if n >= REWRITE_MIN then
  len = redis.call("LLEN", KEYS[1])
  if len == 0 then
    for i = 1, n do
      out[i] = 0
    end
    return out
  end
end
if len > 0 and len <= REWRITE_PER_ID * n and len <= REWRITE_MAX then
  -- batch[id]: nil not in the batch, 0 not in the list, 1 in the list, 2 reported found
  local batch = {}
  for i = 5, #ARGV, 3 do
    batch[ARGV[i]] = 0
  end
  local list = redis.call("LRANGE", KEYS[1], 0, -1)
  local total, first, last = #list, 0, 0
  for i = 1, total do
    if batch[list[i]] then
      batch[list[i]] = 1
      if first == 0 then
        first = i
      end
      last = i
    end
  end
  for i = 5, #ARGV, 3 do
    if batch[ARGV[i]] == 1 then
      batch[ARGV[i]] = 2
      found(i)
    else
      out[#out + 1] = 0
    end
  end
  if first > 0 then
    -- list[first] and list[last] are the outermost occurrences; the longer end outside them stays
    local moved, m = {}, 0
    if first - 1 >= total - last then
      for i = first + 1, total do
        if not batch[list[i]] then
          m = m + 1
          moved[m] = list[i]
        end
      end
      if first == 1 then
        redis.call("DEL", KEYS[1])
      else
        redis.call("LTRIM", KEYS[1], 0, first - 2)
      end
      for c = 1, m, PUSH_CHUNK do
        redis.call("RPUSH", KEYS[1], unpack(moved, c, math.min(c + PUSH_CHUNK - 1, m)))
      end
    else
      for i = last - 1, 1, -1 do -- reversed: each LPUSH leaves its last argument at the head
        if not batch[list[i]] then
          m = m + 1
          moved[m] = list[i]
        end
      end
      redis.call("LTRIM", KEYS[1], last, -1)
      for c = 1, m, PUSH_CHUNK do
        redis.call("LPUSH", KEYS[1], unpack(moved, c, math.min(c + PUSH_CHUNK - 1, m)))
      end
    end
  end
else
  for i = 5, #ARGV, 3 do
    if redis.call("LREM", KEYS[1], 0, ARGV[i]) == 0 then
      out[#out + 1] = 0
    else
      found(i)
    end
  end
end
if #ids > 0 and ARGV[4] ~= "" and redis.call("EXISTS", ARGV[4] .. "waited") == 1 then
  local markers = {}
  for j, id in ipairs(ids) do
    markers[j] = ARGV[4] .. "waiting:" .. id
  end
  local waited = 0
  for c = 1, #markers, PUSH_CHUNK do
    waited = waited + redis.call("EXISTS", unpack(markers, c, math.min(c + PUSH_CHUNK - 1, #markers)))
  end
  if waited > 0 then
    for j, id in ipairs(ids) do
      if redis.call("DEL", markers[j]) == 1 then
        local result = results[j]
        if result == "" then
          result = redis.call("HGET", keys[j], "result")
        end
        local message = "done"
        if result then
          message = "done\n" .. result
        end
        redis.call("PUBLISH", ARGV[4] .. "outcome:" .. id, message)
      end
    end
  end
end
if #ids > 0 then
  redis.call("ZREM", KEYS[2], unpack(ids))
  redis.call("DEL", unpack(keys))
  if #lock_keys > 0 then
    -- a lock is released only while its value is the id of a task finished here
    local owners = redis.call("MGET", unpack(lock_keys))
    local held = {}
    for j, lock in ipairs(lock_keys) do
      if owners[j] and locks[lock][owners[j]] then
        held[#held + 1] = lock
      end
    end
    if #held > 0 then
      redis.call("DEL", unpack(held))
    end
  end
  bump(KEYS[3], KEYS[4], KEYS[5], #ids, ARGV[2], ARGV[3])
end
if KEYS[6] then
  local batch_ids = {}
  for i = 5, #ARGV, 3 do
    batch_ids[#batch_ids + 1] = ARGV[i]
  end
  for c = 1, #batch_ids, PUSH_CHUNK do
    redis.call("SREM", KEYS[6], unpack(batch_ids, c, math.min(c + PUSH_CHUNK - 1, #batch_ids)))
  end
end
return out
