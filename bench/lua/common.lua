-- What both wrk scripts (agent.lua, fleet.lua) share: a monotonic clock in milliseconds, the "BENCH_RESULT {json}"
-- line their done() writes for bench to read, and a gzip member with one
-- stored (uncompressed) deflate block and its CRC-32, which the server inflates as it does the agent's bodies.
-- Each script loads it with dofile from its own directory, once per Lua state (wrk's main state and each thread's).

local bit = require("bit")
local ffi = require("ffi")

ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]])
local timespec = ffi.new("bench_timespec")

local function now_ms()
  ffi.C.clock_gettime(1, timespec) -- CLOCK_MONOTONIC
  return tonumber(timespec.tv_sec) * 1000 + tonumber(timespec.tv_nsec) / 1e6
end

local crc_table = {}
for i = 0, 255 do
  local c = i
  for _ = 1, 8 do
    if bit.band(c, 1) == 1 then
      c = bit.bxor(0xEDB88320, bit.rshift(c, 1))
    else
      c = bit.rshift(c, 1)
    end
  end
  crc_table[i] = c
end

local function crc32(s)
  local c = 0xFFFFFFFF
  for i = 1, #s do
    c = bit.bxor(crc_table[bit.band(bit.bxor(c, s:byte(i)), 0xFF)], bit.rshift(c, 8))
  end
  return bit.bnot(c)
end

local function le16(n)
  return string.char(bit.band(n, 0xFF), bit.band(bit.rshift(n, 8), 0xFF))
end

local function le32(n)
  return le16(bit.band(n, 0xFFFF)) .. le16(bit.band(bit.rshift(n, 16), 0xFFFF))
end

local GZIP_HEADER = "\31\139\8\0\0\0\0\0\0\255"

local function gzip_stored(s)
  local n = #s
  return GZIP_HEADER .. "\1" .. le16(n) .. le16(bit.bnot(n)) .. s .. le32(crc32(s)) .. le32(n)
end

local function json_value(v)
  if type(v) == "table" then
    local parts = {}
    local is_list = #v > 0
    if is_list then
      for _, item in ipairs(v) do
        parts[#parts + 1] = json_value(item)
      end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    for k, item in pairs(v) do
      parts[#parts + 1] = json_value(tostring(k)) .. ":" .. json_value(item)
    end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif type(v) == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c)
      return string.format("\\u%04x", c:byte())
    end) .. '"'
  elseif type(v) == "number" then
    if v ~= v or v == math.huge or v == -math.huge then
      return "null"
    end
    return string.format("%.17g", v)
  elseif type(v) == "boolean" then
    return tostring(v)
  end
  return "null"
end

-- What wrk measured, as both scripts report it: done() adds its own counts and writes the line bench reads.
local function wrk_result(summary, latency)
  return {
    duration_us = summary.duration,
    requests = summary.requests,
    bytes = summary.bytes,
    errors = {
      connect = summary.errors.connect,
      read = summary.errors.read,
      write = summary.errors.write,
      status = summary.errors.status,
      timeout = summary.errors.timeout,
    },
    latency_us = {
      p50 = latency:percentile(50),
      p90 = latency:percentile(90),
      p99 = latency:percentile(99),
      p999 = latency:percentile(99.9),
      max = latency.max,
      mean = latency.mean,
    },
  }
end

local function result_write(result)
  io.write("BENCH_RESULT " .. json_value(result) .. "\n")
end

return { now_ms = now_ms, gzip_stored = gzip_stored, wrk_result = wrk_result, result_write = result_write }
