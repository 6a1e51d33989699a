"""Golden exposition: the exporter's whole /metrics output against a committed file,
and `promtool check metrics` clean on it (as node_exporter does)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from conftest import ACCOUNT_A, ACCOUNT_B, ROLE_B, promtool

GOLDEN = Path(__file__).parent / "golden"

# Values that differ from run to run, replaced before comparing.
VOLATILE = [
    (re.compile(r'^(aws_quota_exporter_collector_(?:duration_seconds|last_success_timestamp_seconds)\{.*\}) \S+$', re.M), r"\1 <volatile>"),
    (re.compile(r'^(aws_quota_exporter_config_last_reload_success_timestamp_seconds) \S+$', re.M), r"\1 <volatile>"),
    (re.compile(r'revision="[^"]*"'), 'revision="<revision>"'),
]


def normalise(text: str) -> str:
    for pattern, repl in VOLATILE:
        text = pattern.sub(repl, text)
    return text


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    got = normalise(text)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        # `make golden`: write, and compare with nothing (scripts/test.sh unsets it).
        path.write_text(got)
        return
    want = path.read_text() if path.exists() else ""
    assert got == want, f"exposition differs from {path}; if intended, run `make golden` and review the diff"


def promtool_check(text: str) -> None:
    r = promtool("check", "metrics", input=text)
    assert r.returncode == 0, f"promtool check metrics: {r.stdout}{r.stderr}"


def test_ssm_exposition_matches_golden_file(aws, exporter):
    aws.seed_ssm("eu-west-1", 1234, 56)
    aws.seed_ssm("us-east-1", 0, 3)
    aws.seed_ssm("eu-west-1", 9_876, 0, account=ACCOUNT_B)
    config = {
        "accounts": [{}, {"role_arn": ROLE_B, "limit_overrides": {"standard_parameters": 9_900},
                          "name": "prod \"payments\"", "tags": {"team": "payments", "cost-center": "cc-42", "unused": "x"}}],
        "account_tags": ["team", "cost-center"],
        "regions": ["eu-west-1", "us-east-1"],
        "collectors": {"ssm_parameters": {"rate_limit": 100}},
    }
    e = exporter("ssm_quota_exporter", config)
    e.wait_ready()
    text = e.scrape()
    promtool_check(text)
    check_golden("ssm_quota_exporter.prom", text)


def test_ecr_exposition_matches_golden_file(aws, exporter):
    aws.seed_ecr("eu-west-1", {"team/app": {"images": 120, "tags_per_image": 2, "untagged": 30, "archived": 5}, "team/web": {"images": 3}}, empty=2)
    aws.quota("eu-west-1", "ecr", "L-03A36CE1", applied=10_000, default=10_000, resources={"arn:aws:ecr:eu-west-1:123456789012:repository/team/app": 160})
    aws.quota("eu-west-1", "ecr", "L-CFEB8E8D", applied=100_000, default=100_000)
    e = exporter("ecr_quota_exporter", {"regions": ["eu-west-1"]})
    e.wait_ready()
    text = e.scrape()
    promtool_check(text)
    check_golden("ecr_quota_exporter.prom", text)


def test_s3_exposition_matches_golden_file(aws, exporter):
    aws.seed_s3(buckets={"eu-west-1": 40, "us-east-1": 2}, directory_buckets={"eu-west-1": 3}, access_points={"eu-west-1": [5, 1]})
    aws.quota("us-east-1", "s3", "L-DC2B2D3D", applied=50, default=10_000)
    e = exporter("s3_quota_exporter", {"regions": ["eu-west-1", "us-east-1"]})
    e.wait_ready()
    text = e.scrape()
    promtool_check(text)
    check_golden("s3_quota_exporter.prom", text)


def test_servicequotas_exposition_matches_golden_file(aws, exporter):
    def quota(service: str, code: str, name: str, usage: float, applied: float | None, default: float, **kw) -> dict:
        q = {"service_code": service, "service_name": service, "quota_code": code, "quota_name": name, "default": default, "adjustable": True, "usage": usage, **kw}
        return q if applied is None else {**q, "applied": applied}

    aws.post("seed_quotas", {"account": ACCOUNT_A, "region": "eu-west-1", "quotas": [
        quota("ec2", "L-1216C47A", "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances", 576, 640, 5),
        quota("ec2", "L-0263D0A3", "EC2-VPC Elastic IPs", 3, None, 5),
        quota("elasticloadbalancing", "L-53DA6B97", "Application Load Balancers per Region", 1, 3, 50, adjustable=False),
    ]})
    aws.post("seed_quotas", {"account": ACCOUNT_A, "region": "us-east-1", "quotas": [
        quota("lambda", "L-B99A9384", "Concurrent executions", 250, 1000, 1000),
        quota("iam", "L-FE177D64", "Roles per account", 250, None, 1000, **{"global": True}),
    ]})
    e = exporter("servicequotas_exporter", {"regions": ["eu-west-1", "us-east-1"]})
    e.wait_ready()
    text = e.scrape()
    promtool_check(text)
    check_golden("servicequotas_exporter.prom", text)
