"""servicequotas_exporter against the local AWS test server: every metered quota from the
Service Quotas quota utilization report, exactly, in two accounts and two regions."""

from __future__ import annotations

import math
import sys
from typing import Any

from conftest import ACCOUNT_A, ACCOUNT_B, ROLE_B, ROOT, fast_retries, wait_until

sys.path.insert(0, str(ROOT))
from testserver.headroom_aws import generate_quotas  # noqa: E402

BIN = "servicequotas_exporter"
REGIONS = ["eu-west-1", "us-east-1"]


def quota(service: str, code: str, name: str, usage: float, applied: float | None, default: float, **kw: Any) -> dict:
    q = {"service_code": service, "service_name": service.upper(), "quota_code": code, "quota_name": name,
         "default": default, "adjustable": True, "global": False, "usage": usage, **kw}
    if applied is not None:
        q["applied"] = applied
    return q


EC2 = quota("ec2", "L-1216C47A", "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances", 576, 640, 5)
EIP = quota("ec2", "L-0263D0A3", "EC2-VPC Elastic IPs", 3, None, 5)
LAMBDA = quota("lambda", "L-B99A9384", "Concurrent executions", 250, 1000, 1000)
VPC = quota("vpc", "L-F678F1CE", "VPCs per Region", 4, 5, 5)
# Reads as a fraction of its limit: 1 of 3 is 33.333…%.
ELB = quota("elasticloadbalancing", "L-53DA6B97", "Application Load Balancers per Region", 1, 3, 50)
IAM = quota("iam", "L-FE177D64", "Roles per account", 250, None, 1000, **{"global": True})
# No usage metric: not in the report, not exported.
NO_USAGE = {"service_code": "ssm", "quota_code": "L-BCC42A41", "quota_name": "Standard parameter size", "default": 4}


def seed(aws, quotas: list[dict], region: str, account: str = ACCOUNT_A, **kw: Any) -> None:
    aws.post("seed_quotas", {"account": account, "region": region, "quotas": quotas, **kw})


def config(**collector: Any) -> dict:
    fast = {"refresh_interval": "1m", "timeout": "30s", "max_staleness": "2m", **collector}
    return {
        "accounts": [{}, {"role_arn": ROLE_B}],
        "regions": REGIONS,
        "collectors": {"servicequotas": fast, "servicequotas_global": dict(fast)},
        "aws": fast_retries(),
    }


def series(e, name: str, **labels: str) -> dict[tuple, float]:
    return {
        (l["account_id"], l["aws_region"], l["service_code"], l["quota_code"]): v
        for n, l, v in e.samples()
        if n == name and all(l.get(k) == x for k, x in labels.items())
    }


def test_every_metered_quota_exactly_in_two_accounts_and_two_regions(aws, exporter):
    seed(aws, [EC2, EIP, LAMBDA, ELB, NO_USAGE], "eu-west-1")
    seed(aws, [VPC, {**LAMBDA, "usage": 10}], "us-east-1")
    seed(aws, [IAM], "us-east-1")
    seed(aws, [{**EC2, "usage": 12, "applied": 32}, VPC], "eu-west-1", account=ACCOUNT_B)
    seed(aws, [{**IAM, "usage": 7}], "us-east-1", account=ACCOUNT_B)
    e = exporter(BIN, config())
    e.wait_ready(timeout=90)
    usage = series(e, "aws_quota_usage")
    assert usage == {
        (ACCOUNT_A, "eu-west-1", "ec2", "L-1216C47A"): 576,
        (ACCOUNT_A, "eu-west-1", "ec2", "L-0263D0A3"): 3,
        (ACCOUNT_A, "eu-west-1", "lambda", "L-B99A9384"): 250,
        (ACCOUNT_A, "eu-west-1", "elasticloadbalancing", "L-53DA6B97"): 1,
        (ACCOUNT_A, "us-east-1", "vpc", "L-F678F1CE"): 4,
        (ACCOUNT_A, "us-east-1", "lambda", "L-B99A9384"): 10,
        (ACCOUNT_A, "global", "iam", "L-FE177D64"): 250,
        (ACCOUNT_B, "eu-west-1", "ec2", "L-1216C47A"): 12,
        (ACCOUNT_B, "eu-west-1", "vpc", "L-F678F1CE"): 4,
        (ACCOUNT_B, "global", "iam", "L-FE177D64"): 7,
    }
    limit = series(e, "aws_quota_limit")
    assert limit[(ACCOUNT_A, "eu-west-1", "ec2", "L-1216C47A")] == 640
    # No applied value: the default is in force.
    assert limit[(ACCOUNT_A, "eu-west-1", "ec2", "L-0263D0A3")] == 5
    assert limit[(ACCOUNT_B, "eu-west-1", "ec2", "L-1216C47A")] == 32
    assert limit[(ACCOUNT_A, "global", "iam", "L-FE177D64")] == 1000
    infos = [l for n, l, _ in e.samples() if n == "aws_quota_info"]
    assert len(infos) == len(usage)
    assert {l["limit_source"] for l in infos} == {"service"}
    ec2 = next(l for l in infos if l["quota_code"] == "L-1216C47A" and l["account_id"] == ACCOUNT_A)
    assert ec2["quota_name"] == EC2["quota_name"] and ec2["resource"] == "" and ec2["adjustable"] == "true"
    # One report per account and region, plus one in the global quotas' home region.
    starts = [r for r in aws.log() if r["operation"] == "StartQuotaUtilizationReport"]
    assert sorted((r["account"], r["region"]) for r in starts) == sorted(
        [(a, r) for a in (ACCOUNT_A, ACCOUNT_B) for r in REGIONS] + [(ACCOUNT_A, "us-east-1"), (ACCOUNT_B, "us-east-1")]
    )


def test_calls_follow_the_page_arithmetic(aws, exporter):
    # 2,500 quotas with usage in one region: three pages of at most 1,000.
    quotas = generate_quotas(2_600, 5, no_usage_every=26)
    with_usage = [q for q in quotas if q.get("usage") is not None and (q.get("applied") or q["default"]) > 0]
    seed(aws, quotas, "eu-west-1")
    cfg = config()
    cfg["accounts"] = [{}]
    cfg["regions"] = ["eu-west-1"]
    cfg["collectors"]["servicequotas_global"] = {"enabled": False}
    aws.post("report_behaviour", {"account": ACCOUNT_A, "region": "eu-west-1", "pending_polls": 2, "in_progress_polls": 1})
    e = exporter(BIN, cfg)
    e.wait_ready(timeout=90)
    got = series(e, "aws_quota_usage")
    assert len(got) == len(with_usage)
    for q in with_usage:
        assert got[(ACCOUNT_A, "eu-west-1", q["service_code"], q["quota_code"])] == round(q["usage"], 4), q
    log = aws.log()
    gets = [r for r in log if r["operation"] == "GetQuotaUtilizationReport"]
    # 2 pending + 1 in progress + the completed first page, then pages 2 and 3.
    assert len(gets) == 3 + math.ceil(len(with_usage) / 1000)
    assert len([r for r in log if r["operation"] == "StartQuotaUtilizationReport"]) == 1


def test_a_failed_or_stuck_report_fails_the_collector_and_keeps_the_last_samples(aws, exporter):
    seed(aws, [EC2], "eu-west-1")
    cfg = config(refresh_interval="3s", timeout="3s", max_staleness="1m")
    cfg["accounts"] = [{}]
    cfg["regions"] = ["eu-west-1"]
    cfg["collectors"]["servicequotas_global"] = {"enabled": False}
    e = exporter(BIN, cfg)
    e.wait_ready(timeout=60)
    key = (ACCOUNT_A, "eu-west-1", "ec2", "L-1216C47A")
    assert series(e, "aws_quota_usage")[key] == 576
    success = lambda: e.value("aws_quota_exporter_collector_success", collector="servicequotas", aws_region="eu-west-1")  # noqa: E731

    aws.post("report_behaviour", {"account": ACCOUNT_A, "region": "eu-west-1", "fail": True, "error_code": "ReportGenerationFailed"})
    wait_until(lambda: success() == 0, 30, "the failed report to fail the collector")
    assert series(e, "aws_quota_usage")[key] == 576, "the last good samples stay"
    assert "report_failed" in e.logs() and "ReportGenerationFailed" in e.logs()

    aws.post("report_behaviour", {"account": ACCOUNT_A, "region": "eu-west-1"})
    wait_until(lambda: success() == 1, 30, "recovery")
    aws.post("report_behaviour", {"account": ACCOUNT_A, "region": "eu-west-1", "stuck": True})
    wait_until(lambda: success() == 0, 30, "a stuck report to time out")
    assert "refresh took longer than 3s" in e.logs()
    assert series(e, "aws_quota_usage")[key] == 576


def test_filters_and_min_usage_ratio(aws, exporter):
    seed(aws, [EC2, EIP, LAMBDA, ELB], "eu-west-1")
    cfg = config(
        services={"exclude": ["lambda"]},
        quotas={"exclude": ["L-0263D0A3"]},
        min_usage_ratio=0.5,
    )
    cfg["accounts"] = [{}]
    cfg["regions"] = ["eu-west-1"]
    cfg["collectors"]["servicequotas_global"] = {"enabled": False}
    e = exporter(BIN, cfg)
    e.wait_ready(timeout=60)
    # EC2 at 90 % stays; the EIPs and Lambda are filtered out; the ALBs (33 %) are under
    # the ratio.
    assert series(e, "aws_quota_usage") == {(ACCOUNT_A, "eu-west-1", "ec2", "L-1216C47A"): 576}


def test_a_limit_override_wins_over_the_reported_value(aws, exporter):
    seed(aws, [EC2, ELB], "eu-west-1")
    cfg = config(limit_overrides={"L-1216C47A": 1000})
    cfg["accounts"] = [{}]
    cfg["regions"] = ["eu-west-1"]
    cfg["collectors"]["servicequotas_global"] = {"enabled": False}
    e = exporter(BIN, cfg)
    e.wait_ready(timeout=60)
    limits = series(e, "aws_quota_limit")
    assert limits[(ACCOUNT_A, "eu-west-1", "ec2", "L-1216C47A")] == 1000
    assert limits[(ACCOUNT_A, "eu-west-1", "elasticloadbalancing", "L-53DA6B97")] == 3
    [info] = [l for n, l, _ in e.samples() if n == "aws_quota_info" and l["quota_code"] == "L-1216C47A"]
    assert info["limit_source"] == "override" and info["adjustable"] == "true"
