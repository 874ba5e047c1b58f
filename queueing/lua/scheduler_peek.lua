-- The request dispatch would take next: {id, user, class, cost, enqueued_at} or nil. Read-only.
local names, shares = classes()
local h = head(names, shares)
if h == nil then
  return false
end
local id = id_of(h[1])
local req = redis.call('HMGET', req_key(id), 'c', 't')
return {id, h[3], h[2], req[1], req[2]}
