-- Admit a request against every quota of its holders at once, reserving its worst-case cost:
-- all counters and in-flight sets are checked first, and only if ALL pass are they charged.
-- KEYS[1] reservation, KEYS[2] settled marker, KEYS[3..2+C] counters, then S in-flight sets.
-- ARGV[1] now (us), ARGV[2] request id, ARGV[3] tokens, ARGV[4] micro-USD, ARGV[5] C, ARGV[6] S,
-- ARGV[7] reservation TTL s; then per counter: token limit, micro-USD limit (-1 = none),
-- initial used tokens, initial used micro-USD (from the database), TTL s; then per set: max
-- in flight (-1 = none).
-- Returns {1, 'admitted' | 'already'} or {0, failing index (1-based over counters*2 then
-- sets), committed amount (used + held, or in flight)}.
local now, request_id = tonumber(ARGV[1]), ARGV[2]
local tok, usd = tonumber(ARGV[3]), tonumber(ARGV[4])
local c, s, ttl = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then
  return {1, 'already'}
end

local keys = {}
for i = 1, c do
  local a = 7 + (i - 1) * 5
  local key = KEYS[2 + i]
  ensure_counter(key, tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]))
  local row = redis.call('HMGET', key, 'ut', 'uu', 'ht', 'hu')
  local tok_limit, usd_limit = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local committed_tok = num(row[1]) + num(row[3])
  local committed_usd = num(row[2]) + num(row[4])
  if tok_limit >= 0 and committed_tok + tok > tok_limit then
    return {0, 2 * i - 1, committed_tok}
  end
  if usd_limit >= 0 and committed_usd + usd > usd_limit then
    return {0, 2 * i, committed_usd}
  end
  keys[#keys + 1] = key
end

local sets = {}
local a = 7 + c * 5
for j = 1, s do
  local key = KEYS[2 + c + j]
  -- a reservation older than its TTL was lost by a crashed caller: it no longer occupies a slot
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - ttl * 1000000)
  local in_flight = redis.call('ZCARD', key)
  local max = tonumber(ARGV[a + j])
  if max >= 0 and in_flight + 1 > max then
    return {0, 2 * c + j, in_flight}
  end
  sets[#sets + 1] = key
end

for _, key in ipairs(keys) do
  redis.call('HINCRBY', key, 'ht', tok)
  redis.call('HINCRBY', key, 'hu', usd)
end
for _, key in ipairs(sets) do
  redis.call('ZADD', key, now, request_id)
  redis.call('EXPIRE', key, ttl)
end
redis.call('HSET', KEYS[1], 'tok', tok, 'usd', usd, 'keys', table.concat(keys, ' '), 'sets', table.concat(sets, ' '))
redis.call('EXPIRE', KEYS[1], ttl)
return {1, 'admitted'}
