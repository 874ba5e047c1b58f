-- Pause dispatch for this model class until now + ARGV[5] microseconds (never shortens a
-- longer pause already in force). Returns the pause end in microseconds.
local now = now_us()
return pause_until(now, now + tonumber(ARGV[5]))
