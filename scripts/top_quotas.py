"""Prints the fullest quotas from exposition text on stdin: `N` lines, usage/limit."""

import re
import sys

SAMPLE = re.compile(r'^(aws_quota_(?:usage|limit))\{(.*)\} (\S+)$')


def main() -> None:
    top = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    series: dict[str, dict[str, float]] = {}
    for line in sys.stdin:
        m = SAMPLE.match(line.strip())
        if m:
            series.setdefault(m.group(2), {})[m.group(1)] = float(m.group(3))
    rows = []
    for labels, v in series.items():
        if v.get("aws_quota_limit", 0) > 0 and "aws_quota_usage" in v:
            l = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            where = f'{l["account_id"]} {l["aws_region"]:<10} {l["service_code"]:<4} {l["quota_name"]}' + (f' ({l["resource"]})' if l["resource"] else "")
            rows.append((v["aws_quota_usage"] / v["aws_quota_limit"], v["aws_quota_usage"], v["aws_quota_limit"], where))
    for ratio, usage, limit, where in sorted(rows, reverse=True)[:top]:
        print(f"  {ratio:6.1%}  {usage:>8.0f} / {limit:<8.0f} {where}")


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, BrokenPipeError):
        # Ctrl-C while the demo shows this: stop quietly, as the demo does.
        sys.exit(130)
