#!/usr/bin/env python3
"""A minimal Gavel agent of kind `json`, in the Python standard library alone.

Usage: scripts/example_agent.py [PORT]   (default 9000; listens on 127.0.0.1)

Gavel POSTs a job's `input` as the request body; the agent answers 2xx JSON. This one counts
the words of `input.text`. The README registers it in the `scrape` category, with Gavel started
with GAVEL__EGRESS__ALLOW_CIDRS=127.0.0.0/8 so its SSRF guard lets it reach loopback.
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

MAX_BODY = 1 << 20


class Agent(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_BODY:
            return self.answer(413, {"error": "body too large"})
        try:
            job = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError:
            return self.answer(400, {"error": "body is not JSON"})
        text = job.get("text", "") if isinstance(job, dict) else ""
        self.answer(200, {"words": len(str(text).split()), "characters": len(str(text))})

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    print(f"example agent listening on http://127.0.0.1:{port}/run", flush=True)
    HTTPServer(("127.0.0.1", port), Agent).serve_forever()
