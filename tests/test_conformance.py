"""What ../shared/DESIGN.md promises of every exporter, checked against each exporter
binary of the workspace (tests/exporters.py) over real sockets.

What differs between exporters is in PROFILES alone: adding an exporter crate makes
test_every_exporter_has_a_profile fail until it has its entry there, and then every
check below runs against it too.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from dataclasses import dataclass, field
from typing import Callable

import boto3
import pytest
import requests

from conftest import ACCOUNT_A, ACCOUNT_B, BIN_DIR, ROLE_B, AwsServer, fast_retries, free_port, parse_metrics, promtool, wait_until
from exporters import EXPORTERS, Exporter

REGION = "eu-west-1"


@dataclass(frozen=True)
class Profile:
    """How to exercise one exporter: a little data, the AWS operation its refresh
    depends on, and the collector and quota where the result shows."""

    service_code: str
    # Seeds `n` units of the quota for an account in REGION; usage must then be `n`.
    seed: Callable[[AwsServer, str, int], None]
    quota_code: str
    # The collectors that call `operation`; the first one reports `quota_code`.
    collectors: tuple[str, ...]
    operation: str
    aws_region: str = REGION  # the aws_region label of quota_code's samples
    # The fault that AWS throttling looks like for `operation`.
    throttle: dict = field(default_factory=lambda: {"code": "ThrottlingException"})
    # The service_code of its request counters, when it is not the data's.
    api_service: str | None = None

    @property
    def counted_as(self) -> str:
        return self.api_service or self.service_code

    @property
    def collector(self) -> str:
        return self.collectors[0]


PROFILES: dict[str, Profile] = {
    "ssm": Profile(
        service_code="ssm",
        seed=lambda aws, account, n: aws.seed_ssm(REGION, n, 0, account=account),
        quota_code="standard_parameters",
        collectors=("ssm_parameters",),
        operation="DescribeParameters",
    ),
    "ecr": Profile(
        service_code="ecr",
        seed=lambda aws, account, n: aws.seed_ecr(REGION, {}, empty=n, account=account),
        quota_code="L-CFEB8E8D",  # registered repositories
        collectors=("ecr_repositories", "ecr_images"),
        operation="DescribeRepositories",
    ),
    "s3": Profile(
        service_code="s3",
        seed=lambda aws, account, n: aws.seed_s3(buckets={REGION: n}, account=account),
        quota_code="L-DC2B2D3D",  # general purpose buckets, per account
        collectors=("s3_buckets",),
        operation="ListBuckets",
        aws_region="global",
        # S3 throttles with SlowDown and 503 (not ThrottlingException).
        throttle={"code": "SlowDown", "status": 503},
    ),
    "servicequotas": Profile(
        service_code="ec2",
        seed=lambda aws, account, n: aws.post("seed_quotas", {"account": account, "region": REGION, "replace": True, "quotas": [{
            "service_code": "ec2", "service_name": "Amazon EC2", "quota_code": "L-0263D0A3", "quota_name": "EC2-VPC Elastic IPs",
            "default": 5, "applied": 100, "adjustable": True, "usage": n,
        }]}),
        quota_code="L-0263D0A3",
        collectors=("servicequotas",),
        operation="StartQuotaUtilizationReport",
        throttle={"code": "TooManyRequestsException"},
        api_service="servicequotas",
    ),
}

# What each account holds in the tests with two accounts.
N_A, N_B = 3, 2

DATA_LABELS = {"account_id", "aws_region", "service_code", "quota_code", "quota_name", "resource"}
# DESIGN.md's metrics: name -> (type, labels). All of them are present once a refresh
# has finished and one AWS request has failed.
METRICS = {
    "aws_quota_usage": ("gauge", DATA_LABELS),
    "aws_quota_limit": ("gauge", DATA_LABELS),
    "aws_quota_info": ("gauge", DATA_LABELS | {"limit_source", "adjustable"}),
    "aws_quota_exporter_collector_success": ("gauge", {"collector", "account_id", "aws_region"}),
    "aws_quota_exporter_collector_duration_seconds": ("gauge", {"collector", "account_id", "aws_region"}),
    "aws_quota_exporter_collector_last_success_timestamp_seconds": ("gauge", {"collector", "account_id", "aws_region"}),
    "aws_quota_exporter_aws_requests_total": ("counter", {"service_code", "operation"}),
    "aws_quota_exporter_aws_request_errors_total": ("counter", {"service_code", "operation", "error_code"}),
    "aws_quota_exporter_build_info": ("gauge", {"version", "revision"}),
}


def profile(exp: Exporter) -> Profile:
    if exp.short not in PROFILES:
        pytest.fail(f"exporter {exp.binary} ({exp.crate_dir}) has no entry in PROFILES of tests/test_conformance.py")
    return PROFILES[exp.short]


def config(p: Profile, accounts: list[dict] | None = None, **settings) -> dict:
    """One region, the profile's collectors at a high rate limit plus `settings`."""
    return {
        "accounts": accounts or [{}],
        "regions": [REGION],
        "collectors": {c: {"rate_limit": 1000, **settings} for c in p.collectors},
        "aws": fast_retries(),
    }


def usage(e, p: Profile, account: str = ACCOUNT_A) -> float | None:
    return e.value("aws_quota_usage", account_id=account, aws_region=p.aws_region, quota_code=p.quota_code)


def success(e, p: Profile, account: str = ACCOUNT_A) -> float | None:
    return e.value("aws_quota_exporter_collector_success", collector=p.collector, account_id=account, aws_region=p.aws_region)


def requests_total(e, p: Profile) -> float:
    return e.value("aws_quota_exporter_aws_requests_total", service_code=p.counted_as, operation=p.operation) or 0


each_exporter = pytest.mark.parametrize("exp", EXPORTERS, ids=str)


def test_every_exporter_has_a_profile():
    """Every exporter of the workspace is covered here, and no profile is left over."""
    shorts = {e.short for e in EXPORTERS}
    missing = [f"{e.binary} ({e.crate_dir})" for e in EXPORTERS if e.short not in PROFILES]
    assert not missing, f"add an entry to PROFILES in tests/test_conformance.py for: {', '.join(missing)}"
    stale = sorted(set(PROFILES) - shorts)
    assert not stale, f"PROFILES has entries for exporters the workspace no longer has: {stale}"


@each_exporter
def test_readyz_waits_for_the_first_refresh_and_the_landing_page_links_to_metrics(aws, exporter, exp):
    """/readyz is 503 until the first refresh is done, then 200; /healthz is 200
    throughout; / names the binary and links to /metrics."""
    p = profile(exp)
    p.seed(aws, ACCOUNT_A, N_A)
    aws.fault(operation=p.operation, latency_ms=3000, times=1)
    e = exporter(exp.binary, config(p))
    assert requests.get(f"{e.url}/readyz", timeout=2).status_code == 503
    assert requests.get(f"{e.url}/healthz", timeout=2).status_code == 200
    assert usage(e, p) is None
    e.wait_ready(timeout=30)
    assert usage(e, p) == N_A
    assert requests.get(f"{e.url}/healthz", timeout=2).status_code == 200
    r = requests.get(f"{e.url}/", timeout=2)
    assert r.status_code == 200 and exp.binary in r.text and 'href="/metrics"' in r.text, r.text


@each_exporter
def test_a_scrape_never_calls_aws(aws, exporter, exp):
    """Fifty scrapes change neither the request counter nor the server's request log."""
    p = profile(exp)
    p.seed(aws, ACCOUNT_A, N_A)
    e = exporter(exp.binary, config(p))
    e.wait_ready()
    counted = [(n, l, v) for n, l, v in e.samples() if n == "aws_quota_exporter_aws_requests_total"]
    seen = len(aws.log())
    assert counted and seen
    for _ in range(50):
        e.scrape()
    assert [(n, l, v) for n, l, v in e.samples() if n == "aws_quota_exporter_aws_requests_total"] == counted
    assert len(aws.log()) == seen


def bad_configs(p: Profile) -> dict[str, tuple[str, str]]:
    """name -> (config file text, the key the error must name)."""
    c = p.collector
    return {
        "unknown-key": ("regions: [eu-west-1]\nno_such_key: 1\n", "no_such_key"),
        "bad-value": (f"collectors:\n  {c}:\n    refresh_interval: soon\n", f"collectors.{c}.refresh_interval"),
        "unknown-collector": ("collectors:\n  no_such_collector: {}\n", "collectors.no_such_collector"),
    }


@each_exporter
@pytest.mark.parametrize("bad", ["unknown-key", "bad-value", "unknown-collector"])
@pytest.mark.parametrize("mode", ["config-check", "start"])
def test_a_bad_config_is_refused(tmp_path, exp, bad, mode):
    """A bad config stops the exporter with a non-zero exit and an error that names the
    file and the key, with --config.check and on a normal start alike."""
    text, key = bad_configs(profile(exp))[bad]
    path = tmp_path / "config.yml"
    path.write_text(text)
    args = [str(BIN_DIR / exp.binary), f"--config.file={path}", f"--web.listen-address=127.0.0.1:{free_port()}"]
    if mode == "config-check":
        args.append("--config.check")
    # Nothing AWS is reachable: a config that were accepted could not do harm.
    env = {"PATH": "/usr/bin:/bin", "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"}
    r = subprocess.run(args, capture_output=True, text=True, timeout=20, env=env)
    assert r.returncode != 0, f"{exp.binary} accepted {text!r}: {r.stdout}{r.stderr}"
    assert str(path) in r.stderr and key in r.stderr, f"{exp.binary}: the error must name {path} and {key}: {r.stderr}"


def failure_logs(logs: str) -> list[tuple[str, str]]:
    """(collector, account_id) of every 'collector failed' log line (its region is left
    out: the S3 buckets collector logs us-east-1 where its metrics say global)."""
    out = []
    for line in logs.splitlines():
        if "collector failed" in line:
            fields = dict(re.findall(r'(\w+)=("[^"]*"|\S+)', line))
            out.append((fields.get("collector", "").strip('"'), fields.get("account_id", "").strip('"')))
    return out


@each_exporter
def test_a_denied_target_fails_alone_and_its_samples_go_stale(aws, exporter, exp):
    """Denied for one account after a good refresh: that account's success goes to 0,
    its last samples stay until max_staleness and then go, it is logged once, and the
    other account stays exact and healthy."""
    p = profile(exp)
    p.seed(aws, ACCOUNT_A, N_A)
    p.seed(aws, ACCOUNT_B, N_B)
    cfg = config(p, accounts=[{}, {"role_arn": ROLE_B}], refresh_interval="1s", timeout="1s", max_staleness="4s")
    e = exporter(exp.binary, cfg)
    e.wait_ready()
    wait_until(lambda: usage(e, p, ACCOUNT_B) == N_B, 10, "account B counted")
    aws.fault(operation=p.operation, account=ACCOUNT_B, code="AccessDeniedException")
    wait_until(lambda: success(e, p, ACCOUNT_B) == 0, 10, "account B marked failed")
    assert usage(e, p, ACCOUNT_B) == N_B, "the last good samples must stay until max_staleness"
    wait_until(lambda: usage(e, p, ACCOUNT_B) is None, 15, "account B's samples dropped after max_staleness")
    # A refresh or two later, account A is still exact and healthy.
    time_a = e.value("aws_quota_exporter_collector_last_success_timestamp_seconds", collector=p.collector, account_id=ACCOUNT_A)
    wait_until(
        lambda: e.value("aws_quota_exporter_collector_last_success_timestamp_seconds", collector=p.collector, account_id=ACCOUNT_A) > time_a,
        10, "account A refreshed again",
    )
    assert usage(e, p, ACCOUNT_A) == N_A and success(e, p, ACCOUNT_A) == 1
    failures = failure_logs(e.logs())
    assert (p.collector, ACCOUNT_B) in failures, e.logs()
    assert {f[1] for f in failures} == {ACCOUNT_B} and len(failures) == len(set(failures)), f"not logged once per target: {failures}"


@each_exporter
def test_throttling_is_retried_and_counted(aws, exporter, exp):
    """Two throttled calls are retried: the value is exact, the collector healthy, both
    throttles counted under their AWS error code, and every attempt counted."""
    p = profile(exp)
    p.seed(aws, ACCOUNT_A, N_A)
    aws.fault(operation=p.operation, times=2, **p.throttle)
    e = exporter(exp.binary, config(p))
    e.wait_ready()
    assert usage(e, p) == N_A
    assert success(e, p) == 1
    errors = e.value("aws_quota_exporter_aws_request_errors_total", service_code=p.counted_as, operation=p.operation, error_code=p.throttle["code"])
    assert errors == 2
    assert requests_total(e, p) == len([r for r in aws.log() if r["operation"] == p.operation])


@each_exporter
def test_sigterm_stops_promptly_and_cleanly(aws, exporter, exp):
    """SIGTERM: exit status 0 within 5 s, and the log says so."""
    p = profile(exp)
    p.seed(aws, ACCOUNT_A, N_A)
    e = exporter(exp.binary, config(p))
    e.wait_ready()
    e.proc.send_signal(signal.SIGTERM)
    try:
        code = e.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{exp.binary} still runs 5 s after SIGTERM")
    assert code == 0, f"{exp.binary} exited with {code} on SIGTERM"
    e.stop()
    assert "SIGTERM received" in e.final_logs, e.final_logs


def families(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """(HELP text, TYPE) by metric name."""
    helps = dict(re.findall(r"^# HELP (\S+) (.*)$", text, re.M))
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    return helps, types


@each_exporter
def test_the_exposition_is_clean_and_follows_the_design(aws, exporter, exp):
    """promtool finds nothing wrong; every DESIGN.md metric has HELP and TYPE, its
    type and exactly its labels; the data metrics' HELP says how often they are
    refreshed; no sample has a timestamp."""
    p = profile(exp)
    p.seed(aws, ACCOUNT_A, N_A)
    # One throttled call, retried, so that the error counter has a sample.
    aws.fault(operation=p.operation, times=1, **p.throttle)
    e = exporter(exp.binary, config(p))
    e.wait_ready()
    text = e.scrape()
    r = promtool("check", "metrics", input=text)
    assert r.returncode == 0, f"promtool check metrics on {exp.binary}: {r.stdout}{r.stderr}"
    helps, types = families(text)
    samples = parse_metrics(text)  # refuses a sample line with a timestamp
    for name, (kind, labels) in METRICS.items():
        assert name in helps and types.get(name) == kind, f"{exp.binary}: {name} needs HELP and TYPE {kind}: {helps.get(name)!r} {types.get(name)!r}"
        found = [l for n, l, _ in samples if n == name]
        assert found, f"{exp.binary}: no {name} sample"
        assert all(set(l) == labels for l in found), f"{exp.binary}: {name} has labels {[sorted(l) for l in found]}, DESIGN.md says {sorted(labels)}"
    for name in ("aws_quota_usage", "aws_quota_limit", "aws_quota_info"):
        assert re.search(r"refreshed in the background every \d+[smh]", helps[name], re.I), f"{exp.binary}: {name} HELP: {helps[name]!r}"
    assert {l["service_code"] for n, l, _ in samples if n == "aws_quota_usage"} == {p.service_code}


# Shapes of AWS credentials as the test server (moto) hands them out from AssumeRole,
# and as AWS does: a 40-character secret key, a temporary access key ID, and a session
# token (moto's start with FQoGZXIvYXdzEBYaD, AWS's with FwoG or IQoJ; all are long
# base64).
SECRET_SHAPE = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{40}(?![A-Za-z0-9+/=])")
KEY_ID_SHAPE = re.compile(r"\bASIA[A-Z0-9]{16}\b")
TOKEN_SHAPE = re.compile(r"FQoGZXIvYXdz|FwoGZXIvYXdz|IQoJb3JpZ2lu|[A-Za-z0-9+/]{100,}")


def credential_shapes(text: str) -> list[str]:
    return [m.group(0) for shape in (SECRET_SHAPE, KEY_ID_SHAPE, TOKEN_SHAPE) for m in shape.finditer(text)]


def test_the_credential_shapes_match_what_the_test_server_hands_out(aws):
    """The log check below can fail: its shapes find real assumed-role credentials."""
    sts = boto3.client("sts", region_name=REGION, endpoint_url=aws.url, aws_access_key_id="testing", aws_secret_access_key="testing")
    creds = sts.assume_role(RoleArn=ROLE_B, RoleSessionName="shape-check", ExternalId="shape-check")["Credentials"]
    for key in ("AccessKeyId", "SecretAccessKey", "SessionToken"):
        assert credential_shapes(f'msg="x" value={creds[key]} next=1'), f"{key} {creds[key]!r} escapes the shapes"


@each_exporter
def test_credentials_are_never_logged(aws, exporter, exp):
    """At debug level in JSON, with an assumed role and an external ID: neither the
    given credentials and external ID nor anything shaped like an AWS secret key,
    temporary key ID or session token appears in the logs."""
    p = profile(exp)
    p.seed(aws, ACCOUNT_A, N_A)
    p.seed(aws, ACCOUNT_B, N_B)
    secret, key_id, external_id = "Zq8SECRETnotForLogs/00000000000000000000", "AKIADONOTLOGTHISKEY1", "ext-id-do-not-log"
    e = exporter(
        exp.binary,
        config(p, accounts=[{}, {"role_arn": ROLE_B, "external_id": external_id}]),
        extra_args=["--log.level=debug", "--log.format=json"],
        env={"AWS_SECRET_ACCESS_KEY": secret, "AWS_ACCESS_KEY_ID": key_id},
    )
    e.wait_ready()
    assert usage(e, p, ACCOUNT_B) == N_B, "the role was assumed"
    logs = e.logs()
    records = [json.loads(line) for line in logs.splitlines() if line.strip()]
    assert any(r.get("level") == "DEBUG" for r in records), "no debug records: the check would see little"
    for needle in (secret, key_id, external_id):
        assert needle not in logs, f"{exp.binary} logged {needle!r}"
    assert credential_shapes(logs) == [], f"{exp.binary} logged something shaped like a credential"


@pytest.mark.parametrize("exp", EXPORTERS, ids=str)
def test_gzip_when_asked_and_plain_text_otherwise(aws, exporter, exp: Exporter):
    """`Accept-Encoding: gzip` gets the same exposition gzipped (one gzip member, as
    Prometheus sends and reads it); a client that does not ask gets plain text."""
    import gzip

    p = profile(exp)
    p.seed(aws, ACCOUNT_A, N_A)
    e = exporter(exp.binary, config(p))
    e.wait_ready()
    plain = requests.get(f"{e.url}/metrics", headers={"Accept-Encoding": "identity"}, timeout=5)
    zipped = requests.get(f"{e.url}/metrics", headers={"Accept-Encoding": "gzip"}, timeout=5, stream=True)
    raw = zipped.raw.read(decode_content=False)
    assert "Content-Encoding" not in plain.headers and plain.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert zipped.headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in zipped.headers["Vary"]
    assert int(zipped.headers["Content-Length"]) == len(raw) and int(plain.headers["Content-Length"]) == len(plain.content)
    assert gzip.decompress(raw).decode() == plain.text
    assert len(raw) < len(plain.content)
    refused = requests.get(f"{e.url}/metrics", headers={"Accept-Encoding": "gzip;q=0"}, timeout=5)
    assert "Content-Encoding" not in refused.headers
