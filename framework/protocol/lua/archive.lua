-- archive: move a failed active task to the archive, trimming the archive to its caps.
-- KEYS[1] task hash       <ns>:{q}:t:<id>
-- KEYS[2] active          <ns>:{q}:active
-- KEYS[3] lease           <ns>:{q}:lease
-- KEYS[4] archived        <ns>:{q}:archived
-- KEYS[5] processed total, KEYS[6] processed day, KEYS[7] processed minute ("" = none)
-- KEYS[8] failed total,    KEYS[9] failed day,    KEYS[10] failed minute ("" = none)
-- ARGV[1] task id
-- ARGV[2] encoded TaskMessage (error_msg, last_failed_at updated)
-- ARGV[3] now, Unix seconds
-- ARGV[4] cutoff: archived before this are deleted (now - 90 days)
-- ARGV[5] most archived tasks kept (10000)
-- ARGV[6] task key prefix <ns>:{q}:t:
-- ARGV[7] day counter EXPIREAT (Unix s)
-- ARGV[8] minute counter TTL (s)
-- ARGV[9] optional: the queue's prefix of the framework's own keys <ext>:{q}: ("" or absent = announce
--         nothing); when the waiting marker <ext>:{q}:waiting:<id> exists, "archived" is published on
--         <ext>:{q}:outcome:<id> and the marker deleted ("deleted" when the caps dropped it at once: its record
--         is gone, and the uniqueness lock it held released)
-- returns 1 archived, 0 not found
if redis.call("LREM", KEYS[2], 0, ARGV[1]) == 0 then
  return 0
end
redis.call("ZREM", KEYS[3], ARGV[1])
redis.call("ZADD", KEYS[4], ARGV[3], ARGV[1])
redis.call("HSET", KEYS[1], "msg", ARGV[2], "state", "archived")
trim_archive(KEYS[4], ARGV[4], ARGV[5], ARGV[6]) -- after the record is written: a task the caps drop at once leaves none
bump(KEYS[5], KEYS[6], KEYS[7], 1, ARGV[7], ARGV[8])
bump(KEYS[8], KEYS[9], KEYS[10], 1, ARGV[7], ARGV[8])
if redis.call("EXISTS", KEYS[1]) == 1 then
  announce(ARGV[9] or "", ARGV[1], "archived")
else
  announce(ARGV[9] or "", ARGV[1], "deleted")
end
return 1
