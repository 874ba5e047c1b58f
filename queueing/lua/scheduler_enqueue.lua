-- Add a request, once: a second enqueue of the same id changes nothing (returns 0).
-- ARGV[o..o+5] = id, member, user, class, cost, weight; ARGV[o+6] = enqueued_at in seconds or ''
-- for the Redis clock. A user whose queue in this class was empty starts at the class's
-- current virtual time (or their own, if later): time spent idle earns no credit.
local names, shares, o = classes()
local id, m, u, c = ARGV[o], ARGV[o + 1], ARGV[o + 2], ARGV[o + 3]
local cost, weight = tonumber(ARGV[o + 4]), tonumber(ARGV[o + 5])
if redis.call('EXISTS', req_key(id)) == 1 then
  return 0
end
local t = tonumber(ARGV[o + 6])
if t == nil then
  local now = redis.call('TIME')
  t = tonumber(now[1]) + tonumber(now[2]) / 1000000
end
redis.call('HSET', req_key(id), 'u', u, 'p', c, 'c', cost, 'w', weight, 't', t, 'm', m)
redis.call('ZADD', fifo_key(c, u), t, m)

local uk = user_key(c, u)
local user = redis.call('HMGET', uk, 'vt', 'n')
if num(user[2], 0) <= 0 then
  local v = num(redis.call('HGET', class_key(c), 'v'), 0)
  local vt = math.max(num(user[1], 0), v)
  redis.call('HSET', uk, 'vt', vt, 'n', 1, 'tok', cost)
  redis.call('PERSIST', uk)
  redis.call('ZADD', users_key(c), vt, u)
else
  redis.call('HINCRBY', uk, 'n', 1)
  redis.call('HINCRBY', uk, 'tok', cost)
end
redis.call('HINCRBY', class_key(c), 'n', 1)
redis.call('HINCRBY', class_key(c), 'tok', cost)
return 1
