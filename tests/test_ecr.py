"""ecr_quota_exporter against the local AWS test server, over real sockets."""

from __future__ import annotations

import math

import boto3
import botocore.exceptions
import pytest

from conftest import ACCOUNT_A, fast_retries, wait_until

BIN = "ecr_quota_exporter"
REPOS, IMAGES = "L-CFEB8E8D", "L-03A36CE1"
ARN = "arn:aws:ecr:eu-west-1:" + ACCOUNT_A + ":repository/{}"

# 2,000 images with three tags each, 345 untagged, and 50 archived (not counted):
# 2,345 images in 6,345 ListImages entries.
APP = {"images": 2000, "tags_per_image": 3, "untagged": 345, "archived": 50}
WEB = {"images": 10, "tags_per_image": 1}


def calls(e, op):
    return e.value("aws_quota_exporter_aws_requests_total", service_code="ecr", operation=op) or 0


def images(e, repo):
    return e.value("aws_quota_usage", quota_code=IMAGES, resource=repo)


def limit(e, repo):
    return e.value("aws_quota_limit", quota_code=IMAGES, resource=repo)


def source(e, repo):
    found = [l["limit_source"] for n, l, _ in e.samples() if n == "aws_quota_info" and l["quota_code"] == IMAGES and l["resource"] == repo]
    return found[0] if found else None


def config(**images_settings):
    return {
        "regions": ["eu-west-1"],
        "collectors": {
            "ecr_repositories": {"rate_limit": 1000},
            "ecr_images": {"rate_limit": 1000, "concurrency": 8, **images_settings},
        },
        "aws": fast_retries(),
    }


def test_counts_digests_not_tags_and_pages_at_1000(aws, exporter):
    aws.seed_ecr("eu-west-1", {"team/app": APP, "team/web": WEB}, empty=1500)
    e = exporter(BIN, config())
    e.wait_ready(timeout=120)
    assert e.value("aws_quota_usage", quota_code=REPOS, resource="") == 1502
    assert images(e, "team/app") == 2345
    assert images(e, "team/web") == 10
    assert images(e, "empty-00000") == 0
    assert len([s for s in e.samples() if s[0] == "aws_quota_usage" and s[1]["quota_code"] == IMAGES]) == 1502
    # Page arithmetic: the collectors share one listing of 1,502 repositories in 2
    # pages; ListImages takes ceil(6345/1000) = 7 pages for team/app, 1 for team/web, 1
    # per empty one.
    assert calls(e, "DescribeRepositories") == math.ceil(1502 / 1000)
    assert calls(e, "ListImages") == math.ceil(6345 / 1000) + 1 + 1500
    assert len([r for r in aws.log() if r["operation"] == "ListImages"]) == calls(e, "ListImages")


def test_repository_level_limit_wins_over_the_account_value(aws, exporter):
    aws.seed_ecr("eu-west-1", {"team/app": APP, "team/web": WEB})
    aws.quota("eu-west-1", "ecr", IMAGES, applied=10_000, default=10_000, resources={ARN.format("team/app"): 3_000})
    aws.quota("eu-west-1", "ecr", REPOS, applied="NoSuchResource", default=100_000)
    e = exporter(BIN, config())
    e.wait_ready()
    assert (limit(e, "team/app"), source(e, "team/app")) == (3_000, "applied")
    assert (limit(e, "team/web"), source(e, "team/web")) == (10_000, "applied")
    assert e.value("aws_quota_limit", quota_code=REPOS) == 100_000
    infos = [l for n, l, _ in e.samples() if n == "aws_quota_info" and l["quota_code"] == REPOS]
    assert [i["limit_source"] for i in infos] == ["default"]


def test_without_service_quotas_data_the_builtin_limit_applies(aws, exporter):
    aws.seed_ecr("eu-west-1", {"team/web": WEB})
    e = exporter(BIN, config())
    e.wait_ready()
    assert (limit(e, "team/web"), source(e, "team/web")) == (100_000, "builtin")


def test_include_exclude_and_minimum_ratio(aws, exporter):
    aws.seed_ecr("eu-west-1", {"team/app": APP, "team/web": WEB, "legacy/tool": WEB}, empty=30)
    aws.quota("eu-west-1", "ecr", IMAGES, applied=10_000, default=10_000, resources={ARN.format("team/app"): 3_000})
    e = exporter(BIN, config(include=["team/*", "legacy/*"], exclude=["legacy/*"], min_usage_ratio=0.5))
    e.wait_ready()
    image_series = [l["resource"] for n, l, _ in e.samples() if n == "aws_quota_usage" and l["quota_code"] == IMAGES]
    # team/web (10 of 10,000) is below the ratio; legacy/tool and empty-* are excluded.
    assert image_series == ["team/app"]
    # Excluded repositories cost no ListImages call; filtered-by-ratio ones do.
    assert calls(e, "ListImages") == math.ceil(6345 / 1000) + 1
    # The repository count is the account's, filters or not.
    assert e.value("aws_quota_usage", quota_code=REPOS) == 33


def test_throttling_is_retried_and_denial_fails_only_that_collector(aws, exporter):
    aws.seed_ecr("eu-west-1", {"team/app": APP, "team/web": WEB})
    aws.fault(operation="ListImages", code="ThrottlingException", every=2, times=3)
    e = exporter(BIN, config())
    e.wait_ready()
    assert images(e, "team/app") == 2345
    assert e.value("aws_quota_exporter_aws_request_errors_total", operation="ListImages", error_code="ThrottlingException") == 3
    assert calls(e, "ListImages") == math.ceil(6345 / 1000) + 1 + 3
    e.stop()

    aws.fault(operation="ListImages", code="AccessDeniedException")
    e = exporter(BIN, config())
    e.wait_ready()
    assert e.value("aws_quota_exporter_collector_success", collector="ecr_images") == 0
    assert e.value("aws_quota_exporter_collector_success", collector="ecr_repositories") == 1
    assert e.value("aws_quota_usage", quota_code=REPOS) == 2
    assert images(e, "team/app") is None


def test_the_test_server_pages_ecr_like_aws(aws):
    aws.seed_ecr("eu-west-1", {"team/app": {"images": 3, "tags_per_image": 2, "untagged": 1, "archived": 2}}, empty=150)
    ecr = boto3.client("ecr", region_name="eu-west-1", endpoint_url=aws.url, aws_access_key_id="testing", aws_secret_access_key="testing")
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ecr.describe_repositories(maxResults=1001)
    assert err.value.response["Error"]["Code"] == "InvalidParameterException"
    first = ecr.describe_repositories()
    assert len(first["repositories"]) == 100 and "nextToken" in first
    second = ecr.describe_repositories(nextToken=first["nextToken"], maxResults=1000)
    assert len(second["repositories"]) == 51 and "nextToken" not in second
    ids = ecr.list_images(repositoryName="team/app")["imageIds"]
    assert len(ids) == 7 and len({i["imageDigest"] for i in ids}) == 4
    everything = ecr.list_images(repositoryName="team/app", filter={"imageStatus": "ANY"})["imageIds"]
    assert len({i["imageDigest"] for i in everything}) == 6


def test_lifecycle_policies_are_optional(aws, exporter):
    aws.seed_ecr("eu-west-1", {"team/app": {"images": 5, "lifecycle": True}, "team/web": WEB, "legacy/tool": WEB})
    e = exporter(BIN, config())
    e.wait_ready()
    # Off by default: no series and no GetLifecyclePolicy call.
    assert not [s for s in e.samples() if s[0] == "aws_quota_lifecycle_policy_present"]
    assert calls(e, "GetLifecyclePolicy") == 0
    e.stop()

    cfg = config(exclude=["legacy/*"])
    cfg["collectors"]["ecr_lifecycle_policies"] = {"enabled": True, "rate_limit": 1000, "exclude": ["legacy/*"]}
    e = exporter(BIN, cfg)
    e.wait_ready()
    present = {l["resource"]: v for n, l, v in e.samples() if n == "aws_quota_lifecycle_policy_present"}
    assert present == {"team/app": 1, "team/web": 0}
    assert calls(e, "GetLifecyclePolicy") == 2
    assert e.value("aws_quota_exporter_collector_success", collector="ecr_lifecycle_policies") == 1


def test_a_collector_can_be_disabled(aws, exporter):
    aws.seed_ecr("eu-west-1", {"team/web": WEB})
    cfg = config()
    cfg["collectors"]["ecr_images"]["enabled"] = False
    e = exporter(BIN, cfg)
    e.wait_ready()
    assert e.value("aws_quota_usage", quota_code=REPOS) == 1
    assert not [s for s in e.samples() if s[1].get("collector") == "ecr_images" or s[1].get("quota_code") == IMAGES]
    assert calls(e, "ListImages") == 0


def test_collectors_with_different_rate_limits_share_the_strictest_per_region(aws, exporter):
    """ecr_repositories at 2 requests/s and ecr_images at 1,000: one limiter per account
    and region, at the strictest rate, so the images collector's ListImages calls are
    spaced half a second apart too; each region has its own limiter, so the two regions
    run side by side, not one after the other."""
    repositories = {f"svc/r{i}": {"images": 1} for i in range(8)}
    for region in ("eu-west-1", "us-east-1"):
        aws.seed_ecr(region, repositories)
    e = exporter(BIN, {
        "regions": ["eu-west-1", "us-east-1"],
        "collectors": {
            "ecr_repositories": {"rate_limit": 2},
            "ecr_images": {"rate_limit": 1000, "concurrency": 8},
        },
    })
    e.wait_ready(timeout=120)
    spans = {}
    for region in ("eu-west-1", "us-east-1"):
        assert e.value("aws_quota_usage", quota_code=REPOS, aws_region=region) == 8
        sent = sorted(r["at"] for r in aws.log() if r["service"] == "ecr" and r["region"] == region)
        # One DescribeRepositories page, shared by both collectors, and one ListImages
        # per repository: 9 calls. A burst of one second's worth (2) goes at once, then
        # 7 gaps of half a second; at 1,000/s they would take milliseconds, and a limiter
        # per collector would let ListImages through at once.
        assert len(sent) == 9, sent
        spans[region] = (sent[0], sent[-1])
        took = sent[-1] - sent[0]
        assert 7 * 0.5 * 0.95 <= took < 7 * 0.5 * 1.75, (region, took)
    # The regions overlap: neither waited for the other's limiter.
    (a0, a1), (b0, b1) = spans.values()
    assert min(a1, b1) - max(a0, b0) > 2, spans


def test_a_repository_deleted_while_the_refresh_runs_is_skipped_not_failed(aws, exporter):
    """Listed, then deleted before its ListImages / GetLifecyclePolicy: ECR answers
    RepositoryNotFoundException, and the refresh goes on without that repository."""
    aws.seed_ecr("eu-west-1", {"svc/a": {"images": 3}, "svc/b": {"images": 2, "lifecycle": True}, "svc/c": {"images": 4, "lifecycle": True}})
    # The first call of each collector after the listing waits at the server; the rest
    # follow one at a time (concurrency 1), so every call for the deleted repository is
    # answered after the deletion.
    held = [aws.fault(operation=op, hold=True, times=1) for op in ("ListImages", "GetLifecyclePolicy")]
    cfg = config(concurrency=1)
    cfg["collectors"]["ecr_lifecycle_policies"] = {"enabled": True, "rate_limit": 1000, "concurrency": 1}
    e = exporter(BIN, cfg)
    wait_until(lambda: [f["holding"] for f in aws.post("faults/list")] == [1, 1], 60, "both collectors' first calls to be held")
    ecr = boto3.client("ecr", region_name="eu-west-1", endpoint_url=aws.url, aws_access_key_id="testing", aws_secret_access_key="testing")
    ecr.delete_repository(repositoryName="svc/c", force=True)
    for fault in held:
        aws.post("faults/delete", {"id": fault})
    e.wait_ready(timeout=60)
    for collector in ("ecr_repositories", "ecr_images", "ecr_lifecycle_policies"):
        assert e.value("aws_quota_exporter_collector_success", collector=collector) == 1, collector
    # Counted from the listing, as AWS counted it then.
    assert e.value("aws_quota_usage", quota_code=REPOS) == 3
    assert {l["resource"]: v for n, l, v in e.samples() if n == "aws_quota_usage" and l["quota_code"] == IMAGES} == {"svc/a": 3, "svc/b": 2}
    present = {l["resource"]: v for n, l, v in e.samples() if n == "aws_quota_lifecycle_policy_present"}
    assert present == {"svc/a": 0, "svc/b": 1}
    assert e.value("aws_quota_exporter_aws_request_errors_total", operation="ListImages", error_code="RepositoryNotFoundException") == 1
    assert e.value("aws_quota_exporter_aws_request_errors_total", operation="GetLifecyclePolicy", error_code="RepositoryNotFoundException") == 1
