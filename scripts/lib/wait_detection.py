#!/usr/bin/env python3
"""wait_detection.py: waits for detections to appear in the backend's API.

One attack (scripts/demo, called right after the attack):
  wait_detection.py --api URL --rule RULE --attack-ms MS [--label TEXT]
                    [--timeout 5] [--seen FILE]

Attacks played by someone else (scripts/docker-demo), read while they happen
from a log with lines "ATTACK <name> <epoch ms>" ended by a line "DONE":
  wait_detection.py --api URL --watch LOG --map NAME_PREFIX=RULE ...
                    [--timeout 5] [--seen FILE]

Polls GET URL/api/events?rule=RULE every 50 ms. An attack is detected by the
oldest event of its rule whose time is not before the attack and that no
earlier attack claimed (uuids in FILE survive between calls). Attacks of one
rule must be played one after the other, each after the previous finished. Prints each
detection (rule, priority, output, latency). Exit 0 when every attack was
detected within --timeout seconds of it, 1 otherwise.

Latencies: "syscall" is the event time the agent stamped minus the moment
the attack was sent; "stored" is when a poll first saw the event in the
backend's API, so it includes the orchestrator's batching, the backend's
commit and at most one poll interval.
"""

import argparse
import calendar
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

POLL_S = 0.05
WATCH_LIMIT_S = 600  # the attacker must finish within this
_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def parse_time_ns(value):
    """RFC 3339 (Falco's "time") or an int ns epoch, to ns; None if unknown."""
    if isinstance(value, int):
        return value
    m = _RFC3339.match(value) if isinstance(value, str) else None
    if not m:
        return None
    secs = calendar.timegm(tuple(int(x) for x in m.groups()[:6]))
    frac = (m.group(7) or "0")[:9].ljust(9, "0")
    zone = m.group(8)
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        secs -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
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


class Attack:
    def __init__(self, label, rule, at_ms):
        self.label, self.rule, self.at_ms = label, rule, at_ms
        self.event = None
        self.seen_ms = None

    def deadline_passed(self, timeout_s):
        return time.time() * 1000 > self.at_ms + timeout_s * 1000


class Watcher:
    def __init__(self, api, timeout_s, seen_file):
        self.api = api.rstrip("/")
        self.timeout_s = timeout_s
        self.seen_file = seen_file
        self.claimed = set()
        if seen_file and os.path.exists(seen_file):
            with open(seen_file) as f:
                self.claimed = {line.strip() for line in f if line.strip()}
        self.last_error = None

    def poll(self, attacks):
        """One API round for the attacks still waiting; fills in .event."""
        for rule in sorted({a.rule for a in attacks if a.event is None}):
            url = self.api + "/api/events?" + urllib.parse.urlencode({"rule": rule})
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    events = events_of(resp.read())
            except (urllib.error.URLError, OSError, ValueError) as e:
                self.last_error = e
                continue
            now_ms = time.time() * 1000
            fresh = []
            for ev in events:
                uid = ev.get("uuid") or json.dumps(ev, sort_keys=True)
                if ev.get("rule") == rule and uid not in self.claimed:
                    fresh.append((parse_time_ns(ev.get("time")) or 0, uid, ev))
            fresh.sort(key=lambda c: c[0])
            for attack in sorted((a for a in attacks if a.rule == rule and a.event is None), key=lambda a: a.at_ms):
                # No slack: the attack time is read (and truncated to ms) before
                # the request leaves, the event is stamped with the same kernel
                # clock when the syscall runs. One attack can raise several
                # events (connect, then sendto); the later attack must not
                # claim the leftovers of an earlier one.
                pick = next((c for c in fresh if c[0] == 0 or c[0] >= attack.at_ms * 1_000_000), None)
                if pick is None:
                    break
                fresh.remove(pick)
                self.claimed.add(pick[1])
                if self.seen_file:
                    with open(self.seen_file, "a") as f:
                        f.write(pick[1] + "\n")
                attack.event, attack.seen_ms = pick[2], now_ms
                self.report(attack)

    def report(self, attack):
        ev = attack.event
        t = parse_time_ns(ev.get("time"))
        stored = f"stored and visible in the API {attack.seen_ms - attack.at_ms:.0f} ms after the attack"
        lat = (f"syscall {(t / 1e6 - attack.at_ms):.0f} ms, " if t else "") + stored
        mark = "\u2718 TOO LATE:" if self.late(attack) else "\u2714"
        print(f"  {mark} {ev.get('rule')}  [{ev.get('priority', '?')}]  ({attack.label})")
        print(f"      output:  {ev.get('output', '')}")
        print(f"      latency: {lat}")
        sys.stdout.flush()

    def missing(self, attack):
        err = f"; last API error: {self.last_error}" if self.last_error else ""
        print(f"  \u2718 no '{attack.rule}' detection ({attack.label}) within {self.timeout_s:g} s of the attack{err}")
        sys.stdout.flush()

    def late(self, attack):
        return attack.event is not None and attack.seen_ms - attack.at_ms > self.timeout_s * 1000


def run_one(watcher, attack):
    while attack.event is None and not attack.deadline_passed(watcher.timeout_s):
        watcher.poll([attack])
        if attack.event is None:
            time.sleep(POLL_S)
    if attack.event is None:
        watcher.poll([attack])  # a last look, in case the deadline hit a sleep
    if attack.event is None or watcher.late(attack):
        if attack.event is None:
            watcher.missing(attack)
        return 1
    return 0


def run_watch(watcher, log_path, rule_map):
    attacks, done, offset = [], False, 0
    limit = time.time() + WATCH_LIMIT_S
    while True:
        if os.path.exists(log_path):
            with open(log_path) as f:
                f.seek(offset)
                chunk = f.read()
            # Whole lines only: the attacker may be writing the last one.
            chunk = chunk[: chunk.rfind("\n") + 1]
            offset += len(chunk.encode())
            for line in chunk.splitlines():
                parts = line.split()
                if parts[:1] == ["DONE"]:
                    done = True
                elif len(parts) == 3 and parts[0] == "ATTACK":
                    rule = next((r for p, r in rule_map if parts[1].startswith(p)), None)
                    if rule is None:
                        print(f"wait_detection: no rule mapped for attack '{parts[1]}'", file=sys.stderr)
                        return 2
                    attacks.append(Attack(parts[1], rule, int(parts[2])))
                    print(f"==> attack '{parts[1]}' played")
                    sys.stdout.flush()
        pending = [a for a in attacks if a.event is None and not a.deadline_passed(watcher.timeout_s)]
        watcher.poll(pending)
        if done and not any(a.event is None and not a.deadline_passed(watcher.timeout_s) for a in attacks):
            break
        if time.time() > limit:
            print(f"wait_detection: the attacker did not finish within {WATCH_LIMIT_S} s", file=sys.stderr)
            return 1
        time.sleep(POLL_S)
    failed = 0
    for a in attacks:
        if a.event is None:
            watcher.poll([a])
        if a.event is None:
            watcher.missing(a)
        if a.event is None or watcher.late(a):
            failed += 1
    return 1 if failed or not attacks else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--api", required=True)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--seen", default=None)
    ap.add_argument("--rule")
    ap.add_argument("--attack-ms", type=int)
    ap.add_argument("--label", default="")
    ap.add_argument("--watch")
    ap.add_argument("--map", action="append", default=[], help="NAME_PREFIX=RULE")
    args = ap.parse_args()

    watcher = Watcher(args.api, args.timeout, args.seen)
    if args.watch:
        rule_map = [tuple(m.split("=", 1)) for m in args.map]
        return run_watch(watcher, args.watch, rule_map)
    if not args.rule or args.attack_ms is None:
        ap.error("either --watch, or --rule with --attack-ms")
    return run_one(watcher, Attack(args.label or args.rule, args.rule, args.attack_ms))


if __name__ == "__main__":
    sys.exit(main())
