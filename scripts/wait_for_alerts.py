"""Waits until Prometheus' alerts stand for the data of every target: exits 0 once they
do, 1 with the reason on stderr when the deadline passes first or a process it watches
exits.

    wait_for_alerts.py --prometheus URL --since T --timeout S --target URL... [--pid P...]

1. Every target (--target, its scrape URL) is up and was last scraped at or after T
   (Unix seconds): when the exporters were all ready, so that the scrape carried
   their data. The time this is seen is E0.
2. Every rule has been evaluated on that data: its group started an evaluation more
   than MARGIN after E0 and, for each record it reads from another group (the quota
   alerts read quota:aws_quota_usage:ratio of headroom.rules) or from a later rule of
   its own, more than MARGIN after that rule was seen so evaluated. A record of an
   earlier rule of its own group is read in the same evaluation (a group evaluates its
   rules in order). Groups evaluate each at their own offset within their interval,
   so "every group evaluated after the last scrape" is not enough: the quota alerts
   may have run after it but before the recording rules did.
   MARGIN (a second, at most half the group's interval) covers what the API does not
   show: an evaluation queries at the time it was scheduled for, a little before the
   time it started (lastEvaluation), and a scrape's samples are written just after
   the scrape is reported.

Prometheus' times come from the same clock as T (the same machine)."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from datetime import datetime, timezone

import requests

POLL = 0.25  # seconds between looks
TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def seconds(rfc3339: str) -> float:
    """Unix seconds of a Prometheus time ("...T17:16:43.085413688Z", nanoseconds)."""
    m = TIME.match(rfc3339)
    if not m:
        raise ValueError(f"not a time: {rfc3339!r}")
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(m.group(1) + zone).timestamp() + float(m.group(2) or 0)


def iso(t: float) -> str:
    """A time of today for the messages; Prometheus' zero time (never) as "never"."""
    if t <= 0:
        return "never"
    return datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M:%S.%f")[:-3] + "Z"


Rule = tuple[int, int]  # (group, rule) indices in /api/v1/rules


def dependencies(groups: list[dict]) -> tuple[list[Rule], dict[Rule, list[tuple[Rule, bool]]]]:
    """Every rule, dependencies first, and what each reads: (rule, in the same
    evaluation). A rule that reads its own output, directly or through others, reads
    it once (the edge that closes the cycle is left out)."""
    by_name: dict[str, list[Rule]] = {}
    for gi, g in enumerate(groups):
        for ri, r in enumerate(g["rules"]):
            if r.get("type") == "recording":
                by_name.setdefault(r["name"], []).append((gi, ri))
    reads: dict[Rule, list[tuple[Rule, bool]]] = {}
    order: list[Rule] = []
    visiting: set[Rule] = set()

    def visit(rule: Rule) -> None:
        if rule in reads or rule in visiting:
            return
        visiting.add(rule)
        gi, ri = rule
        query = groups[gi]["rules"][ri]["query"]
        deps = []
        for name, sources in by_name.items():
            if re.search(rf"(?<![\w:]){re.escape(name)}(?![\w:])", query):
                for source in sources:
                    if source not in visiting:
                        visit(source)
                        deps.append((source, source[0] == gi and source[1] < ri))
        visiting.discard(rule)
        reads[rule] = deps
        order.append(rule)

    for gi, g in enumerate(groups):
        for ri in range(len(g["rules"])):
            visit((gi, ri))
    return order, reads


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prometheus", required=True, help="http://host:port")
    p.add_argument("--since", type=float, required=True, help="Unix seconds: every exporter was ready then")
    p.add_argument("--timeout", type=float, required=True, help="seconds")
    p.add_argument("--target", action="append", required=True, help="a scrape URL, once per target")
    p.add_argument("--pid", type=int, action="append", default=[], help="a process that must keep running")
    p.add_argument("--logs", default="", help="where the logs are, for the messages")
    a = p.parse_args()
    deadline = time.monotonic() + a.timeout
    logs = f" (logs in {a.logs})" if a.logs else ""
    waiting = "Prometheus to answer"  # what it waits for, for the message at the deadline

    def get(path: str) -> dict:
        r = requests.get(a.prometheus + path, timeout=max(1.0, min(10.0, deadline - time.monotonic())))
        r.raise_for_status()
        return r.json()["data"]

    def exited() -> bool:
        for pid in a.pid:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                print(f"demo: a process it started has exited{logs}", file=sys.stderr)
                return True
        return False

    def late() -> bool:
        if time.monotonic() < deadline:
            return False
        print(f"demo: Prometheus did not show every target's alerts within {a.timeout:g}s: "
              f"still waiting for {waiting}{logs}", file=sys.stderr)
        return True

    # 1. Every target scraped, up, since the exporters were ready.
    while True:
        if exited():
            return 1
        try:
            active = {t["scrapeUrl"]: t for t in get("/api/v1/targets?state=active")["activeTargets"]}
            e0 = time.time()
            missing = []
            for url in a.target:
                t = active.get(url)
                if t is None:
                    missing.append(f"{url} (not a target yet)")
                elif t["health"] != "up" or seconds(t["lastScrape"]) < a.since:
                    why = f": {t['lastError']}" if t.get("lastError") else ""
                    missing.append(f"{url} ({t['health']}, last scraped {t['lastScrape']}{why})")
            if not missing:
                break
            waiting = "a scrape of " + ", ".join(missing)
        except (requests.RequestException, ValueError, KeyError) as e:
            waiting = f"Prometheus to list its targets ({e})"
        if late():
            return 1
        time.sleep(POLL)

    # 2. Every rule evaluated after that, and after the records it reads.
    order: list[Rule] | None = None
    seen: dict[Rule, float] = {}  # when each rule was seen evaluated on the data
    while True:
        try:
            groups = get("/api/v1/rules")["groups"]
            now = time.time()
            if order is None:
                order, reads = dependencies(groups)
            after: dict[Rule, float] = {}  # each rule's group must have started after this
            blocked: dict[str, set[str]] = {}
            for rule in order:
                g = groups[rule[0]]
                margin = min(1.0, float(g["interval"]) / 2)
                bound = e0 + margin
                for source, same_pass in reads[rule]:
                    if same_pass and source in after:
                        bound = max(bound, after[source])
                    elif not same_pass and source in seen:
                        bound = max(bound, seen[source] + margin)
                    else:
                        blocked.setdefault(g["name"], set()).add(groups[source[0]]["name"])
                        break
                else:
                    after[rule] = bound
                    if rule not in seen and seconds(g["lastEvaluation"]) > bound:
                        seen[rule] = now
            if len(seen) == len(order):
                return 0
            behind = {}
            for rule in order:
                if rule not in seen:
                    g = groups[rule[0]]
                    if rule in after:
                        behind.setdefault(g["name"], f"{g['name']} (an evaluation after {iso(after[rule])}; "
                                                     f"last one {iso(seconds(g['lastEvaluation']))})")
                    else:
                        behind.setdefault(g["name"], f"{g['name']} (after {', '.join(sorted(blocked[g['name']]))})")
            waiting = "the rule groups " + ", ".join(behind.values())
        except (requests.RequestException, ValueError, KeyError, IndexError) as e:
            waiting = f"Prometheus to list its rules ({e!r})"
        if late():
            return 1
        time.sleep(POLL)
        if exited():
            return 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        # Ctrl-C while the demo waits: stop quietly, as the demo does.
        sys.exit(130)
