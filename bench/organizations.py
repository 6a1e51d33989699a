"""Benchmark: account discovery with AWS Organizations at scale, against the local AWS
test server. An organisation of `--accounts` members (plus the management account,
excluded) in nested OUs, each with a few SSM parameters in each of `--regions`
regions; ssm_quota_exporter discovers them and reaches each through its role. Prints
the API calls of one discovery, the time to /readyz and to the first complete snapshot
(every target refreshed successfully), how the first refreshes spread over time (from
the test server's request log), the exporter's resident memory after the first complete
snapshot, and the scrape size. Figures, not pass/fail.

Usage: .venv/bin/python bench/organizations.py [--accounts 1000] [--regions 2]
       [--refresh-interval 5m] [--no-tags] [--bin-dir target/release]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import conftest  # noqa: E402
from conftest import ACCOUNT_A, AwsServer, Exporter, parse_metrics  # noqa: E402
from ssm_refresh import rss_kib  # noqa: E402

BIN = "ssm_quota_exporter"
REGIONS = ["eu-west-1", "us-east-1", "us-west-2", "eu-central-1"]
OUS = [
    {"name": "prod", "children": [{"name": "payments"}, {"name": "search", "children": [{"name": "eu"}]}]},
    {"name": "dev", "children": [{"name": "sandbox"}]},
]
PLACES = ["", "prod", "prod/payments", "prod/search", "prod/search/eu", "dev", "dev/sandbox"]
TEAMS = ["payments", "search", "platform", "data"]


def members(n: int) -> list[dict]:
    return [
        {"id": f"{300000000000 + i:012d}", "name": f"member-{i}", "ou": PLACES[i % len(PLACES)],
         "tags": {"team": TEAMS[i % len(TEAMS)], "env": "prod" if i % 3 else "dev"}}
        for i in range(1, n + 1)
    ]


def complete(e: Exporter, targets: int) -> bool:
    samples = parse_metrics(e.scrape())
    ok = sum(1 for n, _, v in samples if n == "aws_quota_exporter_collector_success" and v == 1)
    return ok >= targets


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument("--regions", type=int, default=2)
    ap.add_argument("--refresh-interval", default="5m")
    ap.add_argument("--no-tags", action="store_true", help="no account_tags (no ListTagsForResource)")
    ap.add_argument("--bin-dir", default=None, help="default target/release if built there, else target/debug")
    args = ap.parse_args()
    bin_dir = Path(args.bin_dir) if args.bin_dir else ROOT / "target" / "release"
    if not args.bin_dir and not (bin_dir / BIN).exists():
        bin_dir = ROOT / "target" / "debug"
    conftest.BIN_DIR = bin_dir.resolve()
    regions = REGIONS[: args.regions]
    accounts = members(args.accounts)
    targets = len(accounts) * len(regions)
    print(f"{BIN} from {conftest.BIN_DIR}; {len(accounts)} discovered accounts x {len(regions)} regions = "
          f"{targets} targets; refresh_interval {args.refresh_interval}; account_tags {'off' if args.no_tags else 'team, env'}")

    aws = AwsServer()
    try:
        t0 = time.monotonic()
        aws.seed_org(accounts, OUS)
        for a in accounts:
            for r in regions:
                aws.seed_ssm(r, 3, 0, account=a["id"])
        print(f"seeded the organisation and {targets * 3} parameters in {time.monotonic() - t0:.1f} s")

        cfg = {
            "organization": {"role_name": "headroom-reader", "exclude_accounts": [ACCOUNT_A]},
            "regions": regions,
            "collectors": {"ssm_parameters": {"refresh_interval": args.refresh_interval}},
        }
        if not args.no_tags:
            cfg["account_tags"] = ["team", "env"]
        started = time.monotonic()
        wall0 = time.time()
        e = Exporter(BIN, aws, cfg)
        try:
            healthy_s = time.monotonic() - started
            rss0, _ = rss_kib(e.proc.pid)
            e.wait_ready(timeout=3600)
            ready_s = time.monotonic() - started
            deadline = time.monotonic() + 3600
            while not complete(e, targets):
                assert time.monotonic() < deadline, "no complete snapshot within an hour"
                time.sleep(1)
            complete_s = time.monotonic() - started
            rss, hwm = rss_kib(e.proc.pid)
            log = aws.log()
            ops = Counter(r["operation"] for r in log)
            print(f"/healthz after {healthy_s:.2f} s (RSS {rss0 / 1024:.1f} MiB); /readyz after {ready_s:.1f} s; "
                  f"first complete snapshot ({targets} targets successful) after {complete_s:.1f} s")
            print(f"RSS after the first complete snapshot: {rss / 1024:.1f} MiB (peak {hwm / 1024:.1f} MiB), "
                  f"{rss / 1024 / len(accounts) * 1000:.0f} KiB per account")
            org_ops = ["ListAccounts", "ListTagsForResource", "ListAccountsForParent", "ListChildren"]
            discovery = sum(ops[o] for o in org_ops)
            print(f"one discovery: {discovery} Organizations calls (ListAccounts {ops['ListAccounts']}: "
                  f"{math.ceil((len(accounts) + 1) / 20)} pages of 20; ListTagsForResource {ops['ListTagsForResource']})")
            print(f"AssumeRole {ops['AssumeRole']}, DescribeParameters {ops['DescribeParameters']}, "
                  f"answered >= 400: {sum(1 for r in log if r['status'] >= 400)}")
            # The spread of the first refreshes: DescribeParameters per 10 s after start.
            firsts: dict[tuple[str, str], float] = {}
            for r in log:
                if r["operation"] == "DescribeParameters" and "at" in r:
                    firsts.setdefault((r["account"], r["region"]), r["at"] - wall0)
            if firsts:
                times = sorted(firsts.values())
                print(f"first refreshes: {len(times)} targets, from {times[0]:.1f} s to {times[-1]:.1f} s after start")
                buckets = Counter(int(t // 10) * 10 for t in times)
                for b in sorted(buckets):
                    print(f"  {b:>4}-{b + 10:<4} s  {buckets[b]:>5}  {'#' * max(1, buckets[b] * 60 // max(buckets.values()))}")
            body = e.scrape()
            samples = parse_metrics(body)
            print(f"exposition: {len(body) / 1e6:.2f} MB, {len(samples)} samples, "
                  f"{sum(1 for n, _, _ in samples if n == 'aws_quota_account_info')} aws_quota_account_info series")
        finally:
            e.stop()
    finally:
        aws.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
