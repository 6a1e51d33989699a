"""ssm_quota_exporter against the local AWS test server, over real sockets."""

from __future__ import annotations

import time

import boto3
import botocore.exceptions
import pytest
import requests

from conftest import ACCOUNT_A, ACCOUNT_B, ROLE_B, fast_retries, pages, wait_until

BIN = "ssm_quota_exporter"
STD, ADV = "standard_parameters", "advanced_parameters"


def usage(e, account, region, quota):
    return e.value("aws_quota_usage", account_id=account, aws_region=region, quota_code=quota)


def requests_total(e, op="DescribeParameters", service="ssm"):
    return e.value("aws_quota_exporter_aws_requests_total", service_code=service, operation=op) or 0


def two_accounts_config(**collector):
    return {
        "accounts": [{}, {"role_arn": ROLE_B, "session_name": "headroom-test"}],
        "regions": ["eu-west-1", "us-east-1"],
        "collectors": {"ssm_parameters": collector} if collector else {},
        "aws": fast_retries(),
    }


def test_exact_counts_across_regions_and_an_assumed_role_account(aws, exporter):
    aws.seed_ssm("eu-west-1", 1234, 56)
    aws.seed_ssm("us-east-1", 321, 7)
    aws.seed_ssm("eu-west-1", 50, 0, account=ACCOUNT_B)
    aws.seed_ssm("us-east-1", 0, 101, account=ACCOUNT_B)
    e = exporter(BIN, two_accounts_config())
    e.wait_ready()
    expected = {
        (ACCOUNT_A, "eu-west-1"): (1234, 56),
        (ACCOUNT_A, "us-east-1"): (321, 7),
        (ACCOUNT_B, "eu-west-1"): (50, 0),
        (ACCOUNT_B, "us-east-1"): (0, 101),
    }
    for (account, region), (std, adv) in expected.items():
        assert usage(e, account, region, STD) == std, (account, region)
        assert usage(e, account, region, ADV) == adv, (account, region)
        assert e.value("aws_quota_limit", account_id=account, aws_region=region, quota_code=STD) == 10_000
        assert e.value("aws_quota_limit", account_id=account, aws_region=region, quota_code=ADV) == 100_000
        assert e.value("aws_quota_exporter_collector_success", collector="ssm_parameters", account_id=account, aws_region=region) == 1
    usages = [s for s in e.samples() if s[0] == "aws_quota_usage"]
    assert len(usages) == 8, usages
    # The role was assumed through the counted STS client, once per account (cached).
    assert requests_total(e, "AssumeRole", "sts") == 1
    assert requests_total(e, "GetCallerIdentity", "sts") == 1


def test_one_call_per_page_of_50(aws, exporter):
    counts = {"eu-west-1": (2345, 155), "us-east-1": (0, 0)}
    for region, (std, adv) in counts.items():
        aws.seed_ssm(region, std, adv)
    e = exporter(BIN, {"regions": list(counts)})
    e.wait_ready()
    want = sum(pages(std + adv) for std, adv in counts.values())
    assert want == 50 + 1
    assert requests_total(e) == want
    # The server saw exactly those calls too.
    seen = [r for r in aws.log() if r["operation"] == "DescribeParameters"]
    assert len(seen) == want


def test_short_pages_with_tokens_still_count_everything(aws, exporter):
    aws.post("settings", {"short_pages": True})
    aws.seed_ssm("eu-west-1", 777, 23)
    e = exporter(BIN, {"regions": ["eu-west-1"]})
    e.wait_ready()
    assert usage(e, ACCOUNT_A, "eu-west-1", STD) == 777
    assert usage(e, ACCOUNT_A, "eu-west-1", ADV) == 23
    # Short (and empty) pages cost more calls than full ones.
    assert requests_total(e) > pages(800)


def test_the_test_server_pages_like_aws(aws):
    aws.seed_ssm("eu-west-1", 120, 0)
    ssm = boto3.client("ssm", region_name="eu-west-1", endpoint_url=aws.url, aws_access_key_id="testing", aws_secret_access_key="testing")
    with pytest.raises(botocore.exceptions.ClientError) as err:
        ssm.describe_parameters(MaxResults=51)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert len(ssm.describe_parameters()["Parameters"]) == 10  # AWS's default page
    page = ssm.describe_parameters(MaxResults=50)
    assert len(page["Parameters"]) == 50 and "NextToken" in page
    assert all("Value" not in p for p in page["Parameters"])


def test_scrapes_never_call_aws(aws, exporter):
    aws.seed_ssm("eu-west-1", 300, 3)
    e = exporter(BIN, {"regions": ["eu-west-1"]})
    e.wait_ready()
    before_counter = requests_total(e)
    before_log = len(aws.log())
    assert before_counter == pages(303)
    for _ in range(100):
        e.scrape()
    assert requests_total(e) == before_counter
    assert len(aws.log()) == before_log


def test_throttled_pages_are_retried_and_counted(aws, exporter):
    aws.seed_ssm("eu-west-1", 1000, 0)
    # Every third DescribeParameters call is throttled, six times in all.
    aws.fault(operation="DescribeParameters", code="ThrottlingException", every=3, times=6)
    e = exporter(BIN, {"regions": ["eu-west-1"], "aws": fast_retries()})
    e.wait_ready()
    assert usage(e, ACCOUNT_A, "eu-west-1", STD) == 1000
    assert e.value("aws_quota_exporter_collector_success", account_id=ACCOUNT_A, aws_region="eu-west-1") == 1
    assert e.value("aws_quota_exporter_aws_request_errors_total", operation="DescribeParameters", error_code="ThrottlingException") == 6
    assert requests_total(e) == pages(1000) + 6


def test_server_errors_are_retried(aws, exporter):
    aws.seed_ssm("eu-west-1", 120, 0)
    aws.fault(operation="DescribeParameters", code="InternalServerError", status=500, times=2)
    e = exporter(BIN, {"regions": ["eu-west-1"], "aws": fast_retries()})
    e.wait_ready()
    assert usage(e, ACCOUNT_A, "eu-west-1", STD) == 120
    assert e.value("aws_quota_exporter_aws_request_errors_total", operation="DescribeParameters", error_code="InternalServerError") == 2


def test_denied_target_fails_alone_and_its_samples_go_stale(aws, exporter):
    aws.seed_ssm("eu-west-1", 400, 4)
    aws.seed_ssm("eu-west-1", 77, 0, account=ACCOUNT_B)
    staleness = 6.0
    config = {
        "accounts": [{}, {"role_arn": ROLE_B}],
        "regions": ["eu-west-1"],
        "collectors": {"ssm_parameters": {"refresh_interval": "2s", "timeout": "2s", "max_staleness": "6s", "rate_limit": 100}},
        "aws": fast_retries(),
    }
    e = exporter(BIN, config)
    e.wait_ready()
    wait_until(lambda: usage(e, ACCOUNT_B, "eu-west-1", STD) == 77, 30, "account B counted")
    aws.fault(operation="DescribeParameters", account=ACCOUNT_B, code="AccessDeniedException")
    success_b = dict(collector="ssm_parameters", account_id=ACCOUNT_B, aws_region="eu-west-1")
    wait_until(lambda: e.value("aws_quota_exporter_collector_success", **success_b) == 0, 30, "account B marked failed")
    last_good = e.value("aws_quota_exporter_collector_last_success_timestamp_seconds", **success_b)
    # Its last good samples stay until they are older than max_staleness, then go: each
    # scrape is judged by the exporter's own time of the last success, so a slow machine
    # changes how many scrapes fall on each side, never which side they fall on.
    seen: list[tuple[float, float, float | None]] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        before = time.time()
        value = usage(e, ACCOUNT_B, "eu-west-1", STD)
        seen.append((before, time.time(), value))
        if value is None:
            break
        time.sleep(0.1)
    assert seen[-1][2] is None, "account B samples never dropped"
    kept = [(t0, t1) for t0, t1, v in seen if v == 77]
    assert kept and len(kept) == len(seen) - 1, seen
    assert all(t0 - last_good <= staleness for t0, _ in kept), (last_good, kept)
    assert seen[-1][1] - last_good > staleness, (last_good, seen[-1])
    assert usage(e, ACCOUNT_A, "eu-west-1", STD) == 400
    assert e.value("aws_quota_exporter_collector_success", collector="ssm_parameters", account_id=ACCOUNT_A, aws_region="eu-west-1") == 1
    # The failure is logged once, not on every refresh: wait for two more failed ones.
    denied = lambda: e.value("aws_quota_exporter_aws_request_errors_total", operation="DescribeParameters", error_code="AccessDeniedException") or 0  # noqa: E731
    failed_so_far = denied()
    assert failed_so_far >= 1
    wait_until(lambda: denied() >= failed_so_far + 2, 30, "two more failed refreshes of account B")
    assert e.logs().count("collector failed") == 1, e.logs()


def test_readyz_waits_for_the_first_refresh(aws, exporter):
    aws.seed_ssm("eu-west-1", 10, 0)
    # The first DescribeParameters is held by the server until the test lets it go.
    held = aws.fault(operation="DescribeParameters", hold=True, times=1)
    e = exporter(BIN, {"regions": ["eu-west-1"]})
    wait_until(lambda: aws.post("faults/list")[0]["holding"] == 1, 60, "the first refresh's request to be held")
    assert requests.get(f"{e.url}/readyz", timeout=10).status_code == 503
    assert requests.get(f"{e.url}/healthz", timeout=10).status_code == 200
    assert usage(e, ACCOUNT_A, "eu-west-1", STD) is None
    aws.post("faults/delete", {"id": held})
    e.wait_ready(timeout=60)
    assert usage(e, ACCOUNT_A, "eu-west-1", STD) == 10


def test_a_refresh_that_overruns_its_timeout_fails_and_recovers(aws, exporter):
    aws.seed_ssm("eu-west-1", 10, 0)
    aws.fault(operation="DescribeParameters", latency_ms=2500, times=1)
    config = {"regions": ["eu-west-1"], "collectors": {"ssm_parameters": {"refresh_interval": "4s", "timeout": "1s", "max_staleness": "1m"}}}
    e = exporter(BIN, config)
    e.wait_ready()
    labels = dict(collector="ssm_parameters", account_id=ACCOUNT_A, aws_region="eu-west-1")
    assert e.value("aws_quota_exporter_collector_success", **labels) == 0
    assert usage(e, ACCOUNT_A, "eu-west-1", STD) is None
    wait_until(lambda: e.value("aws_quota_exporter_collector_success", **labels) == 1, 20, "recovery")
    assert usage(e, ACCOUNT_A, "eu-west-1", STD) == 10
    # The abandoned request reached the server and is counted; nothing else is.
    seen = [r for r in aws.log() if r["operation"] == "DescribeParameters"]
    assert requests_total(e) == len(seen) == 2


def test_limit_overrides_win_per_account(aws, exporter):
    aws.seed_ssm("eu-west-1", 5, 0)
    aws.seed_ssm("eu-west-1", 6, 0, account=ACCOUNT_B)
    config = {
        "accounts": [{}, {"role_arn": ROLE_B, "limit_overrides": {STD: 8000}}],
        "regions": ["eu-west-1"],
        "collectors": {"ssm_parameters": {"limit_overrides": {ADV: 500}}},
    }
    e = exporter(BIN, config)
    e.wait_ready()
    lim = lambda a, q: e.value("aws_quota_limit", account_id=a, quota_code=q)  # noqa: E731
    src = lambda a, q: [l["limit_source"] for n, l, _ in e.samples() if n == "aws_quota_info" and l["account_id"] == a and l["quota_code"] == q]  # noqa: E731
    assert (lim(ACCOUNT_A, STD), src(ACCOUNT_A, STD)) == (10_000, ["builtin"])
    assert (lim(ACCOUNT_A, ADV), src(ACCOUNT_A, ADV)) == (500, ["override"])
    assert (lim(ACCOUNT_B, STD), src(ACCOUNT_B, STD)) == (8000, ["override"])
    assert (lim(ACCOUNT_B, ADV), src(ACCOUNT_B, ADV)) == (500, ["override"])
    # Neither SSM parameter quota is in Service Quotas: no lookups were made.
    assert not [r for r in aws.log() if r["operation"].startswith("Get") and "Quota" in r["operation"]]


def test_sigterm_stops_gracefully(aws, exporter):
    e = exporter(BIN, {"regions": ["eu-west-1"]})
    e.wait_ready()
    assert e.stop() == 0
    assert "SIGTERM received" in e.final_logs and "stopped" in e.final_logs


def test_landing_page_links_to_metrics(aws, exporter):
    e = exporter(BIN, {"regions": ["eu-west-1"]}, extra_args=["--web.telemetry-path=/quota-metrics"])
    e.wait_ready()
    body = requests.get(e.url + "/", timeout=5).text
    assert "ssm_quota_exporter" in body and 'href="/quota-metrics"' in body
    assert requests.get(e.url + "/quota-metrics", timeout=5).status_code == 200
    assert requests.get(e.url + "/metrics", timeout=5).status_code == 404


def test_rate_limit_spaces_requests(aws, exporter):
    # 5 pages at 1 request per second (a burst of one) cannot take less than 4 seconds.
    aws.seed_ssm("eu-west-1", 240, 0)
    config = {"regions": ["eu-west-1"], "collectors": {"ssm_parameters": {"rate_limit": 1}}}
    e = exporter(BIN, config)
    e.wait_ready()
    assert requests_total(e) == 5
    took = e.value("aws_quota_exporter_collector_duration_seconds", account_id=ACCOUNT_A)
    # At least the four waits of one second; and not a limiter twice as strict (8 s),
    # with room for a slow machine.
    assert 3.9 <= took < 7.5, took


@pytest.mark.parametrize("path", ["metrics", "/", "/healthz"])
def test_bad_telemetry_path_is_refused(path):
    import subprocess

    from conftest import BIN_DIR

    r = subprocess.run([str(BIN_DIR / BIN), f"--web.telemetry-path={path}"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "--web.telemetry-path" in r.stderr
