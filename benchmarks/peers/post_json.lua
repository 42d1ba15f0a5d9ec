-- wrk -s post_json.lua URL -- BODY_FILE: POST the file's bytes, as application/json, with every request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function init(args)
  local file = assert(io.open(args[1], "rb"))
  wrk.body = file:read("*a")
  file:close()
end
