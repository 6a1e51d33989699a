"""Clients that try to stall the server, and what they cost: prints figures, fails on
nothing. Runs the SSM exporter (debug build unless --bin-dir) against the AWS test
server.

- a wrong-password flood: N clients sending a wrong password (bcrypt cost 10) to
  /metrics for D seconds; /healthz and an authorised scrape's latency meanwhile;
- bcrypt timing of a known user with a wrong password against an unknown user;
- silent connections: M that send nothing; how many the server still holds after the
  header timeout, and its RSS, under a file-descriptor limit of 1,024; a probe's
  latency meanwhile.

    .venv/bin/python bench/web_limits.py [--bin-dir target/release] [--clients 16]
        [--seconds 20] [--silent 1100] [--baseline-bin-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from base64 import b64encode
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from conftest import AwsServer, aws_env, free_port, wait_until  # noqa: E402

ALICE10 = "$2b$10$VNcZqx5LUF8jm8n12hzO1el16V87W1jMFjDtT3H7ngmigvF87utgC"  # "s3cret"


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + b64encode(f"{user}:{password}".encode()).decode()}


def start(bin_dir: Path, aws: AwsServer, tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    web = tmp / "web.yml"
    web.write_text(f"basic_auth_users:\n  alice: '{ALICE10}'\n")
    cfg = tmp / "config.yml"
    cfg.write_text("regions: [eu-west-1]\n")
    log = open(tmp / f"exporter-{port}.log", "w")
    proc = subprocess.Popen(
        [str(bin_dir / "ssm_quota_exporter"), f"--web.listen-address=127.0.0.1:{port}",
         f"--config.file={cfg}", f"--web.config.file={web}"],
        env=aws_env(aws), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(f"{url}/healthz", timeout=2).status_code == 200, 30, "healthz")
    return proc, url


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


def flood(url: str, clients: int, seconds: float) -> None:
    good = basic("alice", "s3cret")
    requests.get(f"{url}/metrics", headers=good, timeout=30)
    stop = threading.Event()
    failures = [0]

    def run() -> None:
        s = requests.Session()
        while not stop.is_set():
            try:
                s.get(f"{url}/metrics", headers=basic("alice", "wrong"), timeout=30)
                failures[0] += 1
            except requests.RequestException:
                pass

    threads = [threading.Thread(target=run, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    health, scrape = [], []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.monotonic()
        requests.get(f"{url}/healthz", timeout=30)
        health.append(time.monotonic() - t)
        t = time.monotonic()
        requests.get(f"{url}/metrics", headers=good, timeout=30)
        scrape.append(time.monotonic() - t)
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    print(f"  wrong-password flood, {clients} clients, {seconds:.0f} s: {failures[0]} refused")
    print(f"    /healthz   p50 {pct(health, .5):8.2f} ms  p99 {pct(health, .99):8.2f} ms  max {max(health) * 1000:8.2f} ms")
    print(f"    auth scrape p50 {pct(scrape, .5):8.2f} ms  p99 {pct(scrape, .99):8.2f} ms  max {max(scrape) * 1000:8.2f} ms")


def user_timing(url: str) -> None:
    def med(user: str) -> float:
        xs = []
        for _ in range(10):
            t = time.monotonic()
            requests.get(f"{url}/metrics", headers=basic(user, "nope"), timeout=30)
            xs.append(time.monotonic() - t)
        return statistics.median(xs) * 1000
    print(f"  wrong password: known user {med('alice'):.2f} ms, unknown user {med('mallory'):.2f} ms (median of 10)")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def silent(proc: subprocess.Popen, url: str, n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, n + 500)), hard))
    subprocess.run(["prlimit", f"--pid={proc.pid}", "--nofile=1024:1024"], check=True)
    port = int(url.rsplit(":", 1)[1])
    before = rss_mb(proc.pid)
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(n)]
    time.sleep(0.5)
    print(f"  {n} silent connections, fd limit 1024: RSS {before:.1f} -> {rss_mb(proc.pid):.1f} MB, fds {open_fds(proc.pid)}")
    t = time.monotonic()
    try:
        code = requests.get(f"{url}/healthz", timeout=30).status_code
    except requests.RequestException as e:
        code = type(e).__name__
    print(f"    /healthz meanwhile: {code} after {(time.monotonic() - t) * 1000:.0f} ms")
    for wait in (2, 12):
        time.sleep(wait - (0 if wait == 2 else 2))
        closed = 0
        for s in socks:
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
        print(f"    after {wait:>2} s: {closed} closed by the server, fds {open_fds(proc.pid)}, RSS {rss_mb(proc.pid):.1f} MB")
    for s in socks:
        s.close()
    time.sleep(1)
    print(f"    after the clients closed: fds {open_fds(proc.pid)}, RSS {rss_mb(proc.pid):.1f} MB")


def run(label: str, bin_dir: Path, args) -> None:
    print(f"{label}: {bin_dir}")
    aws = AwsServer()
    aws.seed_ssm("eu-west-1", standard=3, advanced=0)
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start(bin_dir, aws, Path(tmp))
        try:
            flood(url, args.clients, args.seconds)
            user_timing(url)
            silent(proc, url, args.silent)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            aws.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bin-dir", type=Path, default=ROOT / "target" / "debug")
    p.add_argument("--baseline-bin-dir", type=Path)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--silent", type=int, default=1100)
    args = p.parse_args()
    if args.baseline_bin_dir:
        run("baseline", args.baseline_bin_dir, args)
    run("this build", args.bin_dir, args)


if __name__ == "__main__":
    main()
