-- wrk -s post.lua URL: send every request as a POST (the arguments are in the URL's query string).
wrk.method = "POST"
