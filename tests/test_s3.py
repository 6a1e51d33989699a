"""s3_quota_exporter against the local AWS test server, over real sockets."""

from __future__ import annotations

import math

import boto3
import botocore.exceptions
import pytest
import requests

from conftest import ACCOUNT_A, ACCOUNT_B, ROLE_B, fast_retries

BIN = "s3_quota_exporter"
BUCKETS, DIRECTORY, ACCESS_POINTS = "L-DC2B2D3D", "L-775A314D", "L-FAABEEBA"
REGIONS = ["eu-west-1", "us-east-1", "ap-southeast-2"]


def calls(e, op, service="s3"):
    return e.value("aws_quota_exporter_aws_requests_total", service_code=service, operation=op) or 0


def config(**kw):
    fast = {"rate_limit": 1000}
    return {
        "regions": REGIONS,
        "collectors": {"s3_buckets": fast, "s3_directory_buckets": fast, "s3_access_points": fast},
        "aws": fast_retries(),
        **kw,
    }


def test_buckets_are_global_and_paged_past_10000(aws, exporter):
    # More buckets than one page of 10,000, spread over regions.
    aws.seed_s3(buckets={"eu-west-1": 6_000, "us-east-1": 4_500, "ap-southeast-2": 23})
    aws.seed_s3(buckets={"eu-west-1": 7}, account=ACCOUNT_B)
    # A raised quota: AWS then rejects an unpaginated ListBuckets.
    aws.quota("us-east-1", "s3", BUCKETS, applied=20_000, default=10_000)
    # us-east-1 is not among the configured regions: a lookup there is the bucket
    # quota's own (the regional collectors look up in their regions).
    e = exporter(BIN, config(accounts=[{}, {"role_arn": ROLE_B}], regions=["eu-west-1", "ap-southeast-2"]))
    e.wait_ready(timeout=120)
    series = [(l["account_id"], l["aws_region"], v) for n, l, v in e.samples() if n == "aws_quota_usage" and l["quota_code"] == BUCKETS]
    # Counted once per account, not once per region, and labelled global.
    assert sorted(series) == sorted([(ACCOUNT_A, "global", 10_523), (ACCOUNT_B, "global", 7)])
    assert e.value("aws_quota_limit", account_id=ACCOUNT_A, quota_code=BUCKETS) == 20_000
    assert e.value("aws_quota_limit", account_id=ACCOUNT_B, quota_code=BUCKETS) == 10_000  # builtin: no data for B
    # Two pages for account A, one for B; every call paginated, every call to us-east-1.
    assert calls(e, "ListBuckets") == math.ceil(10_523 / 10_000) + 1
    lists = [r for r in aws.log() if r["operation"] == "ListBuckets"]
    assert len(lists) == 3 and all(r["status"] == 200 and r["region"] == "us-east-1" for r in lists)
    quota_lookups = [r for r in aws.log() if r["operation"] == "ListServiceQuotas" and r["account"] == ACCOUNT_A]
    assert sorted(r["region"] for r in quota_lookups) == ["ap-southeast-2", "eu-west-1", "us-east-1"], quota_lookups


def test_directory_buckets_and_access_points_per_region(aws, exporter):
    aws.seed_s3(directory_buckets={"eu-west-1": 2_345, "us-east-1": 3}, access_points={"eu-west-1": [1_500, 700], "ap-southeast-2": 12})
    aws.quota("eu-west-1", "s3", DIRECTORY, applied=2_500, default=100)
    e = exporter(BIN, config())
    e.wait_ready()
    usage = lambda q, r: e.value("aws_quota_usage", quota_code=q, aws_region=r)  # noqa: E731
    assert [usage(DIRECTORY, r) for r in REGIONS] == [2_345, 3, 0]
    # Access points on other data sources count too (DataSourceType ALL).
    assert [usage(ACCESS_POINTS, r) for r in REGIONS] == [2_200, 0, 12]
    assert e.value("aws_quota_limit", quota_code=DIRECTORY, aws_region="eu-west-1") == 2_500
    assert e.value("aws_quota_limit", quota_code=DIRECTORY, aws_region="us-east-1") == 100  # builtin
    assert calls(e, "ListDirectoryBuckets") == math.ceil(2_345 / 1000) + 1 + 1
    assert calls(e, "ListAccessPoints") == math.ceil(2_200 / 1000) + 1 + 1


def test_faults_mark_one_collector_and_spare_the_rest(aws, exporter):
    aws.seed_s3(buckets={"eu-west-1": 5}, access_points={"eu-west-1": 4})
    aws.fault(operation="ListBuckets", code="SlowDown", status=503, times=2)
    aws.fault(operation="ListAccessPoints", region="us-east-1", code="AccessDenied", status=403)
    aws.fault(operation="ListDirectoryBuckets", code="InternalError", status=500)
    e = exporter(BIN, config())
    e.wait_ready()
    assert e.value("aws_quota_usage", quota_code=BUCKETS) == 5
    assert e.value("aws_quota_exporter_aws_request_errors_total", operation="ListBuckets", error_code="SlowDown") == 2
    ok = lambda c, r: e.value("aws_quota_exporter_collector_success", collector=c, aws_region=r)  # noqa: E731
    assert ok("s3_buckets", "global") == 1
    assert ok("s3_access_points", "eu-west-1") == 1 and ok("s3_access_points", "us-east-1") == 0
    assert all(ok("s3_directory_buckets", r) == 0 for r in REGIONS)
    assert e.value("aws_quota_exporter_aws_request_errors_total", operation="ListDirectoryBuckets", error_code="InternalError") >= 3
    assert e.value("aws_quota_usage", quota_code=ACCESS_POINTS, aws_region="eu-west-1") == 4
    # The collectors read the AWS code out of S3's <Error> and S3 Control's
    # <ErrorResponse> alike: the failure logs name it, not `other` or `http_4xx`.
    logs = e.logs()
    assert 'collector="s3_directory_buckets"' in logs and 'error_code="InternalError"' in logs, logs
    assert 'collector="s3_access_points"' in logs and 'error_code="AccessDenied"' in logs, logs
    assert 'error_code="other"' not in logs and 'error_code="http_' not in logs, logs


def test_s3_errors_have_the_shape_s3_sends(aws):
    """S3 itself answers errors with an <Error> root, S3 Control wraps them in
    <ErrorResponse>; each SDK reads the code only from its own shape."""
    aws.fault(operation="ListDirectoryBuckets", code="AccessDenied", status=403)
    aws.fault(operation="ListAccessPoints", code="AccessDenied", status=403)

    def get(path: str, service: str) -> requests.Response:
        # As the SDKs send them (the layer reads the operation from the path and the
        # signing service from the credential scope).
        auth = f"AWS4-HMAC-SHA256 Credential=testing/20260101/eu-west-1/{service}/aws4_request, SignedHeaders=host, Signature=x"
        return requests.get(f"{aws.url}{path}", headers={"Authorization": auth}, timeout=10)

    s3 = get("/?x-id=ListDirectoryBuckets", "s3express")
    assert s3.status_code == 403, s3.content
    assert b"<Error><Code>AccessDenied</Code>" in s3.content and b"ErrorResponse" not in s3.content
    control = get("/v20180820/accesspoint", "s3")
    assert control.status_code == 403, control.content
    assert b"<ErrorResponse><Error>" in control.content and b"<Code>AccessDenied</Code>" in control.content


def test_the_test_server_pages_s3_like_aws(aws):
    aws.seed_s3(buckets={"eu-west-1": 25})
    aws.quota("us-east-1", "s3", BUCKETS, applied=20_000)
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=aws.url, aws_access_key_id="testing", aws_secret_access_key="testing")
    with pytest.raises(botocore.exceptions.ClientError):
        s3.list_buckets()  # unpaginated, with a quota above 10,000
    page = s3.list_buckets(MaxBuckets=10)
    assert len(page["Buckets"]) == 10 and page["ContinuationToken"]
    rest = s3.list_buckets(MaxBuckets=100, ContinuationToken=page["ContinuationToken"])
    assert len(rest["Buckets"]) == 15 and "ContinuationToken" not in rest
    assert rest["Buckets"][0]["BucketRegion"] == "eu-west-1"
