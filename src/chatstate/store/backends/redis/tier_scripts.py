"""The Lua scripts of the Redis hot tier (:mod:`.tiered`). Each runs atomically on the
server and touches one key: the session's cache hash.

One hash per session, ``KEYS[1] = "<prefix>:c:{tenant:session}"``, fields::

    t, s         tenant and session (checked on every call)
    gen          bumped by every write through any TieredStore; a fill that began before
                 a write is refused
    wh:<b>       head seq of branch b's cached window; wl:<b> its lowest seq
    ws:<b>       Redis time (ms) before which the window is known complete; served only
                 while now - ws < lease
    wv:<b>       the branch's validator in the system of record (its created_us) when
                 the window was filled
    e:<b>:<seq>  one event of the window, as JSON text built by the Python side

Times here are Redis TIME, never the store's clock: the lease is about real time. A hit
is only a candidate: the Python side serves it after the system of record confirms the
branch's validator and head (see :mod:`.tiered`), so what these scripts keep may be
stale (a restored snapshot, a lost write) without ever being served.
"""

from __future__ import annotations

__all__ = ["TIER_ADVANCE", "TIER_FILL", "TIER_GET", "TIER_INVALIDATE"]

_TIER_COMMON = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function owner_ok()
  local who = redis.call('HMGET', KEYS[1], 't', 's')
  return not who[1] or (who[1] == ARGV[1] and who[2] == ARGV[2])
end
local function drop_window(b)
  local w = redis.call('HMGET', KEYS[1], 'wh:' .. b, 'wl:' .. b)
  if w[1] then
    local fields = {'wh:' .. b, 'wl:' .. b, 'ws:' .. b, 'wv:' .. b}
    for q = tonumber(w[2]), tonumber(w[1]) do fields[#fields + 1] = 'e:' .. b .. ':' .. q end
    redis.call('HDEL', KEYS[1], unpack(fields))
  end
end
"""

TIER_GET = (
    _TIER_COMMON
    + """
-- ARGV: tenant, session, branch, after, before ('' = none), limit, order, lease_ms
-- Replies: {'miss', gen, now}; {'short'} (the window is there but the page reaches
-- below it); {'hit', gen, now, head, validator, first, last, events}.
if not owner_ok() then return {'integrity'} end
local b = ARGV[3]
local now = now_ms()
local rec = redis.call('HMGET', KEYS[1], 'gen', 'wh:' .. b, 'wl:' .. b, 'ws:' .. b, 'wv:' .. b)
local gen, stamp = rec[1] or '0', string.format('%d', now)
if not rec[2] or not rec[5] or now - tonumber(rec[4]) >= tonumber(ARGV[8]) then
  return {'miss', gen, stamp}
end
local found = {'hit', gen, stamp, rec[2], rec[5], '1', '0', {}}
local head, low = tonumber(rec[2]), tonumber(rec[3])
local lo, hi = tonumber(ARGV[4]) + 1, head
if ARGV[5] ~= '' then hi = math.min(hi, tonumber(ARGV[5]) - 1) end
if lo > hi then return found end
local limit = tonumber(ARGV[6])
local first, last = lo, math.min(hi, lo + limit - 1)
if ARGV[7] == 'desc' then first, last = math.max(lo, hi - limit + 1), hi end
if first < low then return {'short'} end
local fields = {}
for q = first, last do fields[#fields + 1] = 'e:' .. b .. ':' .. q end
found[6], found[7] = tostring(first), tostring(last)
found[8] = redis.call('HMGET', KEYS[1], unpack(fields))
return found
"""
)

TIER_FILL = (
    _TIER_COMMON
    + """
-- ARGV: 1 tenant, 2 session, 3 branch, 4 gen seen, 5 stamp_ms, 6 head, 7 low,
--       8 validator, 9 lease_ms, 10 key ttl ms, then pairs (seq, entry)
if not owner_ok() then return {'integrity'} end
if now_ms() - tonumber(ARGV[5]) >= tonumber(ARGV[9]) then return {'late'} end
if (redis.call('HGET', KEYS[1], 'gen') or '0') ~= ARGV[4] then return {'moved'} end
local b = ARGV[3]
drop_window(b)
local fields = {'t', ARGV[1], 's', ARGV[2], 'gen', ARGV[4], 'wh:' .. b, ARGV[6],
                'wl:' .. b, ARGV[7], 'ws:' .. b, ARGV[5], 'wv:' .. b, ARGV[8]}
for j = 11, #ARGV, 2 do
  fields[#fields + 1] = 'e:' .. b .. ':' .. ARGV[j]
  fields[#fields + 1] = ARGV[j + 1]
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIRE', KEYS[1], ARGV[10])
return {'ok'}
"""
)

TIER_ADVANCE = (
    _TIER_COMMON
    + """
-- After an append committed in the system of record.
-- ARGV: 1 tenant, 2 session, 3 branch, 4 first, 5 last, 6 elapsed_ms since the append
--       began, 7 lease_ms, 8 window size, 9 key ttl ms, then pairs (seq, entry) for the
--       newest events of the append
if not owner_ok() then return {'integrity'} end
local b = ARGV[3]
local now = now_ms()
redis.call('HINCRBY', KEYS[1], 'gen', 1)
redis.call('HSET', KEYS[1], 't', ARGV[1], 's', ARGV[2])
local rec = redis.call('HMGET', KEYS[1], 'wh:' .. b, 'wl:' .. b, 'ws:' .. b)
local first, last = tonumber(ARGV[4]), tonumber(ARGV[5])
local status = 'dropped'
if rec[1] and now - tonumber(rec[3]) < tonumber(ARGV[7]) then
  local head, low = tonumber(rec[1]), tonumber(rec[2])
  if head >= last then
    status = 'current'
  elseif head == first - 1 then
    local fields = {}
    for j = 10, #ARGV, 2 do
      fields[#fields + 1] = 'e:' .. b .. ':' .. ARGV[j]
      fields[#fields + 1] = ARGV[j + 1]
    end
    local new_low = math.max(low, last - tonumber(ARGV[8]) + 1)
    local gone = {}
    for q = low, new_low - 1 do gone[#gone + 1] = 'e:' .. b .. ':' .. q end
    if #gone > 0 then redis.call('HDEL', KEYS[1], unpack(gone)) end
    local stamp = math.max(tonumber(rec[3]), now - tonumber(ARGV[6]))
    fields[#fields + 1] = 'wh:' .. b
    fields[#fields + 1] = tostring(last)
    fields[#fields + 1] = 'wl:' .. b
    fields[#fields + 1] = tostring(new_low)
    fields[#fields + 1] = 'ws:' .. b
    fields[#fields + 1] = string.format('%d', stamp)
    redis.call('HSET', KEYS[1], unpack(fields))
    status = 'extended'
  end
end
if status == 'dropped' then drop_window(b) end
redis.call('PEXPIRE', KEYS[1], ARGV[9])
return {status}
"""
)

TIER_INVALIDATE = (
    _TIER_COMMON
    + """
-- Forget every cached window of the session but keep its generation for a while, so a
-- fill that began before this write is still refused. ARGV: tenant, session, keep_ms,
-- and '1' to do nothing when the key does not exist (a read of an unknown session must
-- not create one)
if not owner_ok() then return {'integrity'} end
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[1]) == 0 then return {'none'} end
local gen = redis.call('HINCRBY', KEYS[1], 'gen', 1)
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 't', ARGV[1], 's', ARGV[2], 'gen', gen)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {'ok'}
"""
)
