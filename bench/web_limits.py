"""Clients that try to stall the server, and what they cost: prints figures, fails on
nothing. Runs the SSM exporter (debug build unless --bin-dir) against the AWS test
server.

- a wrong-password flood: N clients sending a wrong password (bcrypt cost 10) to
  /metrics for D seconds; /healthz and an authorised scrape's latency meanwhile;
- bcrypt timing of a known user with a wrong password against an unknown user;
- silent connections: M that send nothing; how many the server still holds after the
  header timeout, and its RSS, under a file-descriptor limit of 1,024; a probe's
  latency meanwhile;
- a soak: S seconds of scrapes at R a second (gzip and plain alternately) while the
  exporter refreshes a few thousand parameters in two regions every 30 s, and, every
  E seconds, a rewritten configuration and a SIGHUP (two valid files alternately, and
  twice an invalid one); scrape latency, non-200s, counts that differ from the seeded
  ones, whether the reload metrics say what happened, and RSS along the way. A build
  without the reload metrics (an older baseline) is soaked without reloads, since
  SIGHUP would stop it; so is any build with --no-reloads. --soak-seconds 0 skips it.

    .venv/bin/python bench/web_limits.py [--bin-dir target/release] [--clients 16]
        [--seconds 20] [--silent 1100] [--baseline-bin-dir DIR]
        [--soak-seconds 120] [--soak-rate 20] [--reload-every 10]
        [--soak-parameters 2000] [--no-reloads]
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
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
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from conftest import ACCOUNT_A, AwsServer, aws_env, free_port, parse_metrics, wait_until  # noqa: E402

ALICE10 = "$2b$10$VNcZqx5LUF8jm8n12hzO1el16V87W1jMFjDtT3H7ngmigvF87utgC"  # "s3cret"


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + b64encode(f"{user}:{password}".encode()).decode()}


def start(bin_dir: Path, aws: AwsServer, tmp: Path, config: str = "regions: [eu-west-1]\n",
          auth: bool = True) -> tuple[subprocess.Popen, str]:
    """The exporter on a loopback port with `config` in tmp/config.yml (and alice behind
    basic auth unless `auth` is false); its log goes to tmp/exporter-<port>.log."""
    port = free_port()
    cfg = tmp / "config.yml"
    cfg.write_text(config)
    args = [str(bin_dir / "ssm_quota_exporter"), f"--web.listen-address=127.0.0.1:{port}", f"--config.file={cfg}"]
    if auth:
        web = tmp / "web.yml"
        web.write_text(f"basic_auth_users:\n  alice: '{ALICE10}'\n")
        args.append(f"--web.config.file={web}")
    log = open(tmp / f"exporter-{port}.log", "w")
    proc = subprocess.Popen(args, env=aws_env(aws), stdout=log, stderr=subprocess.STDOUT)
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


# The soak: two regions seeded, two valid configurations reloaded alternately (both
# regions; eu-west-1 alone with a changed limit override, so its task restarts and
# us-east-1's stops), and two invalid ones, each refused by the exporter.
REGIONS = ("eu-west-1", "us-east-1")
OK = "aws_quota_exporter_config_last_reload_successful"
WHEN = "aws_quota_exporter_config_last_reload_success_timestamp_seconds"
# How long a reload has to show in the reload metrics; later, it counts as a mismatch.
CHECK_WITHIN = 10.0
INVALID = [
    # an unknown key
    "regions: [eu-west-1, us-east-1]\ncollectors:\n  ssm_parameters:\n    refresh_intervall: 30s\n",
    # a timeout longer than the refresh interval
    "regions: [eu-west-1, us-east-1]\ncollectors:\n  ssm_parameters:\n    refresh_interval: 30s\n    timeout: 1m\n",
]


def seeded(parameters: int) -> dict[tuple[str, str], int]:
    """The counts the soak seeds, by (region, quota_code): `parameters` standard and a
    tenth as many advanced in eu-west-1, three quarters as many standard in us-east-1."""
    return {
        ("eu-west-1", "standard_parameters"): parameters,
        ("eu-west-1", "advanced_parameters"): parameters // 10,
        ("us-east-1", "standard_parameters"): parameters * 3 // 4,
        ("us-east-1", "advanced_parameters"): 0,
    }


def soak_config(regions: tuple[str, ...], override: int | None = None) -> str:
    # A refresh every 30 s (±10%), so that several happen during the soak; at 50
    # requests a second one takes a second or two, well within its timeout.
    settings: dict = {"refresh_interval": "30s", "timeout": "20s", "max_staleness": "2m", "rate_limit": 50}
    if override is not None:
        settings["limit_overrides"] = {"standard_parameters": override}
    return yaml.safe_dump({"regions": list(regions), "collectors": {"ssm_parameters": settings}})


VALID: list[tuple[tuple[str, ...], str]] = [
    (REGIONS, soak_config(REGIONS)),
    (REGIONS[:1], soak_config(REGIONS[:1], override=20_000)),
]


class SoakState:
    """What the reload thread tells the scrape loop, and what it counts."""

    def __init__(self) -> None:
        # The regions in force and since when (monotonic); None while a reload is on
        # its way or after one that did not show as it should. Replaced as one tuple.
        self.config: tuple[frozenset[str] | None, float] = (frozenset(REGIONS), time.monotonic())
        self.reloads = 0
        self.failed_as_intended = 0
        self.mismatches: list[str] = []
        self.seen_after: list[float] = []  # seconds from SIGHUP to the metrics showing it


def reload_metrics(url: str) -> tuple[float | None, float | None]:
    """aws_quota_exporter_config_last_reload_successful and its success timestamp."""
    r = requests.get(f"{url}/metrics", headers={"Accept-Encoding": "identity"}, timeout=30)
    values = {n: v for n, _, v in parse_metrics(r.text) if n in (OK, WHEN)}
    return values.get(OK), values.get(WHEN)


def await_reload(url: str, proc: subprocess.Popen, done) -> tuple[bool, tuple[float | None, float | None]]:
    """Polls the reload metrics until done(successful, timestamp), for CHECK_WITHIN at most."""
    deadline = time.monotonic() + CHECK_WITHIN
    last: tuple[float | None, float | None] = (None, None)
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            last = reload_metrics(url)
            if done(*last):
                return True, last
        except requests.RequestException:
            pass
        time.sleep(0.1)
    return False, last


def reloader(proc: subprocess.Popen, url: str, cfg: Path, every: float, end: float,
             st: SoakState, stop: threading.Event) -> None:
    """Every `every` seconds until `end`: the other valid configuration and a SIGHUP to
    the exporter this script started; at a third and two thirds of the way, an invalid
    one instead, then the file in force written back. Checks the reload metrics after
    each."""
    t0 = time.monotonic()
    slots = 0
    while t0 + (slots + 1) * every < end - 2:
        slots += 1
    invalid_at = {max(1, slots // 3), max(1, 2 * slots // 3)} if slots else set()
    current, invalid_sent = 0, 0
    when = reload_metrics(url)[1]
    for k in range(1, slots + 1):
        if stop.wait(max(0.0, t0 + k * every - time.monotonic())) or proc.poll() is not None:
            return
        sent = time.monotonic()
        if k in invalid_at:
            cfg.write_text(INVALID[invalid_sent % len(INVALID)])
            invalid_sent += 1
            proc.send_signal(signal.SIGHUP)
            seen, (ok, ts) = await_reload(url, proc, lambda ok, ts: ok == 0)
            if seen and ts == when:
                st.failed_as_intended += 1
                st.seen_after.append(time.monotonic() - sent)
            else:
                st.mismatches.append(f"invalid config #{k}: successful={ok} timestamp={ts} (was {when})")
            cfg.write_text(VALID[current][1])
        else:
            nxt = 1 - current
            st.config = (None, sent)
            cfg.write_text(VALID[nxt][1])
            proc.send_signal(signal.SIGHUP)
            seen, (ok, ts) = await_reload(
                url, proc, lambda ok, ts: ok == 1 and ts is not None and when is not None and ts > when)
            current = nxt
            if seen:
                st.reloads += 1
                st.seen_after.append(time.monotonic() - sent)
                st.config = (frozenset(VALID[nxt][0]), time.monotonic())
            else:
                st.mismatches.append(f"reload #{k}: successful={ok} timestamp={ts} (was {when})")
            when = ts if ts is not None else when


def describe_calls(url: str) -> float:
    text = requests.get(f"{url}/metrics", headers={"Accept-Encoding": "identity"}, timeout=30).text
    return sum(v for n, l, v in parse_metrics(text)
               if n == "aws_quota_exporter_aws_requests_total" and l.get("operation") == "DescribeParameters")


def soak(bin_dir: Path, args) -> None:
    counts = seeded(args.soak_parameters)
    aws = AwsServer()
    try:
        for region in REGIONS:
            aws.seed_ssm(region, standard=counts[(region, "standard_parameters")],
                         advanced=counts[(region, "advanced_parameters")])
        with tempfile.TemporaryDirectory() as tmp:
            proc, url = start(bin_dir, aws, Path(tmp), VALID[0][1], auth=False)
            try:
                soak_run(proc, url, Path(tmp), counts, args)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    finally:
        aws.stop()


def soak_run(proc: subprocess.Popen, url: str, tmp: Path, counts: dict[tuple[str, str], int], args) -> None:
    wait_until(lambda: requests.get(f"{url}/readyz", timeout=2).status_code == 200, 120, "readyz")
    has_reload_metrics = reload_metrics(url)[0] is not None
    reloads = args.reload_every > 0 and not args.no_reloads and has_reload_metrics
    print(f"  soak, {args.soak_seconds:.0f} s at {args.soak_rate:g} scrapes/s (gzip and plain alternately), "
          f"{counts[('eu-west-1', 'standard_parameters')]:,}+{counts[('eu-west-1', 'advanced_parameters')]:,} "
          f"parameters in eu-west-1 and {counts[('us-east-1', 'standard_parameters')]:,} in us-east-1, refresh every 30 s, "
          + (f"a reload every {args.reload_every:g} s:" if reloads else "no reloads:"))
    st = SoakState()
    stop = threading.Event()
    calls_before = describe_calls(url)
    t0 = time.monotonic()
    end = t0 + args.soak_seconds
    rss = [(0.0, rss_mb(proc.pid))]
    thread = None
    if reloads:
        thread = threading.Thread(target=reloader, args=(proc, url, tmp / "config.yml", args.reload_every, end, st, stop),
                                  daemon=True)
        thread.start()
    latency: dict[str, list[float]] = {"gzip": [], "plain": []}
    non200: dict[int, int] = {}
    errors: dict[str, int] = {}
    wrong: list[str] = []
    checked = removed_seen = not_as_asked = 0
    exited = None
    session = requests.Session()
    next_rss = t0 + 30
    # At most soak_seconds * soak_rate scrapes, and none after the end.
    for i in range(int(args.soak_seconds * args.soak_rate)):
        now = time.monotonic()
        if now >= end:
            break
        if proc.poll() is not None:
            exited = (proc.returncode, now - t0)
            break
        if now >= next_rss:
            rss.append((now - t0, rss_mb(proc.pid)))
            next_rss += 30
        due = t0 + i / args.soak_rate
        if due > now:
            time.sleep(due - now)
        encoding = "gzip" if i % 2 == 0 else "plain"
        before = st.config
        t = time.monotonic()
        try:
            r = session.get(f"{url}/metrics", headers={"Accept-Encoding": "gzip" if encoding == "gzip" else "identity"},
                            timeout=30)
        except requests.RequestException as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            continue
        latency[encoding].append(time.monotonic() - t)
        if r.status_code != 200:
            non200[r.status_code] = non200.get(r.status_code, 0) + 1
            continue
        if (r.headers.get("Content-Encoding") == "gzip") != (encoding == "gzip"):
            not_as_asked += 1
        # Only a scrape that began and ended under one known configuration can say
        # whether a removed region's series are still there.
        regions = before[0] if st.config is before else None
        for name, labels, value in parse_metrics(r.text):
            key = (labels.get("aws_region", ""), labels.get("quota_code", ""))
            if name != "aws_quota_usage" or labels.get("account_id") != ACCOUNT_A or key not in counts:
                continue
            checked += 1
            if value != counts[key]:
                wrong.append(f"{key[0]} {key[1]} {value:g} at {t - t0:.1f} s, expected {counts[key]}")
            if regions is not None and key[0] not in regions:
                removed_seen += 1
    stop.set()
    if thread:
        thread.join(timeout=CHECK_WITHIN + 30)
    if exited is None and proc.poll() is not None:
        exited = (proc.returncode, time.monotonic() - t0)
    elapsed = time.monotonic() - t0
    if exited is None:
        rss.append((elapsed, rss_mb(proc.pid)))

    if exited:
        print(f"    the exporter exited with {exited[0]} after {exited[1]:.1f} s")
    scrapes = sum(len(xs) for xs in latency.values())
    print(f"    {scrapes} scrapes in {elapsed:.1f} s; non-200: {non200 or 'none'}; failed requests: {errors or 'none'}; "
          f"encoding not as asked: {not_as_asked}")
    for encoding, xs in latency.items():
        if xs:
            print(f"    {encoding:<5} p50 {pct(xs, .5):8.2f} ms  p99 {pct(xs, .99):8.2f} ms  max {max(xs) * 1000:8.2f} ms  ({len(xs)})")
    both = latency["gzip"] + latency["plain"]
    if both:
        print(f"    all   p50 {pct(both, .5):8.2f} ms  p99 {pct(both, .99):8.2f} ms  max {max(both) * 1000:8.2f} ms")
    print(f"    counts: {checked} seeded samples checked, {len(wrong)} wrong; "
          f"{removed_seen} samples of a region after its removal was in force")
    for w in wrong[:5]:
        print(f"      wrong: {w}")
    if reloads:
        seen = st.seen_after
        figures = f"; shown in the metrics after p50 {statistics.median(seen) * 1000:.0f} ms, max {max(seen) * 1000:.0f} ms" if seen else ""
        print(f"    reloads: {st.reloads} done, {st.failed_as_intended} failed as intended, "
              f"{len(st.mismatches)} mismatches{figures}")
        for m in st.mismatches[:5]:
            print(f"      mismatch: {m}")
    elif not has_reload_metrics:
        print("    reloads: skipped, this build has no reload metrics (SIGHUP would stop it)")
    else:
        print("    reloads: skipped (--no-reloads or --reload-every 0)")
    if exited is None:
        print(f"    DescribeParameters calls during the soak: {describe_calls(url) - calls_before:.0f}")
    line = ", ".join(f"{at:.0f} s {mb:.1f}" for at, mb in rss)
    growth = rss[-1][1] - rss[0][1]
    per = f" ({growth / st.reloads * 1024:+.0f} KB per successful reload)" if reloads and st.reloads else ""
    print(f"    RSS MB: {line}; growth {growth:+.1f} MB{per}")
    log = "".join(p.read_text(errors="replace") for p in tmp.glob("exporter-*.log")).splitlines()
    # Besides the failed reloads (ERROR) and the AWS SDK's note that the config files
    # the test environment points at do not exist (WARN).
    warn = [l for l in log if " WARN " in l and "config file overridden" not in l]
    error = [l for l in log if " ERROR " in l and "configuration reload failed" not in l]
    print(f"    log: {sum('configuration reloaded' in l for l in log)} 'configuration reloaded', "
          f"{sum('configuration reload failed' in l for l in log)} 'configuration reload failed', "
          f"{len(warn)} other WARN and {len(error)} other ERROR lines, {sum('panicked' in l for l in log)} panics")
    for l in (error + warn)[:3]:
        print(f"      {l[:200]}")


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
    if args.soak_seconds > 0:
        soak(bin_dir, args)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bin-dir", type=Path, default=ROOT / "target" / "debug")
    p.add_argument("--baseline-bin-dir", type=Path)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--silent", type=int, default=1100)
    p.add_argument("--soak-seconds", type=float, default=120, help="0 skips the soak")
    p.add_argument("--soak-rate", type=float, default=20, help="scrapes a second")
    p.add_argument("--reload-every", type=float, default=10, help="seconds; 0: no reloads")
    p.add_argument("--soak-parameters", type=int, default=2000, help="standard parameters in eu-west-1")
    p.add_argument("--no-reloads", action="store_true", help="soak without SIGHUPs, whatever the build")
    args = p.parse_args()
    if args.baseline_bin_dir:
        run("baseline", args.baseline_bin_dir, args)
    run("this build", args.bin_dir, args)


if __name__ == "__main__":
    main()
