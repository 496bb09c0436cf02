-- Prelude of the limit_* scripts (after _lib.lua), prepended by scripts.py. Defines local helpers only.

-- drop_dead_holders(slots, ns, now): take out of a concurrency limit's slots (a ZSET of "<queue>\n<id>", scored
-- with the time a task took the slot, or minus the time it is kept until for a handler given up on that still
-- runs: limit_release.lua) the holders that are gone: a task no longer leased in <ns>:{<queue>}:lease (its worker
-- died and it was archived or deleted rather than run again), or a kept slot past its time. now in Unix ms.
local function drop_dead_holders(slots, ns, now)
  local held = redis.call("ZRANGE", slots, 0, -1, "WITHSCORES")
  for j = 1, #held, 2 do
    local holder, score = held[j], tonumber(held[j + 1])
    local alive
    if score < 0 then
      alive = -score * 1000 >= now
    else
      local sep = string.find(holder, "\n", 1, true)
      local lease = sep and redis.call("ZSCORE", ns .. ":{" .. string.sub(holder, 1, sep - 1) .. "}:lease",
        string.sub(holder, sep + 1))
      alive = lease and tonumber(lease) * 1000 >= now
    end
    if not alive then
      redis.call("ZREM", slots, holder)
    end
  end
end
