"""Benchmark: ssm_quota_exporter against the local AWS test server. Prints the API
calls per refresh, the refresh time and the exporter's resident memory, idle and after
counting N parameters. Figures, not pass/fail: nothing here asserts a speed.

Usage: .venv/bin/python bench/ssm_refresh.py [--parameters 10000] [--bin target/release]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import ACCOUNT_A, AwsServer, Exporter, wait_until  # noqa: E402


def rss_kib(pid: int) -> tuple[int, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def run(binary_dir: Path, standard: int, advanced: int) -> dict:
    import conftest

    conftest.BIN_DIR = binary_dir
    aws = AwsServer()
    try:
        if standard or advanced:
            aws.seed_ssm("eu-west-1", standard, advanced)
        e = Exporter("ssm_quota_exporter", aws, {"regions": ["eu-west-1"], "collectors": {"ssm_parameters": {"rate_limit": 1000}}})
        try:
            started = time.monotonic()
            e.wait_ready(timeout=600)
            wall = time.monotonic() - started
            time.sleep(1)
            rss, hwm = rss_kib(e.proc.pid)
            calls = e.value("aws_quota_exporter_aws_requests_total", operation="DescribeParameters") or 0
            duration = e.value("aws_quota_exporter_collector_duration_seconds", account_id=ACCOUNT_A)
            counted = sum(v for n, l, v in e.samples() if n == "aws_quota_usage")
            return {"parameters": standard + advanced, "counted": counted, "calls": calls, "refresh_s": duration, "ready_s": wall, "rss_kib": rss, "peak_rss_kib": hwm}
        finally:
            e.stop()
    finally:
        aws.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parameters", type=int, default=10_000)
    ap.add_argument("--bin", default=str(ROOT / "target" / "release"))
    args = ap.parse_args()
    binary_dir = Path(args.bin)
    print(f"ssm_quota_exporter from {binary_dir}, test server on loopback, rate limit lifted")
    print(f"{'parameters':>10} {'counted':>8} {'calls':>6} {'refresh_s':>9} {'rss_MiB':>8} {'peak_MiB':>8}")
    n = args.parameters
    for std, adv in ((0, 0), (n - n // 10, n // 10)):
        r = run(binary_dir, std, adv)
        print(f"{r['parameters']:>10} {r['counted']:>8.0f} {r['calls']:>6.0f} {r['refresh_s']:>9.3f} {r['rss_kib'] / 1024:>8.1f} {r['peak_rss_kib'] / 1024:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
