"""The scheduler's limits refresh, end to end: Service Quotas is read at start and then
every limits_refresh_interval, sooner after a lookup that did not answer, and never for
longer than the collector's timeout."""

from __future__ import annotations

from conftest import ACCOUNT_A, fast_retries, wait_until

BIN = "ecr_quota_exporter"
REPOS = "L-CFEB8E8D"  # Registered repositories; built in at 100,000


def config(**repositories) -> dict:
    return {
        "regions": ["eu-west-1"],
        "collectors": {"ecr_repositories": {"rate_limit": 1000, **repositories}, "ecr_images": {"enabled": False}},
        "aws": fast_retries(),
    }


def seed(aws) -> None:
    aws.seed_ecr("eu-west-1", {"team/app": {"images": 1}, "team/web": {"images": 1}})
    aws.quota("eu-west-1", "ecr", REPOS, applied=5_000, default=1_000)


def limit(e) -> tuple[float | None, list[str]]:
    source = [l["limit_source"] for n, l, _ in e.samples() if n == "aws_quota_info" and l["quota_code"] == REPOS]
    return e.value("aws_quota_limit", quota_code=REPOS), source


def sent(aws, operation: str) -> list[float]:
    return sorted(r["at"] for r in aws.log() if r["operation"] == operation)


def test_limits_are_read_every_limits_refresh_interval_not_every_refresh(aws, exporter):
    seed(aws)
    e = exporter(BIN, config(refresh_interval="1s", timeout="1s", limits_refresh_interval="4s"))
    e.wait_ready()
    assert limit(e) == (5_000, ["applied"])
    wait_until(lambda: len(sent(aws, "ListServiceQuotas")) >= 3, 60, "three limits lookups")
    lookups, refreshes = sent(aws, "ListServiceQuotas")[:3], sent(aws, "DescribeRepositories")
    # Each lookup 4 s (±10% jitter) after the last, at the start of the first usage
    # refresh then due (refreshes are 1 s apart): never sooner, and not an interval late.
    for a, b in zip(lookups, lookups[1:]):
        assert 4 * 0.9 - 0.1 <= b - a <= 4 * 1.1 + 1 + 1.5, lookups
    between = [t for t in refreshes if lookups[0] < t < lookups[2]]
    assert len(between) >= 5, (lookups, refreshes)


def test_a_lookup_that_failed_is_tried_again_at_the_next_refresh(aws, exporter):
    seed(aws)
    # Every attempt of the first lookup fails (5 attempts, retried): no answer.
    aws.fault(operation="ListServiceQuotas", code="ServiceUnavailableException", status=503, times=5)
    e = exporter(BIN, config(refresh_interval="1s", timeout="1s", limits_refresh_interval="1h"))
    e.wait_ready()
    assert e.value("aws_quota_usage", quota_code=REPOS, account_id=ACCOUNT_A) == 2
    # Not an hour later: at the next usage refresh, a second ago.
    wait_until(lambda: limit(e) == (5_000, ["applied"]), 30, "the applied limit")
    assert len(sent(aws, "ListServiceQuotas")) == 6
    # Then, complete, the next lookup is an hour away: three more refreshes call none.
    done = len(sent(aws, "DescribeRepositories"))
    wait_until(lambda: len(sent(aws, "DescribeRepositories")) >= done + 3, 30, "three more refreshes")
    assert len(sent(aws, "ListServiceQuotas")) == 6


def test_a_lookup_over_the_timeout_is_abandoned_and_the_refresh_goes_on(aws, exporter):
    seed(aws)
    aws.fault(operation="ListServiceQuotas", latency_ms=4000, times=1)
    e = exporter(BIN, config(refresh_interval="2s", timeout="2s", limits_refresh_interval="1h"))
    e.wait_ready(timeout=60)
    # The usage was counted in the same refresh, under the built-in limit.
    assert e.value("aws_quota_usage", quota_code=REPOS, account_id=ACCOUNT_A) == 2
    assert e.value("aws_quota_exporter_collector_success", collector="ecr_repositories") == 1
    assert "limits refresh timed out; keeping the last known limits" in e.logs()
    # Incomplete, so it is tried again at the next refresh, and answers.
    wait_until(lambda: limit(e) == (5_000, ["applied"]), 30, "the applied limit")
