-- wrk script for the echo workload of tests/bench/run.sh: every request is a POST with a
-- 64 KiB body (the echo guest streams it back, so each response is 64 KiB too).
wrk.method = "POST"
wrk.body = string.rep("x", 64 * 1024)
wrk.headers["Content-Type"] = "application/octet-stream"
