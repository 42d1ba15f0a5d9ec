-- wrk -s statuses.lua URL: POST, and count the answers by status, and the 503s that carry
-- Retry-After. done() prints one line: "STATUSES {json}" (read by benchmarks/wrk.py).
wrk.method = "POST"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
  retry_after = 0
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 503 then
    for name, _ in pairs(headers) do
      if string.lower(name) == "retry-after" then
        retry_after = retry_after + 1
        break
      end
    end
  end
end

function done(summary, latency, requests)
  local totals, with_retry = {}, 0
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      totals[status] = (totals[status] or 0) + count
    end
    with_retry = with_retry + thread:get("retry_after")
  end
  local parts = {}
  for status, count in pairs(totals) do
    table.insert(parts, string.format('"%d": %d', status, count))
  end
  io.write(string.format('STATUSES {"statuses": {%s}, "retry_after_503": %d}\n', table.concat(parts, ", "), with_retry))
end
