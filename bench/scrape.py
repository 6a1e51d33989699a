"""Benchmark: what a scrape costs, for a large snapshot. Figures, not pass/fail.

The ECR exporter against the local AWS test server, with N repositories (three series
each: usage, limit, info): 5,000 repositories (about 15,000 series) and 33,334
(about 100,000). For each build given (--bin, and --baseline-bin for another build
to compare with in the same run, for example the code before pre-rendering built from
another checkout), it prints:

- series and body bytes, plain and gzipped;
- scrape latency p50 / p99 with 1 and with 8 concurrent scrapers, each on its own
  keep-alive connection, asking for gzip as Prometheus does, and for plain text;
- resident memory: at start, after the first refresh, and the most seen while 8
  scrapers run (sampled every 5 ms), with its ratio to the memory after the refresh.

Usage: .venv/bin/python bench/scrape.py [--bin target/release]
       [--baseline-bin DIR] [--repositories 5000,33334] [--scrapes 200]
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from conftest import AwsServer, Exporter  # noqa: E402
from ssm_refresh import rss_kib  # noqa: E402

# No refresh while scrapes are timed: one refresh, fast, then an hour's interval.
SETTINGS = {"rate_limit": 1000, "timeout": "20m", "refresh_interval": "1h", "max_staleness": "2h"}
CONFIG = {
    "regions": ["eu-west-1"],
    "collectors": {"ecr_images": {**SETTINGS, "concurrency": 16}, "ecr_repositories": SETTINGS},
}


def scrape(conn: http.client.HTTPConnection, gzipped: bool) -> tuple[float, bytes]:
    started = time.perf_counter()
    conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip" if gzipped else "identity"})
    body = conn.getresponse().read()
    return time.perf_counter() - started, body


def scrapers(port: int, threads: int, each: int, gzipped: bool) -> list[float]:
    """Latencies of `threads` scrapers doing `each` scrapes at once."""
    latencies: list[float] = []
    lock = threading.Lock()

    def run() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine = [scrape(conn, gzipped)[0] for _ in range(each)]
        conn.close()
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return latencies


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def measure(binary_dir: Path, label: str, aws: AwsServer, scrapes: int) -> dict:
    import conftest

    conftest.BIN_DIR = binary_dir
    e = Exporter("ecr_quota_exporter", aws, CONFIG)
    try:
        start_rss = rss_kib(e.proc.pid)[0]
        e.wait_ready(timeout=1800)
        conn = http.client.HTTPConnection("127.0.0.1", e.port, timeout=120)
        _, plain = scrape(conn, False)
        _, zipped = scrape(conn, True)
        # An exporter that ignores Accept-Encoding sends plain text.
        unzipped = gzip.decompress(zipped) if zipped[:2] == b"\x1f\x8b" else zipped
        series = sum(1 for line in plain.decode().splitlines() if line and not line.startswith("#"))
        refreshed_rss = rss_kib(e.proc.pid)[0]
        out = {
            "label": label,
            "series": series,
            "plain_bytes": len(plain),
            "gzip_bytes": len(zipped),
            "same_text": len(unzipped) == len(plain),
        }
        for gz in (True, False):
            tag = "gzip" if gz else "plain"
            one = [scrape(conn, gz)[0] for _ in range(scrapes)]
            out[f"{tag}_1"] = (pct(one, 0.5), pct(one, 0.99))
        conn.close()
        peak = [0]
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], rss_kib(e.proc.pid)[0])
                time.sleep(0.005)

        watcher = threading.Thread(target=watch)
        watcher.start()
        each = max(5, scrapes // 8)
        started = time.perf_counter()
        eight = scrapers(e.port, 8, each, True)
        elapsed = time.perf_counter() - started
        stop.set()
        watcher.join()
        out["gzip_8"] = (pct(eight, 0.5), pct(eight, 0.99))
        out["per_s_8"] = len(eight) / elapsed
        out["rss"] = (start_rss / 1024, refreshed_rss / 1024, peak[0] / 1024)
        return out
    finally:
        e.stop()


def show(r: dict) -> None:
    start, refreshed, peak = r["rss"]
    print(
        f"{r['label']:<10} {r['series']:>7} {r['plain_bytes'] / 1e6:>8.2f} {r['gzip_bytes'] / 1e6:>7.3f} "
        f"{r['plain_bytes'] / r['gzip_bytes']:>5.1f}x "
        f"{r['gzip_1'][0]:>7.2f} {r['gzip_1'][1]:>7.2f} {r['plain_1'][0]:>7.2f} {r['plain_1'][1]:>7.2f} "
        f"{r['gzip_8'][0]:>7.2f} {r['gzip_8'][1]:>7.2f} {r['per_s_8']:>6.0f} "
        f"{start:>6.1f} {refreshed:>6.1f} {peak:>6.1f} {peak / refreshed:>5.2f}"
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target" / "release"))
    ap.add_argument("--baseline-bin", default=None)
    ap.add_argument("--repositories", default="5000,33334")
    ap.add_argument("--scrapes", type=int, default=200)
    args = ap.parse_args()
    builds = [("new", Path(args.bin))]
    if args.baseline_bin:
        builds.insert(0, ("baseline", Path(args.baseline_bin)))
    for label, path in builds:
        print(f"{label}: ecr_quota_exporter from {path}")
    print("latencies in ms (p50 p99); gzip_1/plain_1: one scraper; gzip_8: eight at once; RSS in MiB")
    print(
        f"{'build':<10} {'series':>7} {'plain_MB':>8} {'gzip_MB':>7} {'ratio':>6} "
        f"{'gz1_p50':>7} {'gz1_p99':>7} {'pl1_p50':>7} {'pl1_p99':>7} {'gz8_p50':>7} {'gz8_p99':>7} {'per_s':>6} "
        f"{'start':>6} {'refr':>6} {'peak8':>6} {'x':>5}"
    )
    for n in [int(x) for x in args.repositories.split(",") if x]:
        aws = AwsServer()
        try:
            aws.seed_ecr("eu-west-1", {}, empty=n, prefix="svc/repo")
            print(f"-- {n} repositories")
            results = [measure(path, label, aws, args.scrapes if n <= 10_000 else max(20, args.scrapes // 5)) for label, path in builds]
            for r in results:
                show(r)
            if len(results) == 2:
                old, new = results
                print(
                    f"   new vs baseline: one gzip scrape p50 {old['gzip_1'][0] / new['gzip_1'][0]:.0f}x faster, "
                    f"plain {old['plain_1'][0] / new['plain_1'][0]:.0f}x; eight at once p50 "
                    f"{old['gzip_8'][0] / new['gzip_8'][0]:.0f}x; bytes sent to Prometheus "
                    f"{old['gzip_bytes'] / new['gzip_bytes']:.1f}x fewer"
                )
        finally:
            aws.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
