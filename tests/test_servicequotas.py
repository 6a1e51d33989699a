"""servicequotas_exporter against the local AWS test server: every metered quota, exactly,
in two accounts and two regions, from the Service Quotas quota utilization report and
from CloudWatch usage metrics."""

from __future__ import annotations

import math
import sys
from typing import Any

import pytest

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
# A rate quota whose usage metric is summed: 40 calls a second against 50.
RATE = quota("ssm", "L-F7F8A27B", "GetParameters request rate", 40, 50, 40,
             quota_period={"PeriodValue": 1, "PeriodUnit": "SECOND"},
             usage_metric={"MetricNamespace": "AWS/Usage", "MetricName": "CallCount",
                           "MetricDimensions": {"Service": "SSM", "Type": "API", "Resource": "GetParameters", "Class": "None"},
                           "MetricStatisticRecommendation": "Sum"})


def seed(aws, quotas: list[dict], region: str, account: str = ACCOUNT_A, **kw: Any) -> None:
    aws.post("seed_quotas", {"account": account, "region": region, "quotas": quotas, **kw})


def config(**collector: Any) -> dict:
    """Every quota (min_usage_ratio 0, not the default 0.01), so counts are exact."""
    fast = {"refresh_interval": "1m", "timeout": "30s", "max_staleness": "2m", "min_usage_ratio": 0, **collector}
    return {
        "accounts": [{}, {"role_arn": ROLE_B}],
        "regions": REGIONS,
        "collectors": {"servicequotas": fast, "servicequotas_global": dict(fast)},
        "aws": fast_retries(),
    }


def cloudwatch_config(**collector: Any) -> dict:
    """Both collectors read usage from CloudWatch."""
    return config(usage_source="cloudwatch", **collector)


def one_region(cfg: dict) -> dict:
    """The config for account A in eu-west-1 alone, without the global collector."""
    cfg["accounts"] = [{}]
    cfg["regions"] = ["eu-west-1"]
    cfg["collectors"]["servicequotas_global"] = {"enabled": False}
    return cfg


def calls(aws, operation: str, account: str | None = None) -> list[dict]:
    return [r for r in aws.log() if r["operation"] == operation and account in (None, r["account"])]


def series(e, name: str, **labels: str) -> dict[tuple, float]:
    return {
        (l["account_id"], l["aws_region"], l["service_code"], l["quota_code"]): v
        for n, l, v in e.samples()
        if n == name and all(l.get(k) == x for k, x in labels.items())
    }


@pytest.mark.parametrize("source", ["report", "cloudwatch"])
def test_every_metered_quota_exactly_in_two_accounts_and_two_regions(aws, exporter, source):
    seed(aws, [EC2, EIP, LAMBDA, ELB, NO_USAGE, RATE], "eu-west-1")
    seed(aws, [VPC, {**LAMBDA, "usage": 10}], "us-east-1")
    seed(aws, [IAM], "us-east-1")
    seed(aws, [{**EC2, "usage": 12, "applied": 32}, VPC], "eu-west-1", account=ACCOUNT_B)
    seed(aws, [{**IAM, "usage": 7}], "us-east-1", account=ACCOUNT_B)
    e = exporter(BIN, cloudwatch_config() if source == "cloudwatch" else config())
    e.wait_ready(timeout=90)
    usage = series(e, "aws_quota_usage")
    assert usage == {
        (ACCOUNT_A, "eu-west-1", "ec2", "L-1216C47A"): 576,
        (ACCOUNT_A, "eu-west-1", "ec2", "L-0263D0A3"): 3,
        (ACCOUNT_A, "eu-west-1", "lambda", "L-B99A9384"): 250,
        (ACCOUNT_A, "eu-west-1", "elasticloadbalancing", "L-53DA6B97"): 1,
        # 40 calls a second (CloudWatch: 2,400 in the minute, per second).
        (ACCOUNT_A, "eu-west-1", "ssm", "L-F7F8A27B"): 40,
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
    ec2 = next(l for l in infos if l["quota_code"] == "L-1216C47A" and l["account_id"] == ACCOUNT_A)
    assert ec2["quota_name"] == EC2["quota_name"] and ec2["resource"] == "" and ec2["adjustable"] == "true"
    sources = {(l["account_id"], l["quota_code"], l["aws_region"]): l["limit_source"] for l in infos}
    starts = sorted((r["account"], r["region"]) for r in calls(aws, "StartQuotaUtilizationReport"))
    gmd = sorted((r["account"], r["region"]) for r in calls(aws, "GetMetricData"))
    if source == "report":
        assert set(sources.values()) == {"service"}
        # One report per account and region, plus one in the global quotas' home region.
        assert starts == sorted(
            [(a, r) for a in (ACCOUNT_A, ACCOUNT_B) for r in REGIONS] + [(ACCOUNT_A, "us-east-1"), (ACCOUNT_B, "us-east-1")]
        )
        assert gmd == []
        return
    # Applied where the account has a value of its own, else the AWS default.
    assert sources[(ACCOUNT_A, "L-1216C47A", "eu-west-1")] == "applied"
    assert sources[(ACCOUNT_A, "L-0263D0A3", "eu-west-1")] == "default"
    assert sources[(ACCOUNT_A, "L-FE177D64", "global")] == "default"
    # No report; one GetMetricData per account and region with a metered quota, and per
    # account for the global quotas (B's us-east-1 holds only the global IAM quota, so
    # its regional refresh asks CloudWatch nothing).
    assert starts == []
    assert gmd == sorted([(ACCOUNT_A, "eu-west-1"), (ACCOUNT_A, "us-east-1"), (ACCOUNT_B, "eu-west-1")] + [(ACCOUNT_A, "us-east-1"), (ACCOUNT_B, "us-east-1")])
    # The global collector lists only the services of global quotas, never ListServices.
    assert len(calls(aws, "ListServices")) == 4


def test_calls_follow_the_page_arithmetic(aws, exporter):
    # 2,500 quotas with usage in one region: three pages of at most 1,000.
    quotas = generate_quotas(2_600, 5, no_usage_every=26)
    with_usage = [q for q in quotas if q.get("usage") is not None and (q.get("applied") or q["default"]) > 0]
    seed(aws, quotas, "eu-west-1")
    cfg = one_region(config())
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
    cfg = one_region(config(refresh_interval="3s", timeout="3s", max_staleness="1m"))
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


@pytest.mark.parametrize("source", ["report", "cloudwatch"])
def test_quotas_under_one_percent_are_left_out_by_default(aws, exporter, source):
    # Lambda at exactly 1 %, IAM roles at 0.7 %, the EIPs at 0 %.
    seed(aws, [{**LAMBDA, "usage": 10}, {**EIP, "usage": 0}, EC2], "eu-west-1")
    seed(aws, [{**IAM, "usage": 7}], "us-east-1")
    cfg = one_region(config(usage_source=source))
    del cfg["collectors"]["servicequotas"]["min_usage_ratio"]
    cfg["collectors"]["servicequotas_global"] = dict(cfg["collectors"]["servicequotas"])
    e = exporter(BIN, cfg)
    e.wait_ready(timeout=60)
    assert series(e, "aws_quota_usage") == {
        (ACCOUNT_A, "eu-west-1", "lambda", "L-B99A9384"): 10,
        (ACCOUNT_A, "eu-west-1", "ec2", "L-1216C47A"): 576,
    }
    assert series(e, "aws_quota_limit").keys() == series(e, "aws_quota_usage").keys()


@pytest.mark.parametrize("source", ["report", "cloudwatch"])
def test_filters_and_min_usage_ratio(aws, exporter, source):
    seed(aws, [EC2, EIP, LAMBDA, ELB], "eu-west-1")
    cfg = one_region(config(
        services={"exclude": ["lambda"]},
        quotas={"exclude": ["L-0263D0A3"]},
        min_usage_ratio=0.5,
        usage_source=source,
    ))
    e = exporter(BIN, cfg)
    e.wait_ready(timeout=60)
    # EC2 at 90 % stays; the EIPs and Lambda are filtered out; the ALBs (33 %) are under
    # the ratio.
    assert series(e, "aws_quota_usage") == {(ACCOUNT_A, "eu-west-1", "ec2", "L-1216C47A"): 576}


def test_a_limit_override_wins_over_the_reported_value(aws, exporter):
    seed(aws, [EC2, ELB], "eu-west-1")
    cfg = one_region(config(limit_overrides={"L-1216C47A": 1000}))
    e = exporter(BIN, cfg)
    e.wait_ready(timeout=60)
    limits = series(e, "aws_quota_limit")
    assert limits[(ACCOUNT_A, "eu-west-1", "ec2", "L-1216C47A")] == 1000
    assert limits[(ACCOUNT_A, "eu-west-1", "elasticloadbalancing", "L-53DA6B97")] == 3
    [info] = [l for n, l, _ in e.samples() if n == "aws_quota_info" and l["quota_code"] == "L-1216C47A"]
    assert info["limit_source"] == "override" and info["adjustable"] == "true"


# --- The CloudWatch source -----------------------------------------------------------------

def test_usage_source_per_account(aws, exporter):
    seed(aws, [EC2], "eu-west-1")
    seed(aws, [EC2], "eu-west-1", account=ACCOUNT_B)
    cfg = config()
    cfg["accounts"] = [{}, {"role_arn": ROLE_B, "usage_source": "cloudwatch"}]
    cfg["regions"] = ["eu-west-1"]
    cfg["collectors"]["servicequotas_global"] = {"enabled": False}
    e = exporter(BIN, cfg)
    e.wait_ready(timeout=60)
    assert series(e, "aws_quota_usage") == {
        (ACCOUNT_A, "eu-west-1", "ec2", "L-1216C47A"): 576,
        (ACCOUNT_B, "eu-west-1", "ec2", "L-1216C47A"): 576,
    }
    assert {r["account"] for r in calls(aws, "StartQuotaUtilizationReport")} == {ACCOUNT_A}
    assert {r["account"] for r in calls(aws, "GetMetricData")} == {ACCOUNT_B}
    sources = {l["account_id"]: l["limit_source"] for n, l, _ in e.samples() if n == "aws_quota_info"}
    assert sources == {ACCOUNT_A: "service", ACCOUNT_B: "applied"}


def test_cloudwatch_calls_follow_the_batch_arithmetic_and_the_catalogue_is_kept(aws, exporter):
    # 1,200 metered quotas of 5 services (240 each), every 12th without data.
    quotas = generate_quotas(1_200, 5, no_usage_every=12)
    with_data = [q for q in quotas if q.get("usage") is not None]
    seed(aws, quotas, "eu-west-1")
    cfg = one_region(cloudwatch_config(refresh_interval="5s", timeout="5s", max_staleness="1m"))
    e = exporter(BIN, cfg)
    e.wait_ready(timeout=90)
    got = series(e, "aws_quota_usage")
    assert len(got) == len(with_data)
    for q in with_data:
        assert got[(ACCOUNT_A, "eu-west-1", q["service_code"], q["quota_code"])] == q["usage"], q
    # One catalogue: 1 ListServices page; per service 3 default pages (240 of 100) and
    # 1 applied page (80 applied values).
    assert len(calls(aws, "ListServices")) == 1
    assert len(calls(aws, "ListAWSDefaultServiceQuotas")) == 5 * 3
    assert len(calls(aws, "ListServiceQuotas")) == 5 * 1
    # ceil(1,200 / 500) = 3 GetMetricData calls a refresh; the next refresh reads the
    # kept catalogue and asks CloudWatch only.
    assert len(calls(aws, "GetMetricData")) == 3
    wait_until(lambda: len(calls(aws, "GetMetricData")) >= 6, 30, "a second refresh")
    wait_until(lambda: e.value("aws_quota_exporter_collector_success", collector="servicequotas") == 1, 30, "the second refresh to finish")
    assert len(calls(aws, "ListServices")) == 1 and len(calls(aws, "ListAWSDefaultServiceQuotas")) == 15
    assert len(calls(aws, "GetMetricData")) % 3 == 0


def test_a_late_metric_is_read_at_its_last_value_and_a_silent_one_is_left_out(aws, exporter):
    seed(aws, [EC2, EIP, LAMBDA], "eu-west-1")
    # EC2's newest datapoint is 20 minutes old; the EIPs' metric has published nothing.
    aws.post("metric_state", {"account": ACCOUNT_A, "region": "eu-west-1", "service_code": "ec2", "quota_code": "L-1216C47A", "late_minutes": 20})
    aws.post("metric_state", {"account": ACCOUNT_A, "region": "eu-west-1", "service_code": "ec2", "quota_code": "L-0263D0A3", "no_data": True})
    cfg = one_region(cloudwatch_config())
    e = exporter(BIN, cfg)
    e.wait_ready(timeout=60)
    assert series(e, "aws_quota_usage") == {
        (ACCOUNT_A, "eu-west-1", "ec2", "L-1216C47A"): 576,
        (ACCOUNT_A, "eu-west-1", "lambda", "L-B99A9384"): 250,
    }


def test_a_failing_getmetricdata_fails_the_collector_and_keeps_the_last_samples(aws, exporter):
    seed(aws, [EC2], "eu-west-1")
    cfg = one_region(cloudwatch_config(refresh_interval="3s", timeout="3s", max_staleness="1m"))
    e = exporter(BIN, cfg)
    e.wait_ready(timeout=60)
    key = (ACCOUNT_A, "eu-west-1", "ec2", "L-1216C47A")
    assert series(e, "aws_quota_usage")[key] == 576
    success = lambda: e.value("aws_quota_exporter_collector_success", collector="servicequotas", aws_region="eu-west-1")  # noqa: E731
    aws.post("faults", {"operation": "GetMetricData", "code": "AccessDenied", "status": 403})
    wait_until(lambda: success() == 0, 30, "the denied GetMetricData to fail the collector")
    assert series(e, "aws_quota_usage")[key] == 576, "the last good samples stay"
    errors = [l for n, l, _ in e.samples() if n == "aws_quota_exporter_aws_request_errors_total" and l["operation"] == "GetMetricData"]
    assert [l["error_code"] for l in errors] == ["AccessDenied"] and errors[0]["service_code"] == "cloudwatch"
