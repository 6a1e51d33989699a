"""Paging as AWS pages, for every paged call the exporters make: short and empty pages
that still carry a token (the test server's short-pages mode answers empty, a third,
full, ... pages, the first one empty), and opaque tokens that are bound to their
operation and inputs and expire. A collector that stops at a short or empty page
counts nothing here; one that pages on counts exactly."""

from __future__ import annotations

import base64
import sys
import time

import boto3
import botocore.exceptions
import pytest

from conftest import ACCOUNT_A, ROOT, fast_retries, wait_until

sys.path.insert(0, str(ROOT))
from testserver.headroom_aws import generate_quotas  # noqa: E402

FAST = {"rate_limit": 1000}
ARN = "arn:aws:ecr:eu-west-1:" + ACCOUNT_A + ":repository/{}"


def short_pages(aws) -> None:
    aws.post("settings", {"short_pages": True})


def usage(e, **labels) -> float | None:
    return e.value("aws_quota_usage", **labels)


def test_ecr_repositories_images_and_their_limits_on_short_pages(aws, exporter):
    # 1,100 repositories (two full pages), one with 700 images in 1,400 entries.
    aws.seed_ecr("eu-west-1", {"team/app": {"images": 700, "tags_per_image": 2}}, empty=1_099)
    # Per-repository limits come from ListServiceQuotas at the RESOURCE level: 150
    # values, two pages of 100.
    resources = {ARN.format(f"empty-{i:05d}"): 50 + i for i in range(149)}
    resources[ARN.format("team/app")] = 9_000
    aws.quota("eu-west-1", "ecr", "L-03A36CE1", applied=10_000, default=10_000, resources=resources)
    short_pages(aws)
    e = exporter("ecr_quota_exporter", {
        "regions": ["eu-west-1"],
        "collectors": {"ecr_repositories": FAST, "ecr_images": {**FAST, "include": ["team/*", "empty-0000?"], "concurrency": 8}},
        "aws": fast_retries(),
    })
    e.wait_ready(timeout=120)
    assert usage(e, quota_code="L-CFEB8E8D") == 1_100
    assert usage(e, quota_code="L-03A36CE1", resource="team/app") == 700
    assert e.value("aws_quota_limit", quota_code="L-03A36CE1", resource="team/app") == 9_000
    assert e.value("aws_quota_limit", quota_code="L-03A36CE1", resource="empty-00003") == 53
    ops = [r["operation"] for r in aws.log()]
    # Empty and short pages cost more calls than full ones: more than 2 + 2.
    assert ops.count("DescribeRepositories") > 2 and ops.count("ListImages") > 2 + 10


def test_s3_buckets_directory_buckets_and_access_points_on_short_pages(aws, exporter):
    aws.seed_s3(buckets={"eu-west-1": 25}, directory_buckets={"eu-west-1": 1_234}, access_points={"eu-west-1": [1_100, 50]})
    aws.quota("us-east-1", "s3", "L-DC2B2D3D", applied=20_000, default=10_000)
    short_pages(aws)
    e = exporter("s3_quota_exporter", {
        "regions": ["eu-west-1"],
        "collectors": {"s3_buckets": FAST, "s3_directory_buckets": FAST, "s3_access_points": FAST},
        "aws": fast_retries(),
    })
    e.wait_ready(timeout=120)
    assert usage(e, quota_code="L-DC2B2D3D") == 25
    assert usage(e, quota_code="L-775A314D", aws_region="eu-west-1") == 1_234
    assert usage(e, quota_code="L-FAABEEBA", aws_region="eu-west-1") == 1_150


def test_service_quotas_listings_on_short_pages(aws, exporter):
    # The CloudWatch source reads ListServices, ListAWSDefaultServiceQuotas and
    # ListServiceQuotas; 3 services of 150 quotas each, every one with usage.
    quotas = generate_quotas(450, 3)
    aws.post("seed_quotas", {"account": ACCOUNT_A, "region": "eu-west-1", "quotas": quotas})
    short_pages(aws)
    e = exporter("servicequotas_exporter", {
        "regions": ["eu-west-1"],
        "collectors": {"servicequotas": {**FAST, "usage_source": "cloudwatch", "min_usage_ratio": 0}, "servicequotas_global": {"enabled": False}},
        "aws": fast_retries(),
    })
    e.wait_ready(timeout=120)
    got = {l["quota_code"]: v for n, l, v in e.samples() if n == "aws_quota_usage"}
    assert got == {q["quota_code"]: q["usage"] for q in quotas}
    limits = {l["quota_code"]: v for n, l, v in e.samples() if n == "aws_quota_limit"}
    assert limits == {q["quota_code"]: q.get("applied") or q["default"] for q in quotas}


def client(aws, service: str):
    return boto3.client(service, region_name="eu-west-1", endpoint_url=aws.url, aws_access_key_id="testing", aws_secret_access_key="testing")


def refused(call, code: str) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as err:
        call()
    assert err.value.response["Error"]["Code"] == code


def test_tokens_are_bound_to_their_operation_and_inputs_and_expire(aws):
    aws.seed_ecr("eu-west-1", {"ra": {"images": 5, "tags_per_image": 1}, "rb": {"images": 5, "tags_per_image": 1}}, empty=3)
    ecr = client(aws, "ecr")
    token = ecr.list_images(repositoryName="ra", maxResults=2)["nextToken"]
    assert len(ecr.list_images(repositoryName="ra", maxResults=2, nextToken=token)["imageIds"]) == 2
    # Another repository, another operation, or a forged offset: refused as ECR does.
    refused(lambda: ecr.list_images(repositoryName="rb", maxResults=2, nextToken=token), "InvalidParameterException")
    refused(lambda: ecr.describe_repositories(maxResults=2, nextToken=token), "InvalidParameterException")
    refused(lambda: ecr.list_images(repositoryName="ra", nextToken=base64.b64encode(b"headroom:2").decode()), "InvalidParameterException")

    aws.post("quotas", {"account": ACCOUNT_A, "region": "eu-west-1", "service_code": "ecr", "quota_code": "L-03A36CE1", "applied": 1,
                        "resources": {ARN.format(f"r{i}"): i for i in range(150)}})
    aws.post("quotas", {"account": ACCOUNT_A, "region": "eu-west-1", "service_code": "s3", "quota_code": "L-775A314D", "applied": 1})
    sq = client(aws, "service-quotas")
    page = sq.list_service_quotas(ServiceCode="ecr", QuotaAppliedAtLevel="ALL")
    assert len(page["Quotas"]) == 100 and page["NextToken"]
    refused(lambda: sq.list_service_quotas(ServiceCode="s3", QuotaAppliedAtLevel="ALL", NextToken=page["NextToken"]), "InvalidPaginationTokenException")
    refused(lambda: sq.list_service_quotas(ServiceCode="ecr", NextToken=page["NextToken"]), "InvalidPaginationTokenException")
    assert len(sq.list_service_quotas(ServiceCode="ecr", QuotaAppliedAtLevel="ALL", NextToken=page["NextToken"])["Quotas"]) == 51

    # Tokens expire.
    aws.post("settings", {"token_ttl_s": 0.5})
    token = ecr.list_images(repositoryName="ra", maxResults=2)["nextToken"]
    time.sleep(0.7)
    refused(lambda: ecr.list_images(repositoryName="ra", maxResults=2, nextToken=token), "InvalidParameterException")
    ssm = client(aws, "ssm")
    aws.seed_ssm("eu-west-1", 15, 0)
    token = ssm.describe_parameters(MaxResults=10)["NextToken"]
    time.sleep(0.7)
    refused(lambda: ssm.describe_parameters(MaxResults=10, NextToken=token), "InvalidNextToken")


def test_a_listing_that_never_ends_fails_at_the_page_cap_and_counts_nothing(aws, exporter):
    """A server that keeps returning tokens (every page past the last parameter empty,
    with a token): the refresh stops at the page cap with an error, and no partial count
    is exported, while the other region is counted. The cap is lowered from its default
    of 20,000 (`aws.max_pages`, unit-tested in common's paging) so that this takes
    seconds, not two minutes."""
    aws.seed_ssm("eu-west-1", 120, 3)
    aws.seed_ssm("us-east-1", 30, 0)
    aws.post("settings", {"endless_pages": [{"operation": "DescribeParameters", "region": "eu-west-1"}]})
    config = {
        "regions": ["eu-west-1", "us-east-1"],
        "collectors": {"ssm_parameters": {"rate_limit": 1000, "refresh_interval": "20m", "timeout": "15m"}},
        "aws": {**fast_retries(), "max_pages": 300},
    }
    e = exporter("ssm_quota_exporter", config)
    labels = dict(collector="ssm_parameters", account_id=ACCOUNT_A)
    wait_until(lambda: e.value("aws_quota_exporter_collector_success", aws_region="eu-west-1", **labels) == 0, 120, "the endless listing to fail")
    assert e.value("aws_quota_exporter_collector_success", aws_region="us-east-1", **labels) == 1
    sent = [r for r in aws.log() if r["operation"] == "DescribeParameters" and r["region"] == "eu-west-1"]
    assert len(sent) == 300, len(sent)
    assert "still paging after 300 pages" in e.logs()
    assert e.value("aws_quota_exporter_aws_request_errors_total", operation="DescribeParameters", error_code="malformed_response") is None
    assert usage(e, aws_region="eu-west-1", quota_code="standard_parameters") is None
    assert usage(e, aws_region="eu-west-1", quota_code="advanced_parameters") is None
    assert usage(e, aws_region="us-east-1", quota_code="standard_parameters") == 30
