-- The request builders of bench/wrk/bench.lua, one per scenario (see bench/run.py).

local M = {}
local API = "/api/v1"
local LIMIT = "limit=20"
local PRIORITIES = { "low", "medium", "high", "urgent" }

local function read_records(path)
   local records = {}
   local file = assert(io.open(path, "r"), "missing data file " .. path)
   for line in file:lines() do
      if line ~= "" then
         local fields = {}
         for field in line:gmatch("%S+") do
            table.insert(fields, field)
         end
         table.insert(records, fields)
      end
   end
   file:close()
   return records
end

-- Records grouped by their first field (the organization's line number in orgs.txt).
local function by_org(records)
   local grouped = {}
   for _, record in ipairs(records) do
      local org = tonumber(record[1])
      grouped[org] = grouped[org] or {}
      table.insert(grouped[org], record)
   end
   return grouped
end

local function pick(list)
   return list[math.random(#list)]
end

local function set(...)
   local result = {}
   for _, value in ipairs({ ... }) do
      result[value] = true
   end
   return result
end

function M.load(dir, name, thread_index, thread_count)
   local function file(base)
      return read_records(dir .. "/" .. base .. ".txt")
   end
   local orgs = file("orgs")
   local tokens = by_org(file("tokens"))
   local cache = {}
   local function grouped(base)
      cache[base] = cache[base] or by_org(file(base))
      return cache[base]
   end
   local sequence = 0

   -- A random organization (its index and id) and the headers of one of its members.
   local function member(org)
      org = org or math.random(#orgs)
      local headers = {
         ["Authorization"] = "Bearer " .. pick(tokens[org])[2],
         ["Content-Type"] = "application/json",
      }
      return org, orgs[org][1], headers
   end

   local function org_tasks(org_id, query)
      return API .. "/orgs/" .. org_id .. "/tasks?" .. query
   end

   local builders = {}

   function builders.login()
      local emails = cache.emails or file("emails")
      cache.emails = emails
      local password = cache.password or file("password")[1][1]
      cache.password = password
      local body = string.format('{"email": "%s", "password": "%s"}', pick(emails)[1], password)
      return wrk.format("POST", API .. "/auth/login", { ["Content-Type"] = "application/json" }, body)
   end

   function builders.me()
      local _, _, headers = member()
      return wrk.format("GET", API .. "/users/me", headers)
   end

   function builders.get_task()
      local org, org_id, headers = member()
      local task = pick(grouped("tasks")[org])
      local path = API .. "/orgs/" .. org_id .. "/projects/" .. task[2] .. "/tasks/" .. task[3]
      return wrk.format("GET", path, headers)
   end

   function builders.list_page1()
      local _, org_id, headers = member()
      return wrk.format("GET", org_tasks(org_id, "page=1&" .. LIMIT), headers)
   end

   function builders.list_page500()
      local _, org_id, headers = member()
      return wrk.format("GET", org_tasks(org_id, "page=500&" .. LIMIT), headers)
   end

   function builders.list_cursor_deep()
      local org, org_id, headers = member()
      local cursor = pick(grouped("cursors")[org])[2]
      return wrk.format("GET", org_tasks(org_id, LIMIT .. "&cursor=" .. cursor), headers)
   end

   function builders.list_filter()
      local org, org_id, headers = member()
      local assignee = pick(grouped("members")[org])[2]
      local query = "status=" .. pick({ "todo", "in_progress", "done" }) .. "&assigneeId=" .. assignee
      return wrk.format("GET", org_tasks(org_id, query .. "&" .. LIMIT), headers)
   end

   function builders.search()
      local _, org_id, headers = member()
      local words = cache.words or file("words")
      cache.words = words
      return wrk.format("GET", org_tasks(org_id, "search=" .. pick(words)[1] .. "&" .. LIMIT), headers)
   end

   function builders.create_task()
      local org, org_id, headers = member()
      local project = pick(grouped("projects")[org])[2]
      sequence = sequence + 1
      local body = string.format(
         '{"title": "bench task %d-%d", "priority": "%s"}', thread_index, sequence, pick(PRIORITIES)
      )
      local path = API .. "/orgs/" .. org_id .. "/projects/" .. project .. "/tasks"
      return wrk.format("POST", path, headers, body)
   end

   -- Each thread walks its own share of the pool (lines thread_index, + thread_count, ...):
   -- every request patches a task nobody patched before in this run, with its current ETag.
   local patch_next = thread_index
   function builders.patch_task()
      local pool = cache.patch or file("patch")
      cache.patch = pool
      local target = pool[((patch_next - 1) % #pool) + 1]
      patch_next = patch_next + thread_count
      local org, org_id, headers = member(tonumber(target[1]))
      headers["If-Match"] = '"' .. target[4] .. '"'
      sequence = sequence + 1
      local body = string.format('{"title": "patched %d-%d"}', thread_index, sequence)
      local path = API .. "/orgs/" .. org_id .. "/projects/" .. target[2] .. "/tasks/" .. target[3]
      return wrk.format("PATCH", path, headers, body)
   end

   function builders.bulk_update()
      local org, org_id, headers = member()
      local ids = pick(grouped("bulk")[org])[2]
      local quoted = '"' .. ids:gsub(",", '","') .. '"'
      local body = string.format(
         '{"ids": [%s], "changes": {"priority": "%s"}}', quoted, pick(PRIORITIES)
      )
      return wrk.format("PATCH", API .. "/orgs/" .. org_id .. "/tasks/bulk", headers, body)
   end

   -- 70 % reads (get, list page 1, me), 25 % writes (create, patch), 5 % search.
   function builders.mixed()
      local roll = math.random(100)
      if roll <= 24 then
         return builders.get_task()
      elseif roll <= 47 then
         return builders.list_page1()
      elseif roll <= 70 then
         return builders.me()
      elseif roll <= 83 then
         return builders.create_task()
      elseif roll <= 95 then
         return builders.patch_task()
      end
      return builders.search()
   end

   -- Reference endpoints of bench/limit.py.
   function builders.bare_constant()
      return wrk.format("GET", "/")
   end

   function builders.bare_asyncpg()
      local org = math.random(#orgs)
      return wrk.format("GET", "/task?id=" .. pick(grouped("tasks")[org])[3])
   end

   local expect = {
      login = set(200), create_task = set(201), mixed = set(200, 201),
   }
   local build = assert(builders[name], "unknown scenario " .. name)
   return { request = build, expect = expect[name] or set(200) }
end

return M
