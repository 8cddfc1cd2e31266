"""The Lua scripts of the Redis backend. Each runs atomically on the server.

Every script touches only the keys of one session, all of which share one hash tag, so on
Redis Cluster each runs on the one node that owns the session's slot. Keys, always passed
in this order (scripts that need fewer take a prefix of the list)::

    KEYS[1] m   hash   the session record: tenant, session, nonce, times, ttl, metadata
    KEYS[2] b   hash   branch name -> "created_us|parent|fork_seq|n" (fixed at fork)
    KEYS[3] h   hash   branch name -> head seq
    KEYS[4] e   hash   "<branch>:<seq>" -> event record (header line, then the JSON body)
    KEYS[5] i   hash   idempotency key -> "fingerprint|branch|first|last|created_us"
    KEYS[6] it  zset   idempotency key scored by created_us (to find stale records)
    KEYS[7] st  hash   the state documents, one per branch: tenant, session, nonce, then
                       version, body, updated_us for main (the fields of the layout
                       before state was per branch, so those documents still read) and
                       version:<b>, body:<b>, updated_us:<b> for any other branch b

Times arrive as decimal strings of microseconds from ``StoreConfig.clock`` and are stored
as given: Lua 5.1 numbers print with 14 significant digits, so a time is never turned back
into a string with ``tostring``; sums use ``%.0f`` (exact below 2^53).

Replies are arrays whose first element is a status word; the Python side maps each word to
a typed error at one place.
"""

from __future__ import annotations

__all__ = [
    "APPEND",
    "CREATE",
    "DELETE",
    "FORK",
    "GET_STATE",
    "IDEM_CLEAN",
    "INDEX_CAS",
    "PURGE_ONE",
    "PUT_STATE",
    "SET_TTL",
    "SNAPSHOT",
]

# Load the session record, check it belongs to the caller and is live at ARGV now.
# Returns the record fields, or nil and a status word.
_LIVE = """
local function live(tenant, session, now)
  local cur = redis.call('HMGET', KEYS[1], 'tenant', 'session', 'expires_us', 'nonce',
                         'ttl_us')
  if not cur[1] then return nil, 'nosession' end
  if cur[1] ~= tenant or cur[2] ~= session then return nil, 'integrity' end
  if cur[3] ~= '' and tonumber(cur[3]) <= tonumber(now) then return nil, 'expired' end
  return cur
end
local function expire_all(ms)
  for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ms) end
end
local function ttl_ms(ttl_us, grace_ms)
  return string.format('%d', math.ceil(tonumber(ttl_us) / 1000) + tonumber(grace_ms))
end
"""

SNAPSHOT = """
local out = {}
for i = 1, #KEYS do out[i] = redis.call('HGETALL', KEYS[i]) end
return out
"""
"""Read several hashes of one session at one instant (a consistent view)."""

CREATE = (
    _LIVE
    + """
-- ARGV: tenant, session, now, nonce, user_id, metadata, ttl, ttl_us, expires_us,
--       main branch info, grace_ms
local cur = redis.call('HMGET', KEYS[1], 'tenant', 'session', 'expires_us', 'nonce',
                       'created_us')
local replaced = nil
if cur[1] then
  if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] then return {'integrity'} end
  if cur[3] == '' or tonumber(cur[3]) > tonumber(ARGV[3]) then
    return {'exists', cur[4], cur[5]}
  end
  redis.call('DEL', unpack(KEYS))  -- expired: purge on the way, like the model does
  replaced = {cur[4], cur[5]}
end
redis.call('HSET', KEYS[1], 'v', '1', 'tenant', ARGV[1], 'session', ARGV[2],
           'nonce', ARGV[4], 'created_us', ARGV[3], 'updated_us', ARGV[3],
           'user_id', ARGV[5], 'metadata', ARGV[6], 'ttl', ARGV[7], 'ttl_us', ARGV[8],
           'expires_us', ARGV[9])
redis.call('HSET', KEYS[2], 'main', ARGV[10])
redis.call('HSET', KEYS[3], 'main', '0')
if ARGV[8] ~= '' then expire_all(ttl_ms(ARGV[8], ARGV[11])) end
if replaced then return {'replaced', replaced[1], replaced[2]} end
return {'ok'}
"""
)

APPEND = (
    _LIVE
    + """
-- ARGV: 1 tenant, 2 session, 3 now, 4 branch, 5 expected ('' = none), 6 idempotency key
--       ('' = none), 7 fingerprint, 8 idempotency horizon, 9 grace_ms,
--       10 header ("tenant<US>session<US>branch<US>created_us"), 11 n,
--       then n pairs (token count or '', body)
local cur, err = live(ARGV[1], ARGV[2], ARGV[3])
if not cur then return {err} end
local branch = ARGV[4]
local head = redis.call('HGET', KEYS[3], branch)
if not head then return {'nobranch'} end
head = tonumber(head)
local key = ARGV[6]
if key ~= '' then
  local rec = redis.call('HGET', KEYS[5], key)
  if rec then
    local fp, br, first, last, created =
      string.match(rec, '^(%x+)|([^|]+)|(%d+)|(%d+)|(%d+)$')
    if fp and tonumber(created) > tonumber(ARGV[8]) then
      if fp ~= ARGV[7] then return {'mismatch'} end
      local fields = {}
      for s = tonumber(first), tonumber(last) do fields[#fields + 1] = br .. ':' .. s end
      return {'replay', br, first, last, cur[4], redis.call('HMGET', KEYS[4], unpack(fields))}
    end
  end
end
if ARGV[5] ~= '' and tonumber(ARGV[5]) ~= head then
  return {'conflict', tostring(head)}
end
local n = tonumber(ARGV[11])
local prefix = cur[4] .. '\\31' .. ARGV[10] .. '\\31'
local suffix = '\\31' .. key .. '\\n'
local batch = {}
for j = 1, n do
  local seq = head + j
  batch[#batch + 1] = branch .. ':' .. seq
  batch[#batch + 1] = seq .. '\\31' .. prefix .. ARGV[10 + 2 * j] .. suffix .. ARGV[11 + 2 * j]
  if #batch >= 400 then redis.call('HSET', KEYS[4], unpack(batch)); batch = {} end
end
if #batch > 0 then redis.call('HSET', KEYS[4], unpack(batch)) end
local last = head + n
redis.call('HSET', KEYS[3], branch, tostring(last))
if cur[5] ~= '' then
  redis.call('HSET', KEYS[1], 'updated_us', ARGV[3], 'expires_us',
             string.format('%.0f', tonumber(ARGV[3]) + tonumber(cur[5])))
else
  redis.call('HSET', KEYS[1], 'updated_us', ARGV[3])
end
local first_record = '0'
if key ~= '' then
  if redis.call('ZCARD', KEYS[6]) == 0 then first_record = '1' end
  redis.call('HSET', KEYS[5], key, ARGV[7] .. '|' .. branch .. '|' .. (head + 1) .. '|' ..
             last .. '|' .. ARGV[3])
  redis.call('ZADD', KEYS[6], ARGV[3], key)
end
-- Drop a few stale idempotency records on the way, so busy sessions stay small.
local stale = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', ARGV[8], 'LIMIT', 0, 8)
if #stale > 0 then
  redis.call('HDEL', KEYS[5], unpack(stale))
  redis.call('ZREM', KEYS[6], unpack(stale))
end
if cur[5] ~= '' then expire_all(ttl_ms(cur[5], ARGV[9])) end
return {'ok', tostring(head + 1), tostring(last), cur[4], first_record}
"""
)

FORK = (
    _LIVE
    + """
-- ARGV: tenant, session, now, new branch, from branch, at ('' = head)
local cur, err = live(ARGV[1], ARGV[2], ARGV[3])
if not cur then return {err} end
local head = redis.call('HGET', KEYS[3], ARGV[5])
if not head then return {'nobranch'} end
if redis.call('HEXISTS', KEYS[2], ARGV[4]) == 1 then return {'exists'} end
local at = head
if ARGV[6] ~= '' then at = ARGV[6] end
if tonumber(at) > tonumber(head) then return {'badfork', head} end
local n = redis.call('HLEN', KEYS[2])
redis.call('HSET', KEYS[2], ARGV[4], ARGV[3] .. '|' .. ARGV[5] .. '|' .. at .. '|' .. n)
redis.call('HSET', KEYS[3], ARGV[4], at)
return {'ok', at}
"""
)

# The fields of one branch's document in the state hash (see KEYS[7] above).
_STATE_FIELDS = """
local function state_fields(branch)
  local sfx = ''
  if branch ~= 'main' then sfx = ':' .. branch end
  return 'version' .. sfx, 'body' .. sfx, 'updated_us' .. sfx
end
"""

GET_STATE = (
    _STATE_FIELDS
    + """
-- KEYS: m, h, st. ARGV: branch. The session record, whether the branch exists, and the
-- owner fields and the branch's document, read at one instant.
local v, b, u = state_fields(ARGV[1])
return {redis.call('HGETALL', KEYS[1]), redis.call('HEXISTS', KEYS[2], ARGV[1]),
        redis.call('HMGET', KEYS[3], 'tenant', 'session', 'nonce', v, b, u)}
"""
)

PUT_STATE = (
    _LIVE
    + _STATE_FIELDS
    + """
-- KEYS: m, h, st. ARGV: tenant, session, now, expected version, body, branch
local cur, err = live(ARGV[1], ARGV[2], ARGV[3])
if not cur then return {err} end
if redis.call('HEXISTS', KEYS[2], ARGV[6]) == 0 then return {'nobranch'} end
local vf, bf, uf = state_fields(ARGV[6])
local st = redis.call('HMGET', KEYS[3], 'tenant', 'session', 'nonce', vf)
local version = 0
if st[1] then
  if st[1] ~= ARGV[1] or st[2] ~= ARGV[2] then return {'integrity'} end
  if st[3] == cur[4] then
    version = tonumber(st[4] or '0')
  else
    redis.call('DEL', KEYS[3])  -- left by an earlier incarnation of the session id
  end
end
if version ~= tonumber(ARGV[4]) then return {'conflict', tostring(version)} end
redis.call('HSET', KEYS[3], 'tenant', ARGV[1], 'session', ARGV[2], 'nonce', cur[4],
           vf, tostring(version + 1), bf, ARGV[5], uf, ARGV[3])
local left = redis.call('PTTL', KEYS[1])
if left > 0 then redis.call('PEXPIRE', KEYS[3], left) end
return {'ok', tostring(version + 1)}
"""
)

SET_TTL = (
    _LIVE
    + """
-- ARGV: tenant, session, now, ttl, ttl_us, expires_us, grace_ms
local cur, err = live(ARGV[1], ARGV[2], ARGV[3])
if not cur then return {err} end
redis.call('HSET', KEYS[1], 'ttl', ARGV[4], 'ttl_us', ARGV[5], 'expires_us', ARGV[6],
           'updated_us', ARGV[3])
if ARGV[5] == '' then
  for i = 1, #KEYS do redis.call('PERSIST', KEYS[i]) end
else
  expire_all(ttl_ms(ARGV[5], ARGV[7]))
end
return {'ok', redis.call('HGETALL', KEYS[1])}
"""
)

DELETE = """
-- ARGV: tenant, session
local cur = redis.call('HMGET', KEYS[1], 'tenant', 'session', 'nonce', 'created_us')
if not cur[1] then return {'nosession'} end
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] then return {'integrity'} end
redis.call('DEL', unpack(KEYS))
return {'ok', cur[3], cur[4]}
"""

PURGE_ONE = """
-- ARGV: tenant, session, nonce (of the incarnation the expiry index names), now
local cur = redis.call('HMGET', KEYS[1], 'tenant', 'session', 'nonce', 'created_us',
                       'expires_us')
if not cur[1] or cur[3] ~= ARGV[3] then return {'stale'} end
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] then return {'integrity'} end
if cur[5] ~= '' and tonumber(cur[5]) <= tonumber(ARGV[4]) then
  redis.call('DEL', unpack(KEYS))
  return {'deleted', cur[4]}
end
return {'live', cur[5]}
"""

IDEM_CLEAN = """
-- KEYS: m, i, it. ARGV: tenant, session, nonce, horizon
local cur = redis.call('HMGET', KEYS[1], 'tenant', 'session', 'nonce')
if not cur[1] or cur[3] ~= ARGV[3] then return {'stale'} end
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] then return {'integrity'} end
while true do
  local stale = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[4], 'LIMIT', 0, 500)
  if #stale == 0 then break end
  redis.call('HDEL', KEYS[2], unpack(stale))
  redis.call('ZREM', KEYS[3], unpack(stale))
end
local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if #oldest == 0 then return {'empty'} end
return {'left', oldest[2]}
"""

INDEX_CAS = """
-- One global index entry: change it only if nobody moved it since we read it.
-- ARGV: member, score we saw, new score ('' = remove)
local seen = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not seen or tonumber(seen) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
return 1
"""
