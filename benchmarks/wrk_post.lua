-- wrk script: POST the echo body, keep-alive (wrk's default).
wrk.method = "POST"
wrk.body = '{"input": 1}'
wrk.headers["Content-Type"] = "application/json"
