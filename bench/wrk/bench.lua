-- wrk driver of `make bench` (bench/run.py starts it; one scenario per run).
--
--   wrk -t2 -c16 -d5s -s bench/wrk/bench.lua http://127.0.0.1:8100 -- <data dir> <scenario> <threads>
--
-- The data files are plain text written by bench/run.py (one record per line, fields
-- separated by spaces); every request picks a random organization and a token of one of
-- its members. A response whose status is not one the scenario expects counts as an error.
-- `done` prints one line: BENCH_RESULT {json}.

local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
local scenarios = dofile(here .. "scenarios.lua")

local threads = {}
local counter = 0

function setup(thread)
   counter = counter + 1
   thread:set("thread_index", counter)
   table.insert(threads, thread)
end

local scenario
unexpected = 0

function init(args)
   local data_dir, name, thread_count = args[1], args[2], tonumber(args[3])
   math.randomseed(os.time() * 1000 + thread_index * 7919)
   scenario = scenarios.load(data_dir, name, thread_index, thread_count)
end

function request()
   return scenario.request()
end

function response(status, headers, body)
   if not scenario.expect[status] then
      unexpected = unexpected + 1
      if unexpected <= 3 then
         io.stderr:write(string.format("unexpected status %d: %s\n", status, (body or ""):sub(1, 300)))
      end
   end
end

local function ms(micros)
   return micros / 1000.0
end

function done(summary, latency, requests)
   local wrong = 0
   for _, thread in ipairs(threads) do
      wrong = wrong + (tonumber(thread:get("unexpected")) or 0)
   end
   local seconds = summary.duration / 1e6
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests": %d, "duration_s": %.3f, "rps": %.1f, "p50_ms": %.2f, '
         .. '"p90_ms": %.2f, "p99_ms": %.2f, "max_ms": %.2f, "errors": {"connect": %d, '
         .. '"read": %d, "write": %d, "timeout": %d, "non_2xx_3xx": %d, "unexpected_status": %d}}\n',
      summary.requests, seconds, summary.requests / seconds,
      ms(latency:percentile(50)), ms(latency:percentile(90)), ms(latency:percentile(99)),
      ms(latency.max), e.connect, e.read, e.write, e.timeout, e.status, wrong
   ))
end
