#!/usr/bin/env python3
"""security-playground: a deliberately vulnerable HTTP app (the victim).

NEVER EXPOSE THIS PROGRAM TO ANY NETWORK. It reads and writes any file and
runs any shell command for whoever asks, as the user it runs as (root in the
demo). It exists only so that sidetrace's demos and tests have something to
attack inside a network namespace or a container network of their own.

Routes (parameters come from the form body or the query string):
  GET  /health             -> "OK"
  GET  /<path>             -> contents of the file /<path>
  POST /<path> content=X   -> writes X to the file /<path>
  POST /exec   command=X   -> runs `sh -c X`, returns its stdout (always 200)

Options (each also as an environment variable):
  --port N     PLAYGROUND_PORT (default 8080; 0 picks a free port)
  --bind ADDR  PLAYGROUND_BIND (default 0.0.0.0)
The first line on stdout is "listening on ADDR:PORT" once the socket is bound.
"""

import argparse
import os
import signal
import subprocess
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Bounds so that a runaway request cannot take the demo machine down.
MAX_BODY = 16 * 1024 * 1024
EXEC_TIMEOUT_S = 60


class Handler(BaseHTTPRequestHandler):
    server_version = "security-playground/1.0"
    protocol_version = "HTTP/1.1"

    def _params(self, body=b""):
        query = urllib.parse.urlsplit(self.path).query
        params = urllib.parse.parse_qs(query, keep_blank_values=True)
        if body:
            for key, values in urllib.parse.parse_qs(
                body.decode("utf-8", "surrogateescape"), keep_blank_values=True
            ).items():
                params.setdefault(key, []).extend(values)
        return {k: v[0] for k, v in params.items()}

    def _file_path(self):
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        return "/" + path.lstrip("/")

    def _reply(self, status, body):
        if isinstance(body, str):
            body = body.encode("utf-8", "surrogateescape")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_BODY:
            raise ValueError(f"body of {length} bytes exceeds {MAX_BODY}")
        return self.rfile.read(length) if length else b""

    def do_GET(self):
        path = self._file_path()
        if path == "/health":
            self._reply(200, "OK\n")
            return
        try:
            with open(path, "rb") as f:
                self._reply(200, f.read())
        except OSError as e:
            self._reply(404, f"{path}: {e.strerror}\n")

    def do_POST(self):
        try:
            params = self._params(self._read_body())
        except ValueError as e:
            self._reply(413, f"{e}\n")
            return
        path = self._file_path()
        if path == "/exec":
            # As the walkthrough's app does: stdout only, status 200 whatever
            # the command's exit code.
            try:
                out = subprocess.run(
                    ["sh", "-c", params.get("command", "")],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    timeout=EXEC_TIMEOUT_S,
                ).stdout
            except subprocess.TimeoutExpired as e:
                out = e.stdout or b""
            self._reply(200, out)
            return
        try:
            with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
                f.write(params.get("content", ""))
            self._reply(200, "OK\n")
        except OSError as e:
            self._reply(500, f"{path}: {e.strerror}\n")

    def log_message(self, fmt, *args):
        sys.stderr.write("playground: %s %s\n" % (self.address_string(), fmt % args))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PLAYGROUND_PORT", "8080")))
    parser.add_argument("--bind", default=os.environ.get("PLAYGROUND_BIND", "0.0.0.0"))
    args = parser.parse_args()

    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    server.daemon_threads = True
    # SIGTERM (docker stop, the agent forwarding it) ends the server cleanly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    host, port = server.server_address[:2]
    print(f"listening on {host}:{port}", flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
