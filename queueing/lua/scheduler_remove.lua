-- Cancel request ARGV[o] wherever it is in the queue (1), or 0 if it is not queued.
-- ARGV[o+1] = idle-user TTL s. The user's start tag is untouched: the next request inherits it.
local names, shares, o = classes()
local req = redis.call('HMGET', req_key(ARGV[o]), 'm', 'p', 'u')
if not req[1] then
  return 0
end
take(names, shares, req[1], req[2], req[3], false, tonumber(ARGV[o + 1]))
return 1
