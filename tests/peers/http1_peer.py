#!/usr/bin/env python3
"""A real HTTP/1.1 keep-alive server and client (Python's standard library) for tapwire's
protocol tests: one connection carrying a plain GET, a chunked response with trailers, a
HEAD, a conditional GET answered 304, and a POST echoed back.

  http1_peer.py serve --port P
  http1_peer.py call --port P     prints one JSON line: [[method, path, status, body], …]
"""
import argparse
import http.client
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HELLO = b"hello over keep-alive\n"
ETAG = '"v1"'


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Trailer", "X-Checksum")
            self.end_headers()
            for part in (b"first,", b"second,", b"third"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\nX-Checksum: 42\r\n\r\n")
        elif self.path == "/etag" and self.headers.get("If-None-Match") == ETAG:
            self.send_response(304)
            self.send_header("ETag", ETAG)
            self.end_headers()
        else:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(HELLO)))
            self.send_header("ETag", ETAG)
            self.end_headers()
            self.wfile.write(HELLO)

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(HELLO)))
        self.end_headers()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def call(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    done = []
    for method, path, headers, body in [
        ("GET", "/hello", {}, None),
        ("GET", "/chunked", {}, None),
        ("HEAD", "/hello", {}, None),
        ("GET", "/etag", {"If-None-Match": ETAG}, None),
        ("POST", "/echo", {"Content-Type": "application/json"}, b'{"n":1}'),
    ]:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        done.append([method, path, resp.status, data.decode()])
    conn.close()
    print(json.dumps(done), flush=True)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["serve", "call"])
    p.add_argument("--port", type=int, required=True)
    a = p.parse_args()
    if a.mode == "serve":
        ThreadingHTTPServer(("127.0.0.1", a.port), Handler).serve_forever()
    else:
        call(a.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
