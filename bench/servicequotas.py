"""Benchmark: servicequotas_exporter against the local AWS test server, for many
accounts and regions with many metered quotas each. Prints the time to /readyz, the API
calls per operation (from the test server's request log) in total and per
account-region, the series per account-region, the exposition size plain and gzipped,
the scrape latency and the exporter's resident memory. Figures, not pass/fail.

Every account-region gets `--quotas` generated quotas (`generate_quotas`, 20 services,
every `--no-usage-every`-th quota without usage, so not in the report) and a report
that answers PENDING once and IN_PROGRESS once before it completes. The first account
is the test server's default one; the others are reached by assuming
`arn:aws:iam::<id>:role/headroom-reader`. Both collectors run: `servicequotas` (one
report per account and region) and `servicequotas_global` (one more report per account
in us-east-1; the generated services are all regional, so it exports nothing), with
`rate_limit: 50` and a refresh interval long enough for a single refresh.

With `--min-usage-ratio X` the exporter is started a second time against the same test
server with `min_usage_ratio: X` and the series are printed at 0 and at X.

With `--usage-source cloudwatch` both collectors read usage from CloudWatch
GetMetricData instead of the report; the calls then show the catalogue's list calls
and the GetMetricData batches.

Usage: .venv/bin/python bench/servicequotas.py [--accounts 50] [--regions 4]
       [--quotas 1000] [--no-usage-every 10] [--min-usage-ratio 0.5]
       [--usage-source report|cloudwatch] [--no-global] [--bin-dir target/release]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import conftest  # noqa: E402
from conftest import ACCOUNT_A, AwsServer, Exporter, parse_metrics  # noqa: E402
from ssm_refresh import rss_kib  # noqa: E402
from testserver.headroom_aws import generate_quotas  # noqa: E402

BIN = "servicequotas_exporter"
SERVICES = 20
# Real region names, in the order they are taken.
REGIONS = [
    "eu-west-1", "us-east-1", "us-west-2", "ap-southeast-1", "eu-central-1", "us-east-2",
    "ap-northeast-1", "eu-west-2", "ca-central-1", "ap-south-1", "sa-east-1", "eu-north-1",
    "ap-southeast-2", "eu-west-3", "us-west-1", "ap-northeast-2",
]
READY_TIMEOUT = 1800  # seconds; the refresh timeout below is 25 minutes


def account_ids(n: int) -> list[str]:
    return [ACCOUNT_A] + [f"{200000000000 + i:012d}" for i in range(1, n)]


def exporter_config(accounts: list[str], regions: list[str], ratio: float | None, global_on: bool, source: str) -> dict:
    one_refresh = {"refresh_interval": "30m", "timeout": "25m", "max_staleness": "1h", "rate_limit": 50, "usage_source": source}
    regional = dict(one_refresh)
    if ratio is not None:
        regional["min_usage_ratio"] = ratio
    glob = dict(one_refresh) if global_on else {"enabled": False}
    return {
        "accounts": [{} if a == ACCOUNT_A else {"role_arn": f"arn:aws:iam::{a}:role/headroom-reader"} for a in accounts],
        "regions": regions,
        "collectors": {"servicequotas": regional, "servicequotas_global": glob},
    }


def get_raw(url: str, gzipped: bool) -> tuple[bytes, float]:
    """The body as sent (compressed when asked) and the request's wall time."""
    headers = {"Accept-Encoding": "gzip" if gzipped else "identity"}
    t0 = time.perf_counter()
    r = requests.get(url, headers=headers, stream=True, timeout=60)
    body = r.raw.read(decode_content=False)
    elapsed = time.perf_counter() - t0
    r.raise_for_status()
    if gzipped:
        assert r.headers.get("Content-Encoding") == "gzip", r.headers
    return body, elapsed


def start_exporter(aws: AwsServer, cfg: dict) -> tuple[Exporter, float, dict]:
    """Starts the exporter; returns it, the seconds to /readyz and its RSS at /healthz."""
    started = time.monotonic()
    e = Exporter(BIN, aws, cfg)
    rss, hwm = rss_kib(e.proc.pid)
    at_health = {"rss": rss, "hwm": hwm, "s": time.monotonic() - started, "calls": len(aws.log())}
    e.wait_ready(timeout=READY_TIMEOUT)
    return e, time.monotonic() - started, at_health


def usage_series(samples: list) -> list:
    return [s for s in samples if s[0] == "aws_quota_usage"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=50)
    ap.add_argument("--regions", type=int, default=4)
    ap.add_argument("--quotas", type=int, default=1_000, help="generated quotas per account-region")
    ap.add_argument("--no-usage-every", type=int, default=10, help="every n-th quota has no usage (0: all have)")
    ap.add_argument("--min-usage-ratio", type=float, default=None)
    ap.add_argument("--no-global", action="store_true", help="disable servicequotas_global")
    ap.add_argument("--usage-source", choices=["report", "cloudwatch"], default="report")
    ap.add_argument("--bin-dir", default=None, help="default target/release if built there, else target/debug")
    args = ap.parse_args()
    if not 1 <= args.regions <= len(REGIONS):
        ap.error(f"--regions must be 1..{len(REGIONS)}")
    if args.bin_dir:
        bin_dir = Path(args.bin_dir)
    else:
        bin_dir = ROOT / "target" / "release"
        if not (bin_dir / BIN).exists():
            bin_dir = ROOT / "target" / "debug"
    conftest.BIN_DIR = bin_dir.resolve()

    accounts = account_ids(args.accounts)
    regions = REGIONS[: args.regions]
    pairs = len(accounts) * len(regions)
    global_on = not args.no_global
    generated = generate_quotas(args.quotas, SERVICES, args.no_usage_every)
    with_usage = [q for q in generated if q.get("usage") is not None]
    print(f"{BIN} from {conftest.BIN_DIR}, test server on loopback")
    print(f"{len(accounts)} accounts x {len(regions)} regions = {pairs} account-regions, {args.quotas} quotas each "
          f"({len(with_usage)} with usage), usage from {args.usage_source}, report pending 1 / in progress 1, rate_limit 50, "
          f"servicequotas_global {'on' if global_on else 'off'}")

    aws = AwsServer()
    try:
        t0 = time.monotonic()
        gen = {"count": args.quotas, "services": SERVICES, "no_usage_every": args.no_usage_every}
        for a in accounts:
            for r in regions:
                aws.post("seed_quotas", {"account": a, "region": r, "generate": gen, "replace": True})
                aws.post("report_behaviour", {"account": a, "region": r, "pending_polls": 1, "in_progress_polls": 1})
            if global_on and "us-east-1" not in regions:
                aws.post("report_behaviour", {"account": a, "region": "us-east-1", "pending_polls": 1, "in_progress_polls": 1})
        print(f"seeded {pairs * args.quotas} quotas in {time.monotonic() - t0:.1f} s")

        cfg = exporter_config(accounts, regions, 0.0, global_on, args.usage_source)
        e, ready_s, at_health = start_exporter(aws, cfg)
        try:
            print(f"time to ready: {ready_s:.2f} s  (/healthz after {at_health['s']:.2f} s, "
                  f"{at_health['calls']} AWS calls made by then)")
            # Two scrapes, then the memory after the first refresh.
            first, _ = get_raw(f"{e.url}/metrics", False)
            get_raw(f"{e.url}/metrics", True)
            rss, hwm = rss_kib(e.proc.pid)

            samples = parse_metrics(first.decode())
            usage = usage_series(samples)
            success = [v for n, l, v in samples if n == "aws_quota_exporter_collector_success"]
            durations = sorted(v for n, l, v in samples
                               if n == "aws_quota_exporter_collector_duration_seconds" and l.get("collector") == "servicequotas")
            print(f"collector targets: {len(success)}, successful: {sum(1 for v in success if v == 1)}")
            if durations:
                print(f"servicequotas refresh duration per account-region: median {statistics.median(durations):.2f} s, "
                      f"max {durations[-1]:.2f} s")

            log = aws.log()
            ops = Counter(r["operation"] for r in log)
            errors = sum(1 for r in log if r["status"] >= 400)
            starts = Counter((r["account"], r["region"]) for r in log if r["operation"] == "StartQuotaUtilizationReport")
            print(f"API calls: {len(log)} total, {len(log) / pairs:.2f} per account-region, {errors} answered >= 400")
            print(f"  reports started: {sum(starts.values())} for {len(starts)} account-regions")
            reports = max(1, sum(starts.values()))
            print(f"  {'operation':<32} {'calls':>7} {'per acct-region':>15} {'per report':>10}")
            for op, n in sorted(ops.items(), key=lambda kv: -kv[1]):
                print(f"  {op:<32} {n:>7} {n / pairs:>15.2f} {n / reports:>10.2f}")

            print(f"series: aws_quota_usage {len(usage)} ({len(usage) / pairs:.1f} per account-region, "
                  f"{len(with_usage)} expected per account-region), all samples {len(samples)}")
            plain, _ = get_raw(f"{e.url}/metrics", False)
            packed, _ = get_raw(f"{e.url}/metrics", True)
            print(f"exposition: {len(plain) / 1e6:.2f} MB plain, {len(packed) / 1e6:.2f} MB gzipped "
                  f"({len(plain) / max(1, len(packed)):.1f}x)")
            for label, gz in (("plain", False), ("gzip", True)):
                times = [get_raw(f"{e.url}/metrics", gz)[1] for _ in range(20)]
                print(f"scrape latency ({label}, 20 scrapes): median {statistics.median(times) * 1000:.1f} ms, "
                      f"max {max(times) * 1000:.1f} ms")
            print(f"RSS: {at_health['rss'] / 1024:.1f} MiB at /healthz (before the first refresh's rows: "
                  f"{at_health['calls']} AWS calls by then); "
                  f"{rss / 1024:.1f} MiB after the first refresh and two scrapes (peak {hwm / 1024:.1f} MiB)")
        finally:
            e.stop()

        if args.min_usage_ratio is not None:
            ratio = args.min_usage_ratio
            expected = sum(1 for q in with_usage if q["usage"] / (q.get("applied") or q["default"]) >= ratio)
            e, ready_s, _ = start_exporter(aws, exporter_config(accounts, regions, ratio, global_on, args.usage_source))
            try:
                body, _ = get_raw(f"{e.url}/metrics", False)
                packed, _ = get_raw(f"{e.url}/metrics", True)
                got = usage_series(parse_metrics(body.decode()))
                print(f"min_usage_ratio: series at 0: {len(usage)} ({len(usage) / pairs:.1f} per account-region); "
                      f"at {ratio}: {len(got)} ({len(got) / pairs:.1f} per account-region, {expected} expected per account-region), "
                      f"exposition {len(body) / 1e6:.2f} MB plain, {len(packed) / 1e6:.2f} MB gzipped, ready in {ready_s:.2f} s")
            finally:
                e.stop()
    finally:
        aws.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
