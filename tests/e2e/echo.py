#!/usr/bin/env python3
"""Echo backend for meshgate's end-to-end tests (stdlib only).

Any method, any path -> 200 application/json:
    {"method": ..., "path": <path incl. query, as received>, "headers": {lower-case name: value},
     "body": <request body as text, if any>}
Repeated headers are joined with ", " (how an HTTP/1.1 proxy may fold them).

    python tests/e2e/echo.py --port 0 [--host 127.0.0.1] [--state-file path]

--port 0 picks a free port; the chosen port is printed to stderr and written to --state-file as
{"pid": ..., "port": ...}. Logs one line per request to stderr (never headers: they carry tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1 << 20


class EchoHandler(BaseHTTPRequestHandler):
    server_version = "meshgate-echo"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        pass

    def _echo(self) -> None:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        body = b""
        n = int(self.headers.get("Content-Length") or 0)
        if 0 < n <= MAX_BODY:
            body = self.rfile.read(n)
        elif self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._read_chunked()
        out = {"method": self.command, "path": self.path, "headers": headers}
        if body:
            out["body"] = body.decode("utf-8", "replace")
        payload = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        sys.stderr.write(f"echo {time.strftime('%H:%M:%S')} \"{self.command} {self.path.split('?')[0]}\" 200 "
                         f"{len(payload)}\n")
        sys.stderr.flush()

    def _read_chunked(self) -> bytes:
        out = b""
        while len(out) <= MAX_BODY:
            line = self.rfile.readline(1024)
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline(1024)
                break
            out += self.rfile.read(size)
            self.rfile.readline(1024)
        return out

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _echo  # noqa: N815


def make_server(host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), EchoHandler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="echo backend")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--state-file", default=None)
    args = ap.parse_args(argv)
    server = make_server(args.host, args.port)
    port = server.server_address[1]
    if args.state_file:
        tmp = args.state_file + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"pid": os.getpid(), "port": port, "base_url": f"http://{args.host}:{port}"}, f)
        os.replace(tmp, args.state_file)
    sys.stderr.write(f"echo listening on http://{args.host}:{port}\n")
    sys.stderr.flush()
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
