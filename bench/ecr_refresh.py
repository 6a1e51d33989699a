"""Benchmark: ecr_quota_exporter against the local AWS test server. Prints API calls
and wall time per refresh, and the exporter's resident memory after it, for one
repository with many images and for many repositories (rate limit lifted), and for
5,000 repositories with the exporter's default settings, which must finish a refresh
inside the default timeout. Figures, not pass/fail.

Usage: .venv/bin/python bench/ecr_refresh.py [--images 10000] [--repositories 1000]
       [--default-repositories 5000] [--bin target/release]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from conftest import AwsServer, Exporter  # noqa: E402
from ssm_refresh import rss_kib  # noqa: E402


FAST = {"rate_limit": 1000, "timeout": "5m", "refresh_interval": "10m", "max_staleness": "1h"}
LIFTED = {"collectors": {"ecr_images": {**FAST, "concurrency": 8}, "ecr_repositories": FAST}}


def run(binary_dir: Path, label: str, repositories: dict, empty: int, settings: dict) -> None:
    import conftest

    conftest.BIN_DIR = binary_dir
    aws = AwsServer()
    try:
        aws.seed_ecr("eu-west-1", repositories, empty=empty)
        e = Exporter("ecr_quota_exporter", aws, {"regions": ["eu-west-1"], **settings})
        try:
            e.wait_ready(timeout=900)
            rss, hwm = rss_kib(e.proc.pid)
            list_images = e.value("aws_quota_exporter_aws_requests_total", operation="ListImages") or 0
            describe = e.value("aws_quota_exporter_aws_requests_total", operation="DescribeRepositories") or 0
            refresh = e.value("aws_quota_exporter_collector_duration_seconds", collector="ecr_images")
            ok = e.value("aws_quota_exporter_collector_success", collector="ecr_images")
            series = len([s for s in e.samples() if s[0] == "aws_quota_usage" and s[1]["quota_code"] == "L-03A36CE1"])
            print(f"{label:<34} {describe:>6.0f} {list_images:>10.0f} {refresh:>9.2f} {series:>7} {rss / 1024:>8.1f} {hwm / 1024:>8.1f} {ok:>3.0f}")
        finally:
            e.stop()
    finally:
        aws.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--repositories", type=int, default=1_000)
    ap.add_argument("--default-repositories", type=int, default=5_000)
    ap.add_argument("--bin", default=str(ROOT / "target" / "release"))
    args = ap.parse_args()
    print(f"ecr_quota_exporter from {args.bin}, test server on loopback")
    print(f"{'case':<34} {'Descr.':>6} {'ListImages':>10} {'refresh_s':>9} {'series':>7} {'rss_MiB':>8} {'peak_MiB':>8} {'ok':>3}")
    n = args.images
    run(Path(args.bin), f"1 repository, {n} images x2 tags", {"big/repo": {"images": n, "tags_per_image": 2}}, 0, LIFTED)
    m = args.repositories
    run(Path(args.bin), f"{m} repositories, 10 images each", {f"svc/r{i:05d}": {"images": 10} for i in range(m)}, 0, LIFTED)
    d = args.default_repositories
    if d:
        # The defaults of ecr_images (20 requests per second, 8-minute timeout): the
        # refresh must end well inside the timeout, or the collector reports failure.
        run(Path(args.bin), f"{d} repos, 3 images, defaults", {f"svc/r{i:05d}": {"images": 3} for i in range(d)}, 0, {})

    return 0


if __name__ == "__main__":
    sys.exit(main())
