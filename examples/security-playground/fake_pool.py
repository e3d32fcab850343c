#!/usr/bin/env python3
"""fake_pool: a stand-in "mining pool" for sidetrace's demos.

Listens on one TCP port (3333, a common stratum port, by default) on an
address that only exists inside the demo's network namespace or container
network (203.0.113.0/24, a documentation range). It answers any request with
one line of stratum-like JSON wrapped in an HTTP/1.0 response, so `curl` as
the attacker uses it prints something and exits at once. It mines nothing and
forwards nothing.

  fake_pool.py [--bind 203.0.113.10] [--port 3333]   (FAKE_POOL_BIND / FAKE_POOL_PORT)
"""

import argparse
import os
import signal
import socketserver
import sys

REPLY = (
    b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
    b'{"id":1,"jsonrpc":"2.0","result":{"status":"OK","job":{"blob":"00","target":"ffff"}},"error":null}\n'
)


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.settimeout(5)
        try:
            self.request.recv(4096)
            self.request.sendall(REPLY)
        except OSError:
            pass
        sys.stderr.write(f"fake_pool: connection from {self.client_address[0]}\n")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bind", default=os.environ.get("FAKE_POOL_BIND", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("FAKE_POOL_PORT", "3333")))
    args = parser.parse_args()
    server = Server((args.bind, args.port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"fake pool listening on {args.bind}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
