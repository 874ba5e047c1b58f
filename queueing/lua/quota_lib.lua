-- Helpers shared by every quota_*.lua script (prepended to each one when it is loaded).
--
-- Counter hashes (one per holder and period, e.g. gw:q:user:7:day:20261130) hold
--   ut, uu = tokens and micro-USD USED (settled calls), ht, hu = HELD by admitted, unsettled
--   requests at their worst-case cost. Integers only: micro-USD keeps money exact.
-- In-flight sets (gw:q:<kind>:<id>:inflight) are zsets of request ids scored by admission time.
-- A reservation (gw:q:res:<request id>) remembers which counters and sets it holds, so settle
-- and release touch exactly those, once.

local function num(value)
  return tonumber(value) or 0
end

-- Create a counter that does not exist yet, from the database's figures (ARGV) when given.
-- Returns true if this call created it.
local function ensure_counter(key, init_tok, init_usd, ttl)
  if redis.call('EXISTS', key) == 1 then
    return false
  end
  redis.call('HSET', key, 'ut', math.max(init_tok, 0), 'uu', math.max(init_usd, 0), 'ht', 0, 'hu', 0)
  redis.call('EXPIRE', key, ttl)
  return true
end

-- Give a reservation back: its held amounts leave its counters, its id leaves the in-flight sets.
-- Returns false if there was no reservation.
local function drop_reservation(res_key, request_id)
  local res = redis.call('HMGET', res_key, 'tok', 'usd', 'keys', 'sets')
  if not res[1] then
    return false
  end
  local tok, usd = num(res[1]), num(res[2])
  for key in string.gmatch(res[3] or '', '%S+') do
    if redis.call('EXISTS', key) == 1 then
      local held = redis.call('HMGET', key, 'ht', 'hu')
      redis.call('HSET', key, 'ht', math.max(num(held[1]) - tok, 0), 'hu', math.max(num(held[2]) - usd, 0))
    end
  end
  for key in string.gmatch(res[4] or '', '%S+') do
    redis.call('ZREM', key, request_id)
  end
  redis.call('DEL', res_key)
  return true
end
