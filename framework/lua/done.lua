-- done: finish tasks that succeeded without retention (their records are deleted).
-- KEYS[1] active          <ns>:{q}:active
-- KEYS[2] lease           <ns>:{q}:lease
-- KEYS[3] processed total <ns>:{q}:processed
-- KEYS[4] processed day   <ns>:{q}:processed:<YYYY-MM-DD>
-- KEYS[5] processed minute (framework's own key; "" = none)
-- ARGV[1] task key prefix <ns>:{q}:t:
-- ARGV[2] day counter EXPIREAT (Unix s)
-- ARGV[3] minute counter TTL (s)
-- ARGV[4], ARGV[5], ... pairs: task id, its unique lock key ("" = none)
-- returns, per task in order, 1 done or 0 not found (no longer active: another worker owns it now)
local out = {}
local ids = {}
local keys = {}
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call("LREM", KEYS[1], 0, id) == 0 then
    out[#out + 1] = 0
  else
    out[#out + 1] = 1
    ids[#ids + 1] = id
    keys[#keys + 1] = ARGV[1] .. id
    release_unique(ARGV[i + 1], id)
  end
end
if #ids > 0 then
  redis.call("ZREM", KEYS[2], unpack(ids))
  redis.call("DEL", unpack(keys))
  bump(KEYS[3], KEYS[4], KEYS[5], #ids, ARGV[2], ARGV[3])
end
return out
