#!/usr/bin/env python3
"""wait_detection.py: waits for one detection to appear in the backend's API.

  wait_detection.py --api http://127.0.0.1:PORT --rule RULE --attack-ms MS
                    [--timeout 5] [--seen FILE] [--label TEXT]

Polls GET /api/events?rule=RULE every 50 ms until an event of that rule shows
up whose uuid is not listed in FILE (the detections already claimed by
earlier attacks) and whose time is not before the attack. Prints it (rule,
priority, output, latency) and appends its uuid to FILE. Exit 0 when found,
1 when the deadline (counted from the attack) passed, 2 on bad input.

Latencies: "event" is the syscall's time as the agent stamped it minus the
moment the attack was sent; "stored" is when this poll first saw the event in
the backend's API (so it includes the orchestrator's batching and the backend
commit, and at most one 50 ms poll interval).
"""

import argparse
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

POLL_S = 0.05

_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def parse_time_ns(value):
    """RFC 3339 (Falco's "time") or an int ns epoch, to ns; None if unknown."""
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        return None
    m = _RFC3339.match(value)
    if not m:
        return None
    import calendar

    y, mo, d, h, mi, s = (int(x) for x in m.groups()[:6])
    frac = (m.group(7) or "0")[:9].ljust(9, "0")
    secs = calendar.timegm((y, mo, d, h, mi, s))
    if m.group(8) != "Z":
        sign = 1 if m.group(8)[0] == "+" else -1
        secs -= sign * (int(m.group(8)[1:3]) * 3600 + int(m.group(8)[4:6]) * 60)
    return secs * 1_000_000_000 + int(frac)


def events_of(body):
    """The API's answer as a list of event dicts, whatever its envelope."""
    data = json.loads(body)
    if isinstance(data, dict):
        for key in ("events", "items", "data", "results"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
        else:
            data = [data] if "rule" in data else []
    out = []
    for item in data:
        if isinstance(item, str):
            item = json.loads(item)
        if isinstance(item, dict):
            out.append(item)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--api", required=True)
    ap.add_argument("--rule", required=True)
    ap.add_argument("--attack-ms", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--seen", default=None)
    ap.add_argument("--label", default="")
    args = ap.parse_args()

    seen = set()
    if args.seen and os.path.exists(args.seen):
        with open(args.seen) as f:
            seen = {line.strip() for line in f if line.strip()}

    url = args.api.rstrip("/") + "/api/events?" + urllib.parse.urlencode({"rule": args.rule})
    attack_ns = args.attack_ms * 1_000_000
    deadline = args.attack_ms / 1000.0 + args.timeout
    last_error = None
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                events = events_of(resp.read())
            seen_ms = time.time() * 1000
            # Oldest first, so that two quick attacks claim their own events.
            candidates = []
            for ev in events:
                if ev.get("rule") != args.rule:
                    continue
                uid = ev.get("uuid") or json.dumps(ev, sort_keys=True)
                t = parse_time_ns(ev.get("time"))
                # 1 s of slack: the event clock and this one are the same
                # machine's, but the event is stamped in another process.
                if uid in seen or (t is not None and t < attack_ns - 1_000_000_000):
                    continue
                candidates.append((t or 0, uid, ev))
            if candidates:
                t, uid, ev = min(candidates, key=lambda c: c[0])
                if args.seen:
                    with open(args.seen, "a") as f:
                        f.write(uid + "\n")
                event_ms = (t - attack_ns) / 1e6 if t else None
                stored_ms = seen_ms - args.attack_ms
                print(f"  \u2714 {ev.get('rule')}  [{ev.get('priority', '?')}]")
                print(f"      output:  {ev.get('output', '')}")
                lat = f"stored and visible in the API {stored_ms:.0f} ms after the attack"
                if event_ms is not None:
                    lat = f"syscall seen {event_ms:.0f} ms, " + lat
                print(f"      latency: {lat}")
                sys.stdout.flush()
                return 0
        except (urllib.error.URLError, OSError, ValueError) as e:
            last_error = e
        if time.time() > deadline:
            what = f" ({args.label})" if args.label else ""
            err = f"; last API error: {last_error}" if last_error else ""
            print(f"  \u2718 no '{args.rule}' detection{what} within {args.timeout:g} s of the attack{err}")
            return 1
        time.sleep(POLL_S)


if __name__ == "__main__":
    sys.exit(main())
