-- Fold one arrival into the decayed arrival sums of one priority class (read by queueing/eta.py).
-- KEYS[1] hash gw:eta:arrivals:<class>:
--   since        time of the first arrival this hash has seen (s)
--   t            time of the last update of the class totals (s)
--   cost, in, out, n   class totals: decayed sums of cost, input tokens, max_tokens, requests
--   c:<u>, t:<u>, w:<u>   per user key: decayed cost sum, its update time, the user's weight
--   k            arrivals since the last prune
-- A decayed sum at time t is sum(amount * exp(-(t - arrival) / tau)); its expected value for a
-- steady rate r is r * tau * (1 - exp(-age / tau)), which is how eta.py turns it into a rate.
-- ARGV = now (s, '' = Redis clock), tau (s), user key, weight, cost, input tokens, output
-- tokens, key TTL (s). Every 256 arrivals, users whose sum decayed below 0.5 token are dropped.
local now = tonumber(ARGV[1])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local tau = tonumber(ARGV[2])
local u = ARGV[3]
local key = KEYS[1]

local function decay(value, since)
  if value == nil or since == nil or now <= since then
    return value or 0
  end
  return value * math.exp(-(now - since) / tau)
end

local state = redis.call('HMGET', key, 'since', 't', 'cost', 'in', 'out', 'n', 'c:' .. u, 't:' .. u)
if state[1] == false then
  redis.call('HSET', key, 'since', tostring(now))
end
local last = tonumber(state[2])
redis.call('HSET', key,
  't', tostring(now),
  'cost', tostring(decay(tonumber(state[3]), last) + tonumber(ARGV[5])),
  'in', tostring(decay(tonumber(state[4]), last) + tonumber(ARGV[6])),
  'out', tostring(decay(tonumber(state[5]), last) + tonumber(ARGV[7])),
  'n', tostring(decay(tonumber(state[6]), last) + 1),
  'c:' .. u, tostring(decay(tonumber(state[7]), tonumber(state[8])) + tonumber(ARGV[5])),
  't:' .. u, tostring(now),
  'w:' .. u, ARGV[4])

if redis.call('HINCRBY', key, 'k', 1) >= 256 then
  redis.call('HSET', key, 'k', 0)
  local all = redis.call('HGETALL', key)
  local sums, times = {}, {}
  for i = 1, #all, 2 do
    local field = all[i]
    if string.sub(field, 1, 2) == 'c:' then
      sums[string.sub(field, 3)] = tonumber(all[i + 1])
    elseif string.sub(field, 1, 2) == 't:' then
      times[string.sub(field, 3)] = tonumber(all[i + 1])
    end
  end
  for user, sum in pairs(sums) do
    if decay(sum, times[user]) < 0.5 then
      redis.call('HDEL', key, 'c:' .. user, 't:' .. user, 'w:' .. user)
    end
  end
end
redis.call('EXPIRE', key, tonumber(ARGV[8]))
return 1
