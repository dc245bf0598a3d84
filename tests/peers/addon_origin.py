"""An origin for tests/addons.rs: every request is printed as
`recorded: {"method", "target", "headers", "body"}`; `/json` answers a JSON document,
`/drip` 20 bytes of text/plain in two halves 2 s apart (`first-half` now,
`-last-half` later), anything else `origin saw <target>`."""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def handle_one(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        print("recorded: " + json.dumps({
            "method": self.command,
            "target": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": body.decode("latin-1"),
        }), flush=True)
        if self.path.startswith("/drip"):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "20")
            self.end_headers()
            self.wfile.write(b"first-half")
            self.wfile.flush()
            time.sleep(2)
            self.wfile.write(b"-last-half")
            return
        if self.path.startswith("/json"):
            payload = json.dumps({"name": "origin", "count": 1, "items": [1, 2]}).encode()
            kind = "application/json"
        else:
            payload = f"origin saw {self.path}".encode()
            kind = "text/plain"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = handle_one

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"listening on {server.server_address[1]}", flush=True)
sys.stdout.flush()
server.serve_forever()
