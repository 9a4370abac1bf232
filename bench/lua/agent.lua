-- The benchmark's load generator: wrk speaking the agent protocol (and plain GETs for the staff paths).
--
--   wrk -t T -c C -d D -s bench/lua/agent.lua http://127.0.0.1:PORT -- mode=<mode> threads=T <key=value>...
--
-- modes:
--   poll304    GET <poll path> with the device key and If-None-Match: <its current ETag>
--   poll200    the same without If-None-Match
--   unchanged  PATCH <report path>: the device's stored report again (gzip), with a new uptime
--   changed    PATCH <report path>: the other report variant (every sensor row changes), then back, ...
--   mix        the fleet at the agent's defaults: 6 reports per poll (report every 10 s, poll every 60 s),
--              5% of reports changed, 5% of polls without If-None-Match; paced to rate=<requests/s>
--   get        GET each line of paths=<file> in turn, with header=<"Name: value"> if given
--
-- other arguments: data=<device file> states=<state file> poll=<path with {uuid}> report=<path>
--                  rate=<requests/s, mix only> paths=<file> header=<"Name: value">
--
-- Devices (bench/wrkdata.py) are split between wrk threads (device i goes to thread i % T), so each device's
-- variant is known to one thread. Reports carry no seq or reported_at, as the real agent's do not. A report body
-- is two gzip members: the prefix, compressed by Python ahead of time, and the tail '<uptime>}}' in a stored
-- (uncompressed) deflate block built here with its CRC-32 (bench/reports.py builds the same bytes for the tests).
--
-- done() prints one line, "BENCH_RESULT {json}", that bench/run.py reads: wrk's latency percentiles and error
-- counts, plus status codes, report outcomes and what was sent, counted in every thread.

local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
local now_ms, gzip_stored = common.now_ms, common.gzip_stored

-- setup (main state) -----------------------------------------------------------------------------------------

local threads = {}

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

-- init (one state per thread) ---------------------------------------------------------------------------------

local opts = {}
local devices = {}
local paths = {}
local cursor = 0
local started_s
local report_path, poll_template
local extra_header_name, extra_header_value

-- Counted per thread and collected by done() (wrk copies tables between states).
status = {}
outcome = { unchanged = 0, applied = 0, stale = 0 }
sent = { poll304 = 0, poll200 = 0, unchanged = 0, changed = 0, get = 0 }
lag = { n = 0, late = 0, over50 = 0, over250 = 0, max = 0, sum = 0 }
errors_sample = {}

local function load_devices(file, states_file, thread_index, thread_count)
  local states = nil
  if states_file and states_file ~= "" and states_file ~= "-" then
    local sf = assert(io.open(states_file, "rb"))
    states = sf:read("*l")
    sf:close()
  end
  local f = assert(io.open(file, "rb"))
  assert(f:read("*l") == "SSBENCH1", file .. " is not a benchmark device file")
  local count = tonumber(f:read("*l"))
  for i = 0, count - 1 do
    local line = f:read("*l")
    local uuid, key, etag, uptime, len_a, len_b = line:match("^(%S+) (%S+) (%S+) (%d+) (%d+) (%d+)$")
    len_a, len_b = tonumber(len_a), tonumber(len_b)
    if i % thread_count == thread_index then
      local a = f:read(len_a)
      local b = f:read(len_b)
      local variant = 0
      if states then
        variant = tonumber(states:sub(i + 1, i + 1)) or 0
      end
      devices[#devices + 1] = {
        uuid = uuid,
        etag = etag,
        uptime = tonumber(uptime),
        bodies = { a, b },
        variant = variant,
        poll_path = poll_template:gsub("{uuid}", uuid),
        key_headers = { ["X-Device-API-Key"] = key, ["Accept"] = "application/json" },
        inm_headers = { ["X-Device-API-Key"] = key, ["Accept"] = "application/json", ["If-None-Match"] = etag },
        report_headers = {
          ["X-Device-API-Key"] = key,
          ["Content-Type"] = "application/json",
          ["Content-Encoding"] = "gzip",
          ["Accept"] = "application/json",
        },
      }
    else
      f:seek("cur", len_a + len_b)
    end
  end
  f:close()
end

-- Pacing (mix only): requests are scheduled every 1/rate seconds per thread, whatever the answers' speed; a
-- request that starts after its slot counts as late (the server or the connections could not keep up).
local next_slot = nil
local function paced_delay()
  local now = now_ms()
  if next_slot == nil then
    next_slot = now
  end
  local slot = next_slot
  next_slot = next_slot + 1000 / rate_per_thread
  if slot >= now then
    return math.floor(slot - now)
  end
  local late = now - slot
  lag.n = lag.n + 1
  lag.sum = lag.sum + late
  if late > 1 then
    lag.late = lag.late + 1
  end
  if late > 50 then
    lag.over50 = lag.over50 + 1
  end
  if late > 250 then
    lag.over250 = lag.over250 + 1
  end
  if late > lag.max then
    lag.max = late
  end
  return 0
end

function init(args)
  for _, arg in ipairs(args) do
    local k, v = arg:match("^([%w_]+)=(.*)$")
    if k then
      opts[k] = v
    end
  end
  mode = assert(opts.mode, "mode=<...> is required")
  local thread_count = tonumber(opts.threads or "1")
  report_path = opts.report or "/api/v1/device/state"
  poll_template = opts.poll or "/api/v1/device/{uuid}/state"
  if mode == "get" then
    local paths_file = assert(opts.paths, "paths=<file> is required")
    for line in io.lines(paths_file) do
      if line ~= "" then
        paths[#paths + 1] = line
      end
    end
    if opts.header and opts.header ~= "" then
      extra_header_name, extra_header_value = opts.header:match("^([^:]+):%s*(.*)$")
    end
    -- Threads start at different places, so they do not walk the list in lockstep.
    cursor = math.floor(#paths * thread_index / thread_count)
  else
    load_devices(assert(opts.data, "data=<file> is required"), opts.states, thread_index, thread_count)
    assert(#devices > 0, "no devices for this thread")
  end
  math.randomseed(1000 + thread_index)
  started_s = os.time() -- uptime grows with time
  rate_per_thread = tonumber(opts.rate or "0") / thread_count
  if mode == "mix" then
    assert(rate_per_thread > 0, "mode=mix needs rate=<requests/s>")
    delay = paced_delay -- wrk looks for delay() after init(): only the paced mode has one
  end
end

-- requests ------------------------------------------------------------------------------------------------------

local function next_device()
  cursor = cursor % #devices + 1
  return devices[cursor]
end

local function report(dev, change)
  if change then
    dev.variant = 1 - dev.variant
  end
  local tail = string.format("%d}}", dev.uptime + (os.time() - started_s))
  return wrk.format("PATCH", report_path, dev.report_headers, dev.bodies[dev.variant + 1] .. gzip_stored(tail))
end

local function poll(dev, conditional)
  if conditional then
    return wrk.format("GET", dev.poll_path, dev.inm_headers)
  end
  return wrk.format("GET", dev.poll_path, dev.key_headers)
end

local function get()
  cursor = cursor % #paths + 1
  local headers = {}
  if extra_header_name then
    headers[extra_header_name] = extra_header_value
  end
  return wrk.format("GET", paths[cursor], headers)
end

-- wrk 4.1 calls request() once on the first thread right after init() to check the request's shape, and never
-- sends it: that call must not advance a device (a report variant switched but never sent would make that
-- device's next "changed" report an unchanged one).
local checked = false

function request()
  if not checked then
    checked = true
    if thread_index == 0 then
      if mode == "get" then
        return wrk.format("GET", paths[1])
      end
      return wrk.format("GET", devices[1].poll_path, devices[1].key_headers)
    end
  end
  if mode == "poll304" then
    sent.poll304 = sent.poll304 + 1
    return poll(next_device(), true)
  elseif mode == "poll200" then
    sent.poll200 = sent.poll200 + 1
    return poll(next_device(), false)
  elseif mode == "unchanged" then
    sent.unchanged = sent.unchanged + 1
    return report(next_device(), false)
  elseif mode == "changed" then
    sent.changed = sent.changed + 1
    return report(next_device(), true)
  elseif mode == "get" then
    sent.get = sent.get + 1
    return get()
  elseif mode == "mix" then
    local dev = next_device()
    if math.random() < 1 / 7 then
      if math.random() < 0.05 then
        sent.poll200 = sent.poll200 + 1
        return poll(dev, false)
      end
      sent.poll304 = sent.poll304 + 1
      return poll(dev, true)
    end
    if math.random() < 0.05 then
      sent.changed = sent.changed + 1
      return report(dev, true)
    end
    sent.unchanged = sent.unchanged + 1
    return report(dev, false)
  end
  error("unknown mode " .. tostring(mode))
end

-- responses -----------------------------------------------------------------------------------------------------

function response(code, headers, body)
  status[code] = (status[code] or 0) + 1
  if code == 200 and (mode == "unchanged" or mode == "changed" or mode == "mix") and body then
    if body:find('"outcome":"unchanged"', 1, true) then
      outcome.unchanged = outcome.unchanged + 1
    elseif body:find('"outcome":"applied"', 1, true) then
      outcome.applied = outcome.applied + 1
    elseif body:find('"outcome":"stale"', 1, true) then
      outcome.stale = outcome.stale + 1
    end
  elseif code >= 400 and #errors_sample < 3 then
    errors_sample[#errors_sample + 1] = tostring(code) .. " " .. (body or ""):sub(1, 300)
  end
end

-- done (main state) ----------------------------------------------------------------------------------------------

local function add_into(total, part)
  for k, v in pairs(part or {}) do
    if k == "max" then
      total[k] = math.max(total[k] or 0, v)
    else
      total[k] = (total[k] or 0) + v
    end
  end
end

function done(summary, latency, requests)
  local totals = { status = {}, outcome = {}, sent = {}, lag = {}, errors_sample = {} }
  for _, t in ipairs(threads) do
    local st = t:get("status") or {}
    for code, n in pairs(st) do
      totals.status[tostring(code)] = (totals.status[tostring(code)] or 0) + n
    end
    add_into(totals.outcome, t:get("outcome"))
    add_into(totals.sent, t:get("sent"))
    add_into(totals.lag, t:get("lag"))
    for _, e in ipairs(t:get("errors_sample") or {}) do
      totals.errors_sample[#totals.errors_sample + 1] = e
    end
  end
  local result = common.wrk_result(summary, latency)
  result.status = totals.status
  result.outcome = totals.outcome
  result.sent = totals.sent
  result.lag_ms = totals.lag
  result.errors_sample = totals.errors_sample
  common.result_write(result)
end
