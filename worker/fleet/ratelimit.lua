-- Reserve the next fleet-wide send slot of one vendor (GCRA-style, clocked by Redis TIME).
-- KEYS[1]: the next free slot (ms); KEYS[2]: the vendor's 429 cooldown.
-- ARGV[1]: slot interval (ms); ARGV[2]: the longest wait the caller accepts (ms).
-- Returns the milliseconds to wait for the reserved slot, or -wait if it is further away than
-- the caller will wait (then nothing is reserved).
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + tonumber(now_parts[2]) / 1000
local cooldown = redis.call('PTTL', KEYS[2])
local earliest = now
if cooldown > 0 then earliest = now + cooldown end
local slot = tonumber(redis.call('GET', KEYS[1]) or '0')
if slot < earliest then slot = earliest end
local wait = slot - now
if wait > tonumber(ARGV[2]) then return tostring(-wait) end
local interval = tonumber(ARGV[1])
redis.call('SET', KEYS[1], tostring(slot + interval), 'PX', math.ceil(interval + 60000))
return tostring(wait)
