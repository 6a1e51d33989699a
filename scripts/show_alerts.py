"""Prints the alerts of a Prometheus /api/v1/alerts answer on stdin, a line each."""

import json
import sys


def main() -> None:
    alerts = json.load(sys.stdin)["data"]["alerts"]
    for a in sorted(alerts, key=lambda a: (a["labels"]["alertname"], a["labels"].get("severity", ""), a["labels"].get("account_id", ""))):
        l = a["labels"]
        where = " ".join(l[k] for k in ("account_id", "aws_region", "service_code", "quota_code", "resource") if l.get(k))
        print(f"  {a['state']:<8} {l['alertname']:<24} {l.get('severity', ''):<9} {where}")
    if not alerts:
        print("  (none yet)")


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, BrokenPipeError):
        # Ctrl-C while the demo shows this: stop quietly, as the demo does.
        sys.exit(130)
