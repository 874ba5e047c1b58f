-- The next ARGV[o] requests of every configured class, in the order dispatch takes them within
-- the class if nothing else arrives, plus where some users' queues start. Read-only.
--
-- ARGV[o+1] = m, then m user keys. Returns, per configured class in order,
-- {heads, users}: heads a flat list of id, user, cost, enqueued_at per request (strings, as
-- stored); users one id per given user key (its first request in the class) or ''.
--
-- The order replays start-time fair queueing without changing anything: the user with the
-- smallest start tag goes next (ties as head_user: earlier-enqueued head, then lower id) and
-- its tag advances by cost / weight, exactly what take() would store. Users enter the replay
-- only when their start tag could be next, so the cost is O(n + users tied at the front) per
-- class, never the whole queue. Like head_user, at most 100 users tied on one tag are
-- considered.
local names, shares, o = classes()
local limit = tonumber(ARGV[o]) or 0
local wanted = tonumber(ARGV[o + 1]) or 0
local TIED = 100

-- Request at `offset` in user u's FIFO of class c: {member, t, cost, weight, raw cost, raw t}.
local function request_at(c, u, offset)
  local m = redis.call('ZRANGE', fifo_key(c, u), offset, offset)
  if #m == 0 then
    return nil
  end
  local r = redis.call('HMGET', req_key(id_of(m[1])), 'c', 'w', 't')
  return {m[1], num(r[3], 0), num(r[1], 0), num(r[2], 1), r[1] or '0', r[3] or '0'}
end

local function before(a, b)
  if a.tag ~= b.tag then
    return a.tag < b.tag
  end
  if a.req[2] ~= b.req[2] then
    return a.req[2] < b.req[2]
  end
  return a.req[1] < b.req[1]
end

local function heads_of(c)
  local out = {}
  if limit <= 0 then
    return out
  end
  local active = {}  -- users in the replay: {user, tag, offset, req}
  local rank = 0     -- next rank of users:<c> not yet in the replay
  local loaded = 0
  local pending = redis.call('ZRANGE', users_key(c), 0, 0, 'WITHSCORES')
  local taken = 0
  while taken < limit do
    local best = nil
    for _, a in ipairs(active) do
      if best == nil or before(a, best) then
        best = a
      end
    end
    -- Users not yet in the replay keep their stored tag: one that is not above the best so far
    -- may go first (or tie), so it joins before the choice is made.
    while #pending > 0 and loaded < limit + TIED
      and (best == nil or tonumber(pending[2]) <= best.tag) do
      local entry = {user = pending[1], tag = tonumber(pending[2]), offset = 0}
      entry.req = request_at(c, entry.user, 0)
      rank = rank + 1
      loaded = loaded + 1
      pending = redis.call('ZRANGE', users_key(c), rank, rank, 'WITHSCORES')
      if entry.req ~= nil then
        active[#active + 1] = entry
        if best == nil or before(entry, best) then
          best = entry
        end
      end
    end
    if best == nil then
      break
    end
    taken = taken + 1
    out[#out + 1] = id_of(best.req[1])
    out[#out + 1] = best.user
    out[#out + 1] = best.req[5]
    out[#out + 1] = best.req[6]
    best.tag = best.tag + best.req[3] / best.req[4]
    best.offset = best.offset + 1
    best.req = request_at(c, best.user, best.offset)
    if best.req == nil then
      for i, a in ipairs(active) do
        if a == best then
          table.remove(active, i)
          break
        end
      end
    end
  end
  return out
end

local result = {}
for _, c in ipairs(names) do
  local users = {}
  for i = 1, wanted do
    local first = redis.call('ZRANGE', fifo_key(c, ARGV[o + 1 + i]), 0, 0)
    users[i] = first[1] and id_of(first[1]) or ''
  end
  result[#result + 1] = {heads_of(c), users}
end
return result
