"""The test server's own Service Quotas data, quota utilization report and CloudWatch
GetMetricData, over a real socket: what servicequotas_exporter will be tested against.

Service Quotas is called with boto3 (AWS JSON 1.1, as the Rust SDK). GetMetricData is
called as the Rust SDK calls it (aws-sdk-cloudwatch 1.x: Smithy RPC v2 CBOR, requests
built and signed here by hand), and once through boto3, which speaks the same protocol.
One server serves the whole module, reset before each test, to keep it fast."""

from __future__ import annotations

import datetime
import sys
import time
from typing import Any, Iterator

import boto3
import botocore.config
import botocore.exceptions
import cbor2
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from conftest import ACCOUNT_A, ACCOUNT_B, ROLE_B, ROOT, AwsServer

sys.path.insert(0, str(ROOT))
from testserver.headroom_aws import generate_quotas  # noqa: E402

REGION = "eu-west-1"
EC2_DIMS = {"Service": "EC2", "Type": "Resource", "Resource": "vCPU", "Class": "Standard/OnDemand"}
EC2 = {
    "service_code": "ec2", "service_name": "Amazon Elastic Compute Cloud (Amazon EC2)",
    "quota_code": "L-1216C47A", "quota_name": "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
    "applied": 640, "default": 5, "adjustable": True, "global": False, "usage": 576,
    "usage_metric": {"MetricNamespace": "AWS/Usage", "MetricName": "ResourceCount", "MetricDimensions": EC2_DIMS, "MetricStatisticRecommendation": "Maximum"},
}
IAM_ROLES = {
    "service_code": "iam", "service_name": "AWS Identity and Access Management (IAM)", "quota_code": "L-FE177D64",
    "quota_name": "Roles per account", "default": 1000, "adjustable": True, "global": True, "usage": 250,
}
# A quota without a usage metric: never in the report, no UsageMetric in listings.
SSM_SIZE = {"service_code": "ssm", "quota_code": "L-BCC42A41", "quota_name": "Standard parameter size", "default": 4, "adjustable": False}


@pytest.fixture(scope="module")
def server() -> Iterator[AwsServer]:
    s = AwsServer()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture()
def aws(server: AwsServer) -> AwsServer:
    server.reset()
    return server


def client(aws: AwsServer, service: str, region: str = REGION, creds: dict | None = None) -> Any:
    c = creds or {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    config = botocore.config.Config(retries={"total_max_attempts": 1})  # faults must show
    return boto3.client(service, endpoint_url=aws.url, region_name=region, config=config, **c)


def account_b_credentials(aws: AwsServer) -> dict:
    creds = client(aws, "sts").assume_role(RoleArn=ROLE_B, RoleSessionName="headroom-test")["Credentials"]
    return {"aws_access_key_id": creds["AccessKeyId"], "aws_secret_access_key": creds["SecretAccessKey"], "aws_session_token": creds["SessionToken"]}


def seed(aws: AwsServer, quotas: list[dict] | None = None, region: str = REGION, account: str = ACCOUNT_A, **kw: Any) -> None:
    aws.post("seed_quotas", {"account": account, "region": region, "quotas": quotas or [], **kw})


def behave(aws: AwsServer, region: str = REGION, account: str = ACCOUNT_A, **kw: Any) -> None:
    aws.post("report_behaviour", {"account": account, "region": region, **kw})


def error_code(excinfo: pytest.ExceptionInfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def finished_report(sq: Any) -> str:
    """Starts a report and polls it to its end; returns its id."""
    report_id = sq.start_quota_utilization_report()["ReportId"]
    for _ in range(20):
        if sq.get_quota_utilization_report(ReportId=report_id)["Status"] in ("COMPLETED", "FAILED"):
            return report_id
    raise AssertionError("the report did not finish")


# --- seeded quotas in the listings -------------------------------------------------------


def test_seeded_quotas_in_listings(aws: AwsServer) -> None:
    seed(aws, [EC2, SSM_SIZE])
    seed(aws, [IAM_ROLES], region="us-east-1")
    sq = client(aws, "service-quotas")
    [ec2] = sq.list_service_quotas(ServiceCode="ec2")["Quotas"]
    assert ec2["Value"] == 640 and ec2["QuotaName"] == EC2["quota_name"] and ec2["ServiceName"] == EC2["service_name"]
    assert ec2["UsageMetric"] == EC2["usage_metric"]
    assert ec2["GlobalQuota"] is False and ec2["QuotaAppliedAtLevel"] == "ACCOUNT" and ec2["Adjustable"] is True
    # Default only: left out of ListServiceQuotas, listed with its default value.
    assert sq.list_service_quotas(ServiceCode="ssm")["Quotas"] == []
    [size] = sq.list_aws_default_service_quotas(ServiceCode="ssm")["Quotas"]
    assert size["Value"] == 4 and "UsageMetric" not in size and size["Adjustable"] is False
    assert sq.list_aws_default_service_quotas(ServiceCode="ec2")["Quotas"][0]["Value"] == 5
    # A quota with usage and no metric given gets the default AWS/Usage metric.
    [roles] = client(aws, "service-quotas", "us-east-1").list_aws_default_service_quotas(ServiceCode="iam")["Quotas"]
    assert roles["GlobalQuota"] is True
    assert roles["UsageMetric"] == {
        "MetricNamespace": "AWS/Usage", "MetricName": "ResourceCount", "MetricStatisticRecommendation": "Maximum",
        "MetricDimensions": {"Service": "iam", "Type": "Resource", "Resource": "L-FE177D64", "Class": "None"},
    }


def test_generated_quotas_page_at_100(aws: AwsServer) -> None:
    seed(aws, generate={"count": 750, "services": 3})  # 250 a service, 84 with an applied value
    sq = client(aws, "service-quotas")
    pages = list(sq.get_paginator("list_aws_default_service_quotas").paginate(ServiceCode="svc001"))
    assert [len(p["Quotas"]) for p in pages] == [100, 100, 50]
    applied = [q for p in sq.get_paginator("list_service_quotas").paginate(ServiceCode="svc000") for q in p["Quotas"]]
    expected = [g for g in generate_quotas(750, 3) if g["service_code"] == "svc000" and "applied" in g]
    assert sorted(q["QuotaCode"] for q in applied) == sorted(g["quota_code"] for g in expected)
    assert all(q["UsageMetric"]["MetricDimensions"]["Service"] == "svc000" for q in applied)


# --- the quota utilization report ----------------------------------------------------------


def test_report_lifecycle_and_rows(aws: AwsServer) -> None:
    seed(aws, [EC2, SSM_SIZE, {**IAM_ROLES, "global": False}])
    behave(aws, pending_polls=2, in_progress_polls=3)
    sq = client(aws, "service-quotas")
    started = sq.start_quota_utilization_report()
    assert started["Status"] == "PENDING"
    report_id = started["ReportId"]
    statuses = [sq.get_quota_utilization_report(ReportId=report_id) for _ in range(7)]
    assert [s["Status"] for s in statuses] == ["PENDING"] * 2 + ["IN_PROGRESS"] * 3 + ["COMPLETED"] * 2
    assert "Quotas" not in statuses[0] and "TotalCount" not in statuses[4]
    done = statuses[-1]
    assert done["TotalCount"] == 2 and "NextToken" not in done
    assert abs(done["GeneratedAt"].timestamp() - time.time()) < 60
    # EC2 576/640 = 90%, IAM 250/1000 (the default applies) = 25%; SSM has no usage.
    assert [(q["QuotaCode"], q["Utilization"], q["AppliedValue"], q["DefaultValue"]) for q in done["Quotas"]] == [
        ("L-1216C47A", 90.0, 640, 5), ("L-FE177D64", 25.0, 1000, 1000),
    ]
    assert done["Quotas"][0] == {
        "QuotaCode": "L-1216C47A", "ServiceCode": "ec2", "QuotaName": EC2["quota_name"], "Namespace": "AWS/Usage",
        "Utilization": 90.0, "DefaultValue": 5.0, "AppliedValue": 640.0, "ServiceName": EC2["service_name"], "Adjustable": True,
    }


def test_report_rows_fixed_at_start(aws: AwsServer) -> None:
    seed(aws, [EC2])
    sq = client(aws, "service-quotas")
    report_id = sq.start_quota_utilization_report()["ReportId"]
    seed(aws, [{**EC2, "usage": 64}])
    while (r := sq.get_quota_utilization_report(ReportId=report_id))["Status"] != "COMPLETED":
        pass
    assert r["Quotas"][0]["Utilization"] == 90.0
    assert client(aws, "service-quotas").get_quota_utilization_report(ReportId=finished_report(sq))["Quotas"][0]["Utilization"] == 10.0


def test_report_failed(aws: AwsServer) -> None:
    seed(aws, [EC2])
    behave(aws, pending_polls=1, in_progress_polls=0, fail=True, error_code="InternalError", error_message="boom")
    sq = client(aws, "service-quotas")
    report_id = sq.start_quota_utilization_report()["ReportId"]
    assert sq.get_quota_utilization_report(ReportId=report_id)["Status"] == "PENDING"
    failed = sq.get_quota_utilization_report(ReportId=report_id)
    assert (failed["Status"], failed["ErrorCode"], failed["ErrorMessage"]) == ("FAILED", "InternalError", "boom")
    assert "Quotas" not in failed


def test_report_stuck_and_ready_after_seconds(aws: AwsServer) -> None:
    seed(aws, [EC2])
    sq = client(aws, "service-quotas")
    behave(aws, pending_polls=1, stuck=True)
    stuck = sq.start_quota_utilization_report()["ReportId"]
    assert [sq.get_quota_utilization_report(ReportId=stuck)["Status"] for _ in range(12)] == ["PENDING"] + ["IN_PROGRESS"] * 11
    behave(aws, pending_polls=0, in_progress_polls=0, ready_after_s=0.4)
    timed = sq.start_quota_utilization_report()["ReportId"]
    assert sq.get_quota_utilization_report(ReportId=timed)["Status"] == "IN_PROGRESS"
    time.sleep(0.5)
    assert sq.get_quota_utilization_report(ReportId=timed)["Status"] == "COMPLETED"


def test_report_pages_of_1000_sorted_descending(aws: AwsServer) -> None:
    seed(aws, generate={"count": 2_600, "services": 7, "no_usage_every": 26})  # 100 without usage
    behave(aws, pending_polls=0, in_progress_polls=0)
    sq = client(aws, "service-quotas")
    report_id = sq.start_quota_utilization_report()["ReportId"]
    pages, token = [], None
    while True:
        page = sq.get_quota_utilization_report(ReportId=report_id, **({"NextToken": token} if token else {}))
        pages.append(page)
        token = page.get("NextToken")
        if not token:
            break
    assert [len(p["Quotas"]) for p in pages] == [1000, 1000, 500]
    assert {p["TotalCount"] for p in pages} == {2_500}
    rows = [q for p in pages for q in p["Quotas"]]
    # What generate_quotas promises: utilization = usage / (applied, else default) × 100,
    # ties broken by service then quota code.
    expected = sorted(
        ((-g["usage"] / g.get("applied", g["default"]) * 100, g["service_code"], g["quota_code"]) for g in generate_quotas(2_600, 7, 26) if "usage" in g)
    )
    assert [(-q["Utilization"], q["ServiceCode"], q["QuotaCode"]) for q in rows] == expected
    assert rows[0]["Utilization"] > 100 and rows[-1]["Utilization"] == 0
    # Smaller pages on request; more than 1,000 refused.
    assert len(sq.get_quota_utilization_report(ReportId=report_id, MaxResults=7)["Quotas"]) == 7
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sq.get_quota_utilization_report(ReportId=report_id, MaxResults=1_001)
    assert error_code(e) == "ValidationException"


def test_report_expiry_and_reuse(aws: AwsServer) -> None:
    seed(aws, [EC2])
    sq = client(aws, "service-quotas")
    behave(aws, pending_polls=0, in_progress_polls=0, expiry_s=0.3)
    report_id = sq.start_quota_utilization_report()["ReportId"]
    assert sq.get_quota_utilization_report(ReportId=report_id)["Status"] == "COMPLETED"
    time.sleep(0.4)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sq.get_quota_utilization_report(ReportId=report_id)
    assert error_code(e) == "NoSuchResourceException"
    # A recent report is handed back instead of a new one, when the server is told to.
    behave(aws, pending_polls=0, in_progress_polls=0, reuse_s=60)
    first = finished_report(sq)
    again = sq.start_quota_utilization_report()
    assert again["ReportId"] == first and again["Status"] == "COMPLETED" and again["Message"]


def test_report_bound_to_account_region_and_tokens_to_report(aws: AwsServer) -> None:
    seed(aws, generate={"count": 30, "services": 2})
    behave(aws, pending_polls=0, in_progress_polls=0)
    sq = client(aws, "service-quotas")
    report_id = finished_report(sq)
    for other in (client(aws, "service-quotas", "us-east-1"), client(aws, "service-quotas", creds=account_b_credentials(aws))):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            other.get_quota_utilization_report(ReportId=report_id)
        assert error_code(e) == "NoSuchResourceException"
    token = sq.get_quota_utilization_report(ReportId=report_id, MaxResults=10)["NextToken"]
    assert len(sq.get_quota_utilization_report(ReportId=report_id, MaxResults=10, NextToken=token)["Quotas"]) == 10
    second = finished_report(sq)
    forged = "aGVhZHJvb206MTA="  # base64 of "headroom:10"
    for bad in (token, forged):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            sq.get_quota_utilization_report(ReportId=second, NextToken=bad)
        assert error_code(e) == "InvalidPaginationTokenException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sq.get_quota_utilization_report(ReportId="no-such-report")
    assert error_code(e) == "NoSuchResourceException"


# --- CloudWatch GetMetricData, as the Rust SDK sends it --------------------------------------


def stamp(t: datetime.datetime) -> cbor2.CBORTag:
    """A timestamp as aws-smithy-cbor writes it: tag 1 around float seconds."""
    return cbor2.CBORTag(1, t.timestamp())


def query(qid: str, dims: dict[str, str], period: int = 60, stat: str = "Maximum", metric: str = "ResourceCount") -> dict:
    return {
        "Id": qid,
        "MetricStat": {"Metric": {"Namespace": "AWS/Usage", "MetricName": metric, "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()]}, "Period": period, "Stat": stat},
        "ReturnData": True,
    }


def get_metric_data(
    aws: AwsServer, queries: list[dict], minutes: float = 30, region: str = REGION, now: datetime.datetime | None = None, **extra: Any
) -> requests.Response:
    """POST /service/GraniteServiceVersion20100801/operation/GetMetricData in CBOR with
    the Rust SDK's headers, signed with SigV4 for `monitoring`, over the `minutes`
    before `now`."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    body = cbor2.dumps({"MetricDataQueries": queries, "StartTime": stamp(now - datetime.timedelta(minutes=minutes)), "EndTime": stamp(now), **extra})
    url = f"{aws.url}/service/GraniteServiceVersion20100801/operation/GetMetricData"
    headers = {"Content-Type": "application/cbor", "Accept": "application/cbor", "smithy-protocol": "rpc-v2-cbor", "x-amzn-query-mode": "true"}
    request = AWSRequest("POST", url, data=body, headers=headers)
    SigV4Auth(Credentials("testing", "testing"), "monitoring", region).add_auth(request)
    return requests.post(url, data=body, headers=dict(request.headers.items()), timeout=30)


def results(response: requests.Response) -> dict[str, dict]:
    assert response.status_code == 200, response.content
    assert response.headers["Content-Type"] == "application/cbor" and response.headers["smithy-protocol"] == "rpc-v2-cbor"
    return {r["Id"]: r for r in cbor2.loads(response.content)["MetricDataResults"]}


def test_get_metric_data_matches_exact_dimensions(aws: AwsServer) -> None:
    seed(aws, [EC2, IAM_ROLES])
    r = get_metric_data(aws, [
        query("ec2", EC2_DIMS),
        query("ec2sum", EC2_DIMS, period=300, stat="Sum"),
        query("fewer", {k: v for k, v in EC2_DIMS.items() if k != "Class"}),
        query("other", {**EC2_DIMS, "Class": "Standard/Spot"}),
        query("name", EC2_DIMS, metric="CallCount"),
        query("iam", {"Service": "iam", "Type": "Resource", "Resource": "L-FE177D64", "Class": "None"}),
    ])
    # Timestamps go on the wire as tag 1 around a float, values as floats: what the SDK decodes.
    assert b"\xc1\xfb" in r.content
    got = results(r)
    ec2 = got["ec2"]
    assert ec2["StatusCode"] == "Complete" and ec2["Label"] == "ResourceCount"
    assert len(ec2["Values"]) in (30, 31) and set(ec2["Values"]) == {576.0} and all(type(v) is float for v in ec2["Values"])
    stamps = [t.timestamp() for t in ec2["Timestamps"]]
    assert stamps == sorted(stamps, reverse=True) and all(a - b == 60 for a, b in zip(stamps, stamps[1:]))
    assert time.time() - stamps[0] < 120
    # Sum over 5-minute buckets of minute datapoints.
    assert got["ec2sum"]["Values"][1:-1] and set(got["ec2sum"]["Values"][1:-1]) == {576.0 * 5}
    for miss in ("fewer", "other", "name"):
        assert got[miss]["Values"] == [] and got[miss]["Timestamps"] == [] and got[miss]["StatusCode"] == "Complete"
    assert set(got["iam"]["Values"]) == {250.0}
    # Another region has none of it.
    assert results(get_metric_data(aws, [query("ec2", EC2_DIMS)], region="us-east-1"))["ec2"]["Values"] == []


def test_get_metric_data_at_most_500_queries(aws: AwsServer) -> None:
    seed(aws, generate={"count": 600, "services": 3})
    dims = [g["usage_metric"]["MetricDimensions"] for g in generate_quotas(600, 3)]
    ok = results(get_metric_data(aws, [query(f"q{i}", d) for i, d in enumerate(dims[:500])], minutes=5))
    assert len(ok) == 500 and all(r["Values"] for r in ok.values())
    refused = get_metric_data(aws, [query(f"q{i}", d) for i, d in enumerate(dims[:501])], minutes=5)
    assert refused.status_code == 400
    assert refused.headers["x-amzn-query-error"] == "InvalidParameterValue;Sender"
    assert "500" in cbor2.loads(refused.content)["message"]


def test_get_metric_data_late_and_missing_metrics(aws: AwsServer) -> None:
    seed(aws, [EC2, IAM_ROLES])
    aws.post("metric_state", {"region": REGION, "service_code": "ec2", "quota_code": "L-1216C47A", "late_minutes": 10})
    aws.post("metric_state", {"region": REGION, "service_code": "iam", "quota_code": "L-FE177D64", "no_data": True})
    iam_dims = {"Service": "iam", "Type": "Resource", "Resource": "L-FE177D64", "Class": "None"}
    recent = results(get_metric_data(aws, [query("ec2", EC2_DIMS), query("iam", iam_dims)], minutes=5))
    assert recent["ec2"]["Values"] == [] and recent["iam"]["Values"] == []
    wider = results(get_metric_data(aws, [query("ec2", EC2_DIMS), query("iam", iam_dims)], minutes=30))
    assert wider["ec2"]["Values"] and time.time() - wider["ec2"]["Timestamps"][0].timestamp() >= 600
    assert wider["iam"]["Values"] == []
    # No usage data, no report row; the late metric still has data.
    behave(aws, pending_polls=0, in_progress_polls=0)
    sq = client(aws, "service-quotas")
    report = sq.get_quota_utilization_report(ReportId=finished_report(sq))
    assert [q["QuotaCode"] for q in report["Quotas"]] == ["L-1216C47A"]


def test_get_metric_data_pages_by_max_datapoints(aws: AwsServer) -> None:
    seed(aws, [EC2, IAM_ROLES])
    iam_dims = {"Service": "iam", "Type": "Resource", "Resource": "L-FE177D64", "Class": "None"}
    queries = [query("ec2", EC2_DIMS), query("iam", iam_dims)]
    # The next pages repeat the request (same queries and times) with the token.
    now = datetime.datetime.now(datetime.timezone.utc)
    first = get_metric_data(aws, queries, minutes=20, now=now, MaxDatapoints=15, ScanBy="TimestampAscending")
    page = cbor2.loads(first.content)
    assert [(r["Id"], len(r["Values"]), r["StatusCode"]) for r in page["MetricDataResults"]] == [("ec2", 15, "PartialData")]
    stamps = [t.timestamp() for t in page["MetricDataResults"][0]["Timestamps"]]
    assert stamps == sorted(stamps)
    seen: dict[str, int] = {"ec2": 15}
    token = page["NextToken"]
    for _ in range(10):
        page = cbor2.loads(get_metric_data(aws, queries, minutes=20, now=now, MaxDatapoints=15, ScanBy="TimestampAscending", NextToken=token).content)
        for r in page["MetricDataResults"]:
            seen[r["Id"]] = seen.get(r["Id"], 0) + len(r["Values"])
        token = page.get("NextToken")
        if not token:
            break
    assert seen["ec2"] == seen["iam"] and seen["ec2"] in (20, 21)
    # A token is bound to its request.
    other = get_metric_data(aws, queries[:1], minutes=20, now=now, MaxDatapoints=15, NextToken=cbor2.loads(first.content)["NextToken"])
    assert other.status_code == 400 and other.headers["x-amzn-query-error"] == "InvalidNextToken;Sender"


def test_get_metric_data_through_boto3(aws: AwsServer) -> None:
    """boto3 speaks the same protocol (smithy-rpc-v2-cbor) and reads the same answers."""
    seed(aws, [EC2])
    now = datetime.datetime.now(datetime.timezone.utc)
    cw = client(aws, "cloudwatch")
    out = cw.get_metric_data(MetricDataQueries=[query("ec2", EC2_DIMS, period=300)], StartTime=now - datetime.timedelta(hours=1), EndTime=now)
    assert set(out["MetricDataResults"][0]["Values"]) == {576.0}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        cw.get_metric_data(MetricDataQueries=[query("ec2", EC2_DIMS, stat="Loudest")], StartTime=now - datetime.timedelta(hours=1), EndTime=now)
    assert error_code(e) == "ValidationError"


# --- faults and the request log ---------------------------------------------------------------


def test_faults_and_log_on_new_operations(aws: AwsServer) -> None:
    seed(aws, [EC2])
    behave(aws, pending_polls=0, in_progress_polls=0)
    aws.fault(operation="StartQuotaUtilizationReport", code="TooManyRequestsException", times=1)
    aws.fault(operation="GetQuotaUtilizationReport", code="ServiceException", status=500, times=1)
    aws.fault(operation="GetMetricData", code="Throttling", times=1)
    sq = client(aws, "service-quotas")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sq.start_quota_utilization_report()
    assert error_code(e) == "TooManyRequestsException"
    report_id = sq.start_quota_utilization_report()["ReportId"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sq.get_quota_utilization_report(ReportId=report_id)
    assert error_code(e) == "ServiceException"
    assert sq.get_quota_utilization_report(ReportId=report_id)["Status"] == "COMPLETED"
    throttled = get_metric_data(aws, [query("ec2", EC2_DIMS)])
    assert throttled.status_code == 400 and throttled.headers["x-amzn-query-error"] == "Throttling;Sender"
    assert throttled.headers["Content-Type"] == "application/cbor"
    assert results(get_metric_data(aws, [query("ec2", EC2_DIMS)]))["ec2"]["Values"]
    log = [(x["operation"], x["service"], x["account"], x["region"], x["status"], x["fault"]) for x in aws.log()]
    assert log == [
        ("StartQuotaUtilizationReport", "servicequotas", ACCOUNT_A, REGION, 400, "TooManyRequestsException"),
        ("StartQuotaUtilizationReport", "servicequotas", ACCOUNT_A, REGION, 200, None),
        ("GetQuotaUtilizationReport", "servicequotas", ACCOUNT_A, REGION, 500, "ServiceException"),
        ("GetQuotaUtilizationReport", "servicequotas", ACCOUNT_A, REGION, 200, None),
        ("GetMetricData", "monitoring", ACCOUNT_A, REGION, 400, "Throttling"),
        ("GetMetricData", "monitoring", ACCOUNT_A, REGION, 200, None),
    ]


def test_faults_by_account(aws: AwsServer) -> None:
    seed(aws, [EC2], account=ACCOUNT_B)
    aws.fault(operation="GetMetricData", account=ACCOUNT_B, code="AccessDenied", status=403)
    creds = account_b_credentials(aws)
    cw = client(aws, "cloudwatch", creds=creds)
    now = datetime.datetime.now(datetime.timezone.utc)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        cw.get_metric_data(MetricDataQueries=[query("ec2", EC2_DIMS)], StartTime=now - datetime.timedelta(minutes=5), EndTime=now)
    assert error_code(e) == "AccessDenied"
    # Account A is not affected (and has no data for B's quota).
    assert results(get_metric_data(aws, [query("ec2", EC2_DIMS)]))["ec2"]["Values"] == []
