-- The real agent's fleet (bench/fleet.py): wrk sending every request of a schedule at its time.
--
--   wrk -t 1 -c C -d D -s bench/lua/fleet.lua http://127.0.0.1:PORT -- fleet=<fleet.bin> schedule=<file>
--       [states=<file>] [poll=<path with {uuid}>] [report=<path>] [polls_only=1]
--
-- The schedule (bench/fleet.py schedule_write) lists "<t ms> <device> <kind>" in time order; each request is sent
-- at its time after the start (a connection waits in delay() for the next event's time, and takes it). A request
-- that starts more than 1 ms after its time counts as late: the server or the connections could not keep up.
-- Kinds: P poll (If-None-Match: its ETag, 304 expected), C poll after a target change (its old ETag, 200
-- expected; the device then knows the new version), R unchanged report, M metrics report, X the report after a
-- change (the other sensors variant, the new version). polls_only=1: polls only (the reports go over MQTT).
--
-- A report body is three gzip members: '{"<uuid>":{"version":<n>,"apps":{},"is_online":true' in a stored block
-- built here, the device's config member (generation 2025-11-06 always, 2025-11-22 only on a change), and the
-- template's tail member (plain or metrics). bench/fleet.py http_body builds the same bytes for the tests.
-- One wrk thread: every device's state lives in one Lua state.

local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
local now_ms, gzip_stored = common.now_ms, common.gzip_stored

local threads = {}

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

local opts = {}
local devices = {}
local tails = {}
local ev_t, ev_d, ev_k = {}, {}, {}
local next_event = 1
local reserved = {}
local reserved_first, reserved_last = 1, 0
local started = nil
local polls_only = false
local report_path, poll_template

status = {}
outcome = { unchanged = 0, applied = 0, stale = 0, polled = 0 }
sent = { P = 0, C = 0, R = 0, M = 0, X = 0, extra = 0 }
lag = { n = 0, late = 0, over50 = 0, over250 = 0, max = 0, sum = 0 }
errors_sample = {}

local function load_fleet(file)
  local f = assert(io.open(file, "rb"))
  assert(f:read("*l") == "SSFLEET1", file .. " is not a fleet file")
  local templates, count = f:read("*l"):match("^(%d+) (%d+)$")
  for t = 1, tonumber(templates) do
    local a, b = f:read("*l"):match("^(%d+) (%d+)$")
    tails[t] = { f:read(tonumber(a)), f:read(tonumber(b)) }
  end
  for i = 1, tonumber(count) do
    local uuid, key, gen, template, version, a, b =
      f:read("*l"):match("^(%S+) (%S+) (%d+) (%d+) (%d+) (%d+) (%d+)$")
    devices[i] = {
      uuid = uuid,
      generation = tonumber(gen),
      template = tonumber(template) + 1,
      version = tonumber(version),
      variant = 0,
      configs = { f:read(tonumber(a)), f:read(tonumber(b)) },
      poll_path = poll_template:gsub("{uuid}", uuid),
      key = key,
      report_headers = {
        ["X-Device-API-Key"] = key,
        ["Content-Type"] = "application/json",
        ["Content-Encoding"] = "gzip",
      },
    }
  end
  f:close()
end

local KIND = { P = 1, C = 2, R = 3, M = 4, X = 5 }
local KIND_NAME = { "P", "C", "R", "M", "X" }

local function load_states(file)
  local f = assert(io.open(file, "r"))
  local count = tonumber(f:read("*l"))
  assert(count == #devices, file .. " does not match the fleet file")
  for i = 1, count do
    local version, variant = f:read("*l"):match("^(%d+) (%d)$")
    devices[i].version, devices[i].variant = tonumber(version), tonumber(variant)
  end
  f:close()
end

local function load_schedule(file)
  local f = assert(io.open(file, "r"))
  f:read("*l")
  local n = 0
  for line in f:lines() do
    local t, d, k = line:match("^(%d+) (%d+) (%u)$")
    if not (polls_only and (k == "R" or k == "M" or k == "X")) then
      n = n + 1
      ev_t[n], ev_d[n], ev_k[n] = tonumber(t), tonumber(d) + 1, KIND[k]
    end
  end
  f:close()
end

function init(args)
  for _, arg in ipairs(args) do
    local k, v = arg:match("^([%w_]+)=(.*)$")
    if k then
      opts[k] = v
    end
  end
  assert(thread_index == 0, "fleet.lua runs on one wrk thread (-t 1)")
  report_path = opts.report or "/api/v1/device/state"
  poll_template = opts.poll or "/api/v1/device/{uuid}/state"
  polls_only = opts.polls_only == "1"
  load_fleet(assert(opts.fleet, "fleet=<file> is required"))
  if opts.states then
    load_states(opts.states)
  end
  load_schedule(assert(opts.schedule, "schedule=<file> is required"))
  planned = #ev_t
  delay = fleet_delay
end

local function take()
  if next_event > #ev_t then
    return nil
  end
  local i = next_event
  next_event = next_event + 1
  return i
end

-- A connection that finished asks when to send next: the next event's time. The event is reserved for it in
-- order (timers fire in the order of their times, so request() takes reservations first in, first out).
function fleet_delay()
  if started == nil then
    started = now_ms()
  end
  local i = take()
  if i == nil then
    return 3600000
  end
  reserved_last = reserved_last + 1
  reserved[reserved_last] = i
  local wait = started + ev_t[i] - now_ms()
  if wait >= 0 then
    return math.floor(wait)
  end
  local late = -wait
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

local function poll(dev, changed)
  local headers = { ["X-Device-API-Key"] = dev.key, ["If-None-Match"] = '"' .. dev.version .. '"' }
  if changed then
    dev.version = dev.version + 1 -- what the 200 answer tells it
  end
  return wrk.format("GET", dev.poll_path, headers)
end

local function report(dev, kind)
  if kind == 5 then
    dev.variant = 1 - dev.variant
  end
  local head = string.format('{"%s":{"version":%d,"apps":{},"is_online":true', dev.uuid, dev.version)
  local config = ""
  if kind == 5 or dev.generation == 0 then
    config = dev.configs[dev.variant + 1]
  end
  local tail = tails[dev.template][kind == 4 and 2 or 1]
  return wrk.format("PATCH", report_path, dev.report_headers, gzip_stored(head) .. config .. tail)
end

local checked = false

function request()
  if not checked then
    checked = true -- wrk 4.1 builds one request after init() to check it, and never sends it
    return wrk.format("GET", devices[1].poll_path)
  end
  if started == nil then
    started = now_ms()
  end
  local i
  if reserved_first <= reserved_last then
    i = reserved[reserved_first]
    reserved[reserved_first] = nil
    reserved_first = reserved_first + 1
  else
    i = take() -- a connection's first request: sent at once
  end
  if i == nil then
    sent.extra = sent.extra + 1
    return wrk.format("GET", "/healthz")
  end
  local kind = ev_k[i]
  local dev = devices[ev_d[i]]
  sent[KIND_NAME[kind]] = sent[KIND_NAME[kind]] + 1
  if kind <= 2 then
    return poll(dev, kind == 2)
  end
  return report(dev, kind)
end

function response(code, headers, body)
  status[code] = (status[code] or 0) + 1
  if code == 200 and body then
    if body:find('"outcome":"unchanged"', 1, true) then
      outcome.unchanged = outcome.unchanged + 1
    elseif body:find('"outcome":"applied"', 1, true) then
      outcome.applied = outcome.applied + 1
    elseif body:find('"outcome":"stale"', 1, true) then
      outcome.stale = outcome.stale + 1
    else
      outcome.polled = outcome.polled + 1
    end
  elseif code >= 400 and #errors_sample < 3 then
    errors_sample[#errors_sample + 1] = tostring(code) .. " " .. (body or ""):sub(1, 300)
  end
end

function done(summary, latency, requests)
  local t = threads[1]
  local st = {}
  for code, n in pairs(t:get("status") or {}) do
    st[tostring(code)] = n
  end
  local result = common.wrk_result(summary, latency)
  result.status = st
  result.outcome = t:get("outcome")
  result.sent = t:get("sent")
  result.lag_ms = t:get("lag")
  result.planned = t:get("planned")
  result.errors_sample = t:get("errors_sample")
  common.result_write(result)
end
