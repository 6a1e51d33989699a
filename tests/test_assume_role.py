"""AssumeRole as AWS has it, against the local AWS test server: a role that requires an
external ID refuses an assume without it, the session name is the configured one, and
credentials that expire are renewed before requests signed with them are refused."""

from __future__ import annotations

import time

import boto3
import botocore.exceptions
import pytest
import requests

from conftest import ACCOUNT_A, ACCOUNT_B, ROLE_B, fast_retries, wait_until

BIN = "ssm_quota_exporter"


def config(**account_b) -> dict:
    fast = {"refresh_interval": "2s", "timeout": "2s", "max_staleness": "1m"}
    return {
        "accounts": [{}, {"role_arn": ROLE_B, **account_b}],
        "regions": ["eu-west-1"],
        "collectors": {"ssm_parameters": fast},
        "aws": fast_retries(),
    }


def assumed(aws) -> list[dict]:
    return requests.get(f"{aws.url}/_headroom/assumed", timeout=10).json()


def success(e, account: str) -> float | None:
    return e.value("aws_quota_exporter_collector_success", collector="ssm_parameters", account_id=account)


def test_the_external_id_and_session_name_are_sent(aws, exporter):
    aws.seed_ssm("eu-west-1", 3, 0, account=ACCOUNT_B)
    aws.post("roles", {"role_arn": ROLE_B, "external_id": "ext-4f9a"})
    e = exporter(BIN, config(external_id="ext-4f9a", session_name="headroom-test"))
    e.wait_ready()
    assert e.value("aws_quota_usage", account_id=ACCOUNT_B, quota_code="standard_parameters") == 3
    seen = {(a["role_arn"], a["external_id"], a["session_name"], a["refused"]) for a in assumed(aws)}
    assert seen == {(ROLE_B, "ext-4f9a", "headroom-test", False)}


def test_a_role_that_requires_an_external_id_refuses_an_assume_without_it(aws, exporter):
    aws.seed_ssm("eu-west-1", 2, 0, account=ACCOUNT_A)
    aws.seed_ssm("eu-west-1", 3, 0, account=ACCOUNT_B)
    aws.post("roles", {"role_arn": ROLE_B, "external_id": "ext-4f9a"})
    e = exporter(BIN, config(external_id="not-the-one"))
    e.wait_ready()
    wait_until(lambda: success(e, ACCOUNT_B) == 0, 30, "account B's collector to fail")
    # Only the account behind the role fails; the other is counted.
    assert success(e, ACCOUNT_A) == 1
    assert e.value("aws_quota_usage", account_id=ACCOUNT_A, quota_code="standard_parameters") == 2
    assert e.value("aws_quota_usage", account_id=ACCOUNT_B, quota_code="standard_parameters") is None
    assert all(a["refused"] for a in assumed(aws))
    assert "AccessDenied" in e.logs() and ROLE_B in e.logs()


def test_assumed_credentials_are_renewed_before_requests_are_refused(aws, exporter):
    # Credentials that live 6 s: requests signed with them later are refused with
    # ExpiredTokenException. Wait until two of them have expired, then for two more
    # refreshes: every request must still be accepted.
    aws.seed_ssm("eu-west-1", 3, 0, account=ACCOUNT_B)
    aws.post("roles", {"role_arn": ROLE_B, "duration_s": 6})
    e = exporter(BIN, config())
    e.wait_ready()

    def calls() -> list[dict]:
        return [r for r in aws.log() if r["operation"] == "DescribeParameters" and r["account"] == ACCOUNT_B]

    first = assumed(aws)[0]["expires"]
    wait_until(lambda: time.time() >= first + 7, 30, "two credential lifetimes to pass")
    before = len(calls())
    wait_until(lambda: len(calls()) >= before + 2, 30, "two more refreshes of account B")
    log = calls()
    assert all(r["status"] == 200 for r in log), [r for r in log if r["status"] != 200]
    assert len({a["expires"] for a in assumed(aws)}) >= 3
    assert success(e, ACCOUNT_B) == 1


def test_the_server_refuses_expired_credentials_and_a_missing_external_id(aws):
    kw = {"endpoint_url": aws.url, "region_name": "eu-west-1", "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    sts = boto3.client("sts", **kw)
    aws.post("roles", {"role_arn": ROLE_B, "external_id": "ext-4f9a", "duration_s": 1})
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        sts.assume_role(RoleArn=ROLE_B, RoleSessionName="probe")
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    c = sts.assume_role(RoleArn=ROLE_B, RoleSessionName="probe", ExternalId="ext-4f9a")["Credentials"]
    ssm = boto3.client("ssm", **{**kw, "aws_access_key_id": c["AccessKeyId"], "aws_secret_access_key": c["SecretAccessKey"]},
                       aws_session_token=c["SessionToken"])
    ssm.describe_parameters()
    wait_until(lambda: c["Expiration"].timestamp() <= time.time(), 5, "the credentials to expire")
    with pytest.raises(botocore.exceptions.ClientError) as expired:
        ssm.describe_parameters()
    assert expired.value.response["Error"]["Code"] == "ExpiredTokenException"
