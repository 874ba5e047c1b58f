-- Replace a request's reservation by its actual cost, once.
-- KEYS[1] reservation, KEYS[2] settled marker, KEYS[3..2+C] the CURRENT period's counters.
-- ARGV[1] request id, ARGV[2] tokens, ARGV[3] micro-USD, ARGV[4] C, ARGV[5] marker TTL s,
-- ARGV[6] 1 if initial figures from the database already include this request; then per
-- counter: initial used tokens, initial used micro-USD, TTL s.
-- The held amounts leave the counters they were reserved on (possibly yesterday's); the actual
-- cost is added to today's / this month's. A counter created here from the database already
-- counts this call when ARGV[6] is 1 (the caller records the call before settling).
-- Returns {0} if already settled, else {1, then ut, uu of each current counter}.
local request_id, tok, usd = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local c = tonumber(ARGV[4])
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {0}
end
drop_reservation(KEYS[1], request_id)
local out = {1}
for i = 1, c do
  local a = 6 + (i - 1) * 3
  local key = KEYS[2 + i]
  local created = ensure_counter(key, tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]))
  if not (created and ARGV[6] == '1') then
    redis.call('HINCRBY', key, 'ut', tok)
    redis.call('HINCRBY', key, 'uu', usd)
  end
  local row = redis.call('HMGET', key, 'ut', 'uu')
  out[#out + 1] = num(row[1])
  out[#out + 1] = num(row[2])
end
redis.call('SET', KEYS[2], '1', 'EX', tonumber(ARGV[5]))
return out
