"""Logs: JSON when asked, and never a credential, even at debug level."""

from __future__ import annotations

import json

from conftest import ROLE_B


def test_json_logs_at_debug_hold_no_credentials(aws, exporter):
    secret = "Zq8SECRETnotForLogs0000000000000000000000"
    aws.seed_ssm("eu-west-1", 3, 0)
    e = exporter(
        "ssm_quota_exporter",
        {"accounts": [{}, {"role_arn": ROLE_B, "external_id": "ext-id-do-not-log"}], "regions": ["eu-west-1"]},
        extra_args=["--log.format=json", "--log.level=debug"],
        env={"AWS_SECRET_ACCESS_KEY": secret, "AWS_ACCESS_KEY_ID": "AKIADONOTLOGTHISKEY1"},
    )
    e.wait_ready()
    logs = e.logs()
    lines = [l for l in logs.splitlines() if l.strip()]
    assert lines, "no logs at all"
    records = [json.loads(l) for l in lines]
    assert any(r.get("message") == "listening" for r in records), records
    for needle in (secret, "AKIADONOTLOGTHISKEY1", "ext-id-do-not-log"):
        assert needle not in logs
    # The assumed role's credentials, as the test server handed them out, never appear
    # either (nor do their field names).
    issued = aws.post("issued_secrets")
    assert len(issued) >= 2, "the role was assumed: a secret key and a session token"
    for value in issued:
        assert value not in logs
    assert "SessionToken" not in logs and "secret_access_key" not in logs.lower()
