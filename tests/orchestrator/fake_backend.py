#!/usr/bin/env python3
"""A stand-in for sidetrace-backend's ingest API, for orchestrator tests run
before the real backend is built. Same contract: POST /api/v1/events:batch
over HTTPS with `Authorization: Bearer KEY`, body {"events":[...],
"agents":[...]}, reply 200 {"accepted":N,"new":n,"duplicates":d} once the
uuids are on disk (appended + fsync'ed to STATE/uuids). GET /stats returns
{"unique":U,"received":R,"batches":B,"agents":{id: agent}} for assertions.

usage: fake_backend.py --port P --cert C --key K --key-value KEY --state DIR
Prints "listening PORT" on stdout once ready."""
import argparse, http.server, json, os, ssl, sys, threading

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, default=0)
ap.add_argument("--cert", required=True)
ap.add_argument("--key", required=True)
ap.add_argument("--key-value", required=True)
ap.add_argument("--state", required=True)
args = ap.parse_args()

os.makedirs(args.state, exist_ok=True)
path = os.path.join(args.state, "uuids")
lock = threading.Lock()
seen = set()
if os.path.exists(path):
    with open(path) as f:
        seen = {line.strip() for line in f if line.strip()}
log = open(path, "a")
received = 0
batches = 0
agents = {}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, code, obj):
        body = (json.dumps(obj) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path != "/stats":
            return self.reply(404, {"error": "not found"})
        with lock:
            self.reply(200, {"unique": len(seen), "received": received, "batches": batches, "agents": agents})

    def do_POST(self):
        global received, batches
        n = int(self.headers.get("Content-Length", "0"))
        data = self.rfile.read(n)
        if self.path != "/api/v1/events:batch":
            return self.reply(404, {"error": "not found"})
        if self.headers.get("Authorization") != "Bearer " + args.key_value:
            return self.reply(401, {"error": "bad access key"})
        try:
            body = json.loads(data)
            events = body["events"]
            for e in events:
                if not isinstance(e.get("uuid"), str) or not e["uuid"]:
                    raise ValueError("event without uuid")
        except Exception as e:  # noqa: BLE001
            return self.reply(400, {"error": str(e)})
        with lock:
            new = [e["uuid"] for e in events if e["uuid"] not in seen]
            fresh = set(new)
            if fresh:
                log.write("".join(u + "\n" for u in fresh))
                log.flush()
                os.fsync(log.fileno())
                seen.update(fresh)
            received += len(events)
            batches += 1
            for a in body.get("agents", []):
                agents[a.get("id", "?")] = a
        self.reply(200, {"accepted": len(events), "new": len(fresh), "duplicates": len(events) - len(fresh)})


srv = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(args.cert, args.key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("listening", srv.server_address[1], flush=True)
srv.serve_forever()
