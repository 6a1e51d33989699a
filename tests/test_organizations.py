"""Accounts discovered with AWS Organizations, against the local AWS test server: an
organisation of nested OUs and 66 accounts over several pages of 20, some suspended or
closed, some excluded, some tagged; each discovered account counted exactly through the
role assumed in it, named on aws_quota_account_info, and followed while the exporter
runs (added, suspended, removed, a role denied, discovery failing)."""

from __future__ import annotations

import math

from conftest import ACCOUNT_A, fast_retries, wait_until

BIN = "ssm_quota_exporter"
ROLE = "headroom-reader"
REGION = "eu-west-1"

# Nested OUs: prod/{payments, search/{eu}}, dev/{sandbox}.
OUS = [
    {"name": "prod", "children": [{"name": "payments"}, {"name": "search", "children": [{"name": "eu"}]}]},
    {"name": "dev", "children": [{"name": "sandbox"}]},
]
PLACES = ["", "prod", "prod/payments", "prod/search", "prod/search/eu", "dev", "dev/sandbox"]


def account_id(i: int) -> str:
    return f"2000000{i:05d}"


def members(n: int = 65) -> list[dict]:
    """`n` members spread over the OUs; every 7th tagged team=payments, every 5th env=prod;
    the 10th and 20th suspended, the 30th closed."""
    out = []
    for i in range(1, n + 1):
        tags = {}
        if i % 7 == 0:
            tags["team"] = "payments"
        if i % 5 == 0:
            tags["env"] = "prod"
        state = {10: "SUSPENDED", 20: "SUSPENDED", 30: "CLOSED"}.get(i, "ACTIVE")
        out.append({"id": account_id(i), "name": f"member-{i}", "ou": PLACES[i % len(PLACES)], "tags": tags, "state": state})
    return out


INACTIVE = {account_id(10), account_id(20), account_id(30)}


def config(**organization) -> dict:
    fast = {"refresh_interval": "2s", "timeout": "2s", "max_staleness": "1m"}
    return {
        "organization": {"role_name": ROLE, "discovery_interval": "1h", **organization},
        "account_tags": ["team", "env"],
        "regions": [REGION],
        "collectors": {"ssm_parameters": fast},
        "aws": fast_retries(),
    }


def seed(aws, accounts: list[dict]) -> None:
    """Parameters in every member: account i holds i standard ones."""
    for a in accounts:
        aws.seed_ssm(REGION, int(a["id"][-5:]), 0, account=a["id"])


def started(aws, exporter, n: int, **organization):
    """An organisation of `n` members and an exporter that rediscovers it every 2 s, ready."""
    accounts = members(n)
    aws.seed_org(accounts, OUS)
    seed(aws, accounts)
    e = exporter(BIN, config(discovery_interval="2s", exclude_accounts=[ACCOUNT_A], **organization))
    e.wait_ready(timeout=120)
    return accounts, e


def usage(e, account: str) -> float | None:
    return e.value("aws_quota_usage", account_id=account, quota_code="standard_parameters")


def info(e) -> dict[str, dict[str, str]]:
    return {l["account_id"]: l for n, l, v in e.samples() if n == "aws_quota_account_info" and v == 1}


def ops(aws, operation: str) -> list[dict]:
    return [r for r in aws.log() if r["operation"] == operation]


def test_every_active_account_of_the_organisation_is_counted_and_named(aws, exporter):
    accounts = members()
    org = aws.seed_org(accounts, OUS)
    seed(aws, accounts)
    excluded = [account_id(3), account_id(4)]
    # The management account is listed by Organizations too; it has no reader role here.
    e = exporter(BIN, config(exclude_accounts=[*excluded, ACCOUNT_A]))
    e.wait_ready(timeout=120)

    expected = {a["id"] for a in accounts} - INACTIVE - set(excluded)
    assert len(expected) == 60
    seen = info(e)
    assert set(seen) == expected
    for a in accounts:
        if a["id"] in expected:
            assert usage(e, a["id"]) == int(a["id"][-5:]), a
            labels = seen[a["id"]]
            assert labels["account_name"] == a["name"]
            assert labels.get("tag_team", "") == a["tags"].get("team", "")
            assert labels.get("tag_env", "") == a["tags"].get("env", "")
        else:
            assert usage(e, a["id"]) is None, a
    assert e.value("aws_quota_exporter_discovery_success") == 1
    assert e.value("aws_quota_exporter_discovery_accounts") == 60
    # 66 accounts (the management one included) in pages of 20: 4 ListAccounts; tags are
    # read once per selected account; every member is reached through its own role.
    assert len(org["accounts"]) == 66
    assert len(ops(aws, "ListAccounts")) == math.ceil(66 / 20)
    assert sorted(r["account"] for r in ops(aws, "ListTagsForResource")) == [ACCOUNT_A] * 60
    roles = {a["role_arn"] for a in aws.assumed() if not a["refused"]}
    assert roles == {f"arn:aws:iam::{i}:role/{ROLE}" for i in expected}
    callers = {r["account"] for r in ops(aws, "DescribeParameters")}
    assert callers == expected


def test_organizational_units_tags_and_short_pages_select_accounts(aws, exporter):
    accounts = members()
    org = aws.seed_org(accounts, OUS)
    seed(aws, accounts)
    aws.post("settings", {"short_pages": True})
    # Only under prod (at any depth), only env=prod*.
    e = exporter(BIN, config(organizational_units=[org["ous"]["prod"]], require_tags={"env": "prod*"}))
    e.wait_ready(timeout=120)
    under_prod = {a["id"] for a in accounts if a["ou"].startswith("prod")}
    expected = {a["id"] for a in accounts if a["id"] in under_prod and a["tags"].get("env") == "prod"} - INACTIVE
    assert expected and len(expected) < len(under_prod)
    assert set(info(e)) == expected
    for i in expected:
        assert usage(e, i) == int(i[-5:])
    # The OU tree was walked, not the whole organisation listed.
    assert not ops(aws, "ListAccounts")
    # prod, payments, search, eu: each asked for its accounts and its child OUs, over
    # short pages.
    assert len(ops(aws, "ListChildren")) >= 4 and len(ops(aws, "ListAccountsForParent")) >= 4
    # Tags were read for every active account under prod (short pages: over several calls).
    assert len(ops(aws, "ListTagsForResource")) >= len(under_prod - INACTIVE)


def test_accounts_added_suspended_and_removed_are_followed(aws, exporter):
    accounts, e = started(aws, exporter, 25)
    assert usage(e, account_id(7)) == 7
    new = {"id": account_id(99), "name": "brand-new", "ou": "dev", "tags": {"team": "search"}}
    aws.add_org_accounts([new])
    aws.seed_ssm(REGION, 42, 0, account=new["id"])
    aws.org_account_state(account_id(7), "SUSPENDED")
    aws.remove_org_account(account_id(8))
    # Within a discovery interval and a refresh, with margin for a slow machine.
    wait_until(lambda: usage(e, new["id"]) == 42, 30, "the new account to be counted")
    assert info(e)[new["id"]]["tag_team"] == "search"
    assert info(e)[new["id"]]["account_name"] == "brand-new"
    wait_until(lambda: usage(e, account_id(7)) is None and usage(e, account_id(8)) is None, 30,
               "the suspended and the removed account to disappear")
    assert account_id(7) not in info(e) and account_id(8) not in info(e)
    assert e.value("aws_quota_exporter_collector_success", account_id=account_id(7)) is None
    # The others kept being counted all along.
    assert usage(e, account_id(9)) == 9
    assert "discovered accounts put in force" in e.logs()


def test_a_denied_role_fails_only_its_own_account(aws, exporter):
    denied = account_id(5)
    aws.role(f"arn:aws:iam::{denied}:role/{ROLE}", deny=True)
    accounts, e = started(aws, exporter, 12)
    success = lambda a: e.value("aws_quota_exporter_collector_success", collector="ssm_parameters", account_id=a)  # noqa: E731
    assert success(denied) == 0
    assert usage(e, denied) is None
    # Named all the same, so the failing account is recognisable.
    assert info(e)[denied]["account_name"] == "member-5"
    for a in accounts:
        if a["id"] not in INACTIVE | {denied}:
            assert success(a["id"]) == 1 and usage(e, a["id"]) == int(a["id"][-5:]), a
    assert "AccessDenied" in e.logs()


def test_a_failing_discovery_keeps_the_last_accounts(aws, exporter):
    accounts, e = started(aws, exporter, 12)
    before = set(info(e))
    assert len(before) == 11
    fault = aws.fault(operation="ListAccounts", code="TooManyRequestsException", status=400)
    aws.remove_org_account(account_id(1))
    wait_until(lambda: e.value("aws_quota_exporter_discovery_success") == 0, 30, "discovery to fail")
    assert set(info(e)) == before
    calls = len(ops(aws, "DescribeParameters"))
    wait_until(lambda: len(ops(aws, "DescribeParameters")) >= calls + 10, 30, "the accounts to keep being refreshed")
    assert usage(e, account_id(1)) == 1
    assert "account discovery failed" in e.logs() and "TooManyRequestsException" in e.logs()
    aws.post("faults/delete", {"id": fault})
    wait_until(lambda: e.value("aws_quota_exporter_discovery_success") == 1, 90, "discovery to recover")
    wait_until(lambda: account_id(1) not in info(e), 30, "the removed account to go")
    assert e.value("aws_quota_exporter_discovery_accounts") == 10
