"""Fixtures for the integration tests: the local AWS test server and exporter processes,
all on loopback, started and stopped by the tests themselves."""

from __future__ import annotations

import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN_DIR = Path(os.environ.get("HEADROOM_BIN_DIR", ROOT / "target" / "debug"))
# The rule files Prometheus loads: alerts/*.yml without their promtool unit tests.
RULE_FILES = sorted(p for p in (ROOT / "alerts").glob("*.yml") if not p.name.endswith(".test.yml"))


def promtool(*args: str, cwd: Path | None = None, input: str | None = None) -> subprocess.CompletedProcess:
    """Runs promtool (Debian's prometheus package, installed by scripts/setup.sh)."""
    binary = shutil.which("promtool")
    assert binary, "promtool is not installed: run scripts/setup.sh"
    return subprocess.run([binary, *args], cwd=cwd, input=input, capture_output=True, text=True, timeout=600)
ACCOUNT_A = "123456789012"  # the test server's default account (base credentials)
ACCOUNT_B = "111111111111"  # reached by assuming a role
ROLE_B = f"arn:aws:iam::{ACCOUNT_B}:role/headroom-reader"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Polls `predicate` until it returns a truthy value; bounded in time."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except requests.RequestException:
            pass
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def terminate(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within `timeout` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class AwsServer:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "testserver.headroom_aws", "--port", "0"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            self.proc.kill()
            raise RuntimeError(f"test server did not start: {line!r}")
        self.url = line.split()[1]

    def post(self, action: str, body: dict | None = None) -> Any:
        r = requests.post(f"{self.url}/_headroom/{action}", json=body or {}, timeout=30)
        r.raise_for_status()
        return r.json()

    def log(self) -> list[dict]:
        return requests.get(f"{self.url}/_headroom/log", timeout=10).json()

    def reset(self) -> None:
        self.post("reset")

    def seed_ssm(self, region: str, standard: int, advanced: int, account: str = ACCOUNT_A, prefix: str = "/t") -> None:
        self.post("seed/ssm", {"account": account, "region": region, "standard": standard, "advanced": advanced, "prefix": prefix})

    def seed_ecr(self, region: str, repositories: dict, empty: int = 0, account: str = ACCOUNT_A, prefix: str = "empty") -> None:
        self.post("seed/ecr", {"account": account, "region": region, "repositories": repositories, "empty": empty, "prefix": prefix})

    def seed_s3(self, buckets: dict | None = None, directory_buckets: dict | None = None, access_points: dict | None = None, account: str = ACCOUNT_A) -> None:
        self.post("seed/s3", {"account": account, "buckets": buckets or {}, "directory_buckets": directory_buckets or {}, "access_points": access_points or {}})

    def quota(self, region: str, service_code: str, quota_code: str, account: str = ACCOUNT_A, **values: Any) -> None:
        self.post("quotas", {"account": account, "region": region, "service_code": service_code, "quota_code": quota_code, **values})

    def fault(self, **kw: Any) -> int:
        return self.post("faults", kw)["id"]

    def role(self, role_arn: str, **kw: Any) -> None:
        """What AssumeRole of `role_arn` requires: external_id, duration_s, deny."""
        self.post("roles", {"role_arn": role_arn, **kw})

    def assumed(self) -> list[dict]:
        return requests.get(f"{self.url}/_headroom/assumed", timeout=10).json()

    def seed_org(self, accounts: list[dict], ous: list[dict] | None = None, management_account: str = ACCOUNT_A,
                 delegated_admins: list[str] | None = None, replace: bool = False) -> dict:
        """A new AWS Organizations organisation: {"organization_id", "root_id", "ous": {path: ID}, "accounts"}."""
        return self.post("organization", {"management_account": management_account, "ous": ous or [], "accounts": accounts,
                                          "delegated_admins": delegated_admins or [], "replace": replace})

    def add_org_accounts(self, accounts: list[dict], ous: list[dict] | None = None) -> dict:
        return self.post("organization/accounts", {"accounts": accounts, "ous": ous or []})

    def org_account_state(self, account_id: str, state: str) -> dict:
        return self.post("organization/account_state", {"id": account_id, "state": state})

    def remove_org_account(self, account_id: str) -> None:
        self.post("organization/remove", {"id": account_id})

    def org_tags(self, resource_id: str, tags: dict[str, str]) -> None:
        self.post("organization/tags", {"id": resource_id, "tags": tags})

    def stop(self) -> None:
        terminate(self.proc, 10)


@pytest.fixture()
def aws() -> Iterator[AwsServer]:
    """A fresh test server per test: moto's data cannot be cleared over the API."""
    server = AwsServer()
    try:
        yield server
    finally:
        server.stop()


SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        assert m, f"unparseable exposition line: {line!r}"
        labels = dict(LABEL_RE.findall(m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


class Endpoint:
    """What a test reads from a running exporter at `url`, wherever the process runs."""

    url: str
    # Extra arguments for every request: verify (a CA file) and cert for TLS, auth.
    http: dict[str, Any] = {}

    def get(self, path: str, timeout: float = 5) -> requests.Response:
        return requests.get(f"{self.url}{path}", timeout=timeout, **self.http)

    def ready(self) -> bool:
        return self.get("/readyz", timeout=2).status_code == 200

    def wait_ready(self, timeout: float = 60) -> None:
        wait_until(self.ready, timeout, "/readyz to answer 200")

    def scrape(self) -> str:
        r = self.get("/metrics")
        r.raise_for_status()
        return r.text

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        return parse_metrics(self.scrape())

    def value(self, name: str, **labels: str) -> float | None:
        """The one sample of `name` whose labels include `labels`; None if absent."""
        found = [v for n, l, v in self.samples() if n == name and all(l.get(k) == x for k, x in labels.items())]
        assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples"
        return found[0] if found else None


class Exporter(Endpoint):
    def __init__(
        self,
        binary: str,
        aws: AwsServer,
        config: dict | None,
        extra_args: list[str] | None = None,
        env: dict | None = None,
        scheme: str = "http",
        http: dict[str, Any] | None = None,
    ):
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.http = http or {}
        self.tmp = tempfile.TemporaryDirectory()
        args = [str(BIN_DIR / binary), f"--web.listen-address=127.0.0.1:{self.port}", *(extra_args or [])]
        if config is not None:
            path = Path(self.tmp.name) / "config.yml"
            path.write_text(yaml.safe_dump(config))
            args.append(f"--config.file={path}")
        self.log_path = Path(self.tmp.name) / "exporter.log"
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, env={**aws_env(aws), **(env or {})}, stdout=self.log_file, stderr=subprocess.STDOUT)
        wait_until(self.healthy, 30, f"{binary} to serve /healthz")

    def healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"exporter exited with {self.proc.returncode}: {self.logs()}")
        return self.get("/healthz", timeout=2).status_code == 200

    def logs(self) -> str:
        self.log_file.flush()
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.log_file.closed:
            return self.proc.returncode
        terminate(self.proc, 10)
        self.log_file.close()
        self.final_logs = self.log_path.read_text()
        self.tmp.cleanup()
        return self.proc.returncode


def aws_env(aws: AwsServer) -> dict[str, str]:
    """The standard AWS environment pointed at the test server, and nothing of ours."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {
        **keep,
        "AWS_ENDPOINT_URL": aws.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "eu-west-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }


@pytest.fixture()
def exporter(aws: AwsServer):
    started: list[Exporter] = []

    def start(binary: str, config: dict | None = None, **kw: Any) -> Exporter:
        e = Exporter(binary, aws, config, **kw)
        started.append(e)
        return e

    yield start
    for e in started:
        e.stop()


def pages(n: int, size: int = 50) -> int:
    """DescribeParameters calls for n parameters: at least one call even for none."""
    return max(1, math.ceil(n / size))


def fast_retries() -> dict:
    """Retries with short backoff, so fault tests finish in seconds."""
    return {"max_attempts": 5, "initial_backoff": "20ms", "attempt_timeout": "10s"}
