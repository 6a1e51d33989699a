"""AWS Organizations as the test server answers it, with boto3 straight at the server
(no exporter): AWS's paging (at most 20 a page, tokens bound to the operation, the
caller and the request's inputs), account State and Status, tags, who may list
(the management account and delegated administrators reached through STS), denied
member roles, and faults in Organizations' own error shape."""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any, Callable

import boto3
import botocore.config
import botocore.exceptions
import pytest
import requests

from conftest import ACCOUNT_A

TARGET = "AWSOrganizationsV20161128"
BASE = {"region_name": "us-east-1", "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
NO_RETRIES = botocore.config.Config(retries={"total_max_attempts": 1})

# 64 member accounts by OU path ("" is the root): 65 with the management account.
LAYOUT = {"": 7, "prod/payments": 25, "prod/payments/eu": 5, "prod/web": 10, "dev/sandbox": 12, "teams/team-03": 5}
TEAMS = 23  # child OUs of "teams": more than a page
OUS = [
    {"name": "prod", "children": [{"name": "payments", "children": [{"name": "eu"}]}, {"name": "web"}]},
    {"name": "dev", "children": [{"name": "sandbox"}]},
    {"name": "teams", "children": [{"name": f"team-{i:02d}"} for i in range(TEAMS)]},
]


def members() -> list[dict]:
    out: list[dict] = []
    for path, n in LAYOUT.items():
        for _ in range(n):
            i = len(out)
            out.append({"id": f"2000000000{i:02d}", "name": f"acct-{i:02d}", "ou": path, "tags": {"n": str(i)}})
    return out


ALL_ACCOUNTS = sorted([ACCOUNT_A, *(a["id"] for a in members())])


def client(aws, service: str = "organizations", creds: dict | None = None, **kw: Any):
    args: dict[str, Any] = {**BASE, "endpoint_url": aws.url, **kw}
    if creds:
        args.update(aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=creds["SessionToken"])
    return boto3.client(service, **args)


def assume(aws, account: str, role: str = "headroom-org-reader") -> dict:
    return client(aws, "sts").assume_role(RoleArn=f"arn:aws:iam::{account}:role/{role}", RoleSessionName="headroom-test")["Credentials"]


def pages(call: Callable, **kw: Any) -> list[dict]:
    """Every page of a listing, following NextToken by hand (no paginator)."""
    out = []
    while True:
        page = call(**kw)
        out.append(page)
        if "NextToken" not in page:
            return out
        kw["NextToken"] = page["NextToken"]


def refused(call: Callable, code: str, reason: str | None = None) -> dict:
    """Calls `call`, which must fail with `code` (and `reason`); the error response."""
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call()
    response = e.value.response
    assert response["Error"]["Code"] == code, response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    if reason is not None:
        assert response.get("Reason") == reason, response
    return response


def raw(aws, operation: str, body: dict) -> requests.Response:
    """An unsigned awsJson1.1 request: the server takes it as the default account's."""
    headers = {"X-Amz-Target": f"{TARGET}.{operation}", "Content-Type": "application/x-amz-json-1.1"}
    return requests.post(f"{aws.url}/", headers=headers, data=json.dumps(body), timeout=10)


def test_65_accounts_in_nested_ous_list_in_pages_of_at_most_20(aws):
    seeded = aws.seed_org(members(), OUS)
    assert len(ALL_ACCOUNTS) == 65 and sorted(seeded["accounts"]) == ALL_ACCOUNTS
    org = client(aws)
    got = pages(org.list_accounts)
    assert [len(p["Accounts"]) for p in got] == [20, 20, 20, 5]
    ids = [a["Id"] for p in got for a in p["Accounts"]]
    assert sorted(ids) == ALL_ACCOUNTS, "each account exactly once"
    for config, n_pages in (({}, 4), ({"PageSize": 7}, 10)):
        listed = list(org.get_paginator("list_accounts").paginate(PaginationConfig=config))
        assert len(listed) == n_pages
        assert sorted(a["Id"] for p in listed for a in p["Accounts"]) == ALL_ACCOUNTS
    # Every account is in exactly one parent of the nested tree.
    parents = [seeded["root_id"], *seeded["ous"].values()]
    by_parent = [
        a["Id"] for parent in parents
        for p in org.get_paginator("list_accounts_for_parent").paginate(ParentId=parent) for a in p["Accounts"]
    ]
    assert sorted(by_parent) == ALL_ACCOUNTS
    calls = [e for e in aws.log() if e["operation"] == "ListAccounts"]
    assert len(calls) == 4 + 4 + 10
    assert {(e["account"], e["status"], e["service"]) for e in calls} == {(ACCOUNT_A, 200, "organizations")}


def test_list_children_and_list_accounts_for_parent_page_at_20(aws):
    seeded = aws.seed_org(members(), OUS)
    org = client(aws)
    root, ous = seeded["root_id"], seeded["ous"]
    assert re.fullmatch(r"o-[0-9a-z]{10}", seeded["organization_id"])
    assert re.fullmatch(r"r-[0-9a-z]{4}", root)
    assert all(re.fullmatch(rf"ou-{root[2:]}-[0-9a-z]{{8}}", ou) for ou in ous.values()), ous
    assert org.describe_organization()["Organization"]["Id"] == seeded["organization_id"]
    assert [r["Id"] for r in org.list_roots()["Roots"]] == [root]

    teams = pages(org.list_children, ParentId=ous["teams"], ChildType="ORGANIZATIONAL_UNIT")
    assert [len(p["Children"]) for p in teams] == [20, 3]
    assert [(c["Id"], c["Type"]) for p in teams for c in p["Children"]] == [
        (ous[f"teams/team-{i:02d}"], "ORGANIZATIONAL_UNIT") for i in range(TEAMS)
    ]
    top = pages(org.list_children, ParentId=root, ChildType="ORGANIZATIONAL_UNIT")
    assert [c["Id"] for p in top for c in p["Children"]] == [ous["prod"], ous["dev"], ous["teams"]]
    in_root = pages(org.list_children, ParentId=root, ChildType="ACCOUNT")
    assert sorted(c["Id"] for p in in_root for c in p["Children"]) == sorted([ACCOUNT_A, *(a["id"] for a in members() if a["ou"] == "")])

    payments = pages(org.list_accounts_for_parent, ParentId=ous["prod/payments"])
    assert [len(p["Accounts"]) for p in payments] == [20, 5]
    assert [a["Id"] for p in payments for a in p["Accounts"]] == [a["id"] for a in members() if a["ou"] == "prod/payments"]
    refused(lambda: org.list_children(ParentId=f"ou-{root[2:]}-zzzzzzzz", ChildType="ACCOUNT"), "ParentNotFoundException")


def test_a_token_is_refused_on_another_operation_parent_child_type_or_resource_and_once_expired(aws):
    seeded = aws.seed_org(members(), OUS)
    aws.add_org_accounts([{"id": "300000000001", "tags": {f"k{i:02d}": str(i) for i in range(25)}}, {"id": "300000000002", "tags": {"a": "b"}}])
    org = client(aws)
    ous = seeded["ous"]
    token = org.list_accounts_for_parent(ParentId=ous["prod/payments"])["NextToken"]
    # Good where it was given...
    assert len(org.list_accounts_for_parent(ParentId=ous["prod/payments"], NextToken=token)["Accounts"]) == 5
    # ...and nowhere else.
    for call in (
        lambda: org.list_accounts(NextToken=token),
        lambda: org.list_accounts_for_parent(ParentId=ous["prod/web"], NextToken=token),
        lambda: org.list_children(ParentId=ous["prod/payments"], ChildType="ACCOUNT", NextToken=token),
    ):
        refused(call, "InvalidInputException", "INVALID_NEXT_TOKEN")
    forged = base64.b64encode(b"page:ListAccounts:0123456789abcdef:20:1:0:00000000000000000000").decode()
    refused(lambda: org.list_accounts(NextToken=forged), "InvalidInputException", "INVALID_NEXT_TOKEN")

    children = org.list_children(ParentId=ous["teams"], ChildType="ORGANIZATIONAL_UNIT")["NextToken"]
    assert len(org.list_children(ParentId=ous["teams"], ChildType="ORGANIZATIONAL_UNIT", NextToken=children)["Children"]) == 3
    refused(lambda: org.list_children(ParentId=ous["teams"], ChildType="ACCOUNT", NextToken=children), "InvalidInputException", "INVALID_NEXT_TOKEN")

    # Tags page at 20 too, with tokens bound to the resource.
    tags = pages(org.list_tags_for_resource, ResourceId="300000000001")
    assert [len(p["Tags"]) for p in tags] == [20, 5]
    refused(lambda: org.list_tags_for_resource(ResourceId="300000000002", NextToken=tags[0]["NextToken"]), "InvalidInputException", "INVALID_NEXT_TOKEN")

    # In Organizations' JSON shape, as AWS sends it.
    r = raw(aws, "ListAccounts", {"NextToken": token})
    assert r.status_code == 400 and r.headers["x-amzn-ErrorType"].startswith("InvalidInputException:")
    assert r.json()["__type"] == "InvalidInputException" and r.json()["Reason"] == "INVALID_NEXT_TOKEN" and r.json()["Message"]

    aws.post("settings", {"token_ttl_s": 0.5})
    stale = org.list_accounts()["NextToken"]
    time.sleep(1)
    refused(lambda: org.list_accounts(NextToken=stale), "InvalidInputException", "INVALID_NEXT_TOKEN")


def test_max_results_above_20_is_refused(aws):
    seeded = aws.seed_org(members(), OUS)
    org = client(aws)
    listings = (
        (org.list_accounts, {}, "Accounts"),
        (org.list_accounts_for_parent, {"ParentId": seeded["ous"]["prod/payments"]}, "Accounts"),
        (org.list_children, {"ParentId": seeded["ous"]["teams"], "ChildType": "ORGANIZATIONAL_UNIT"}, "Children"),
    )
    for call, kw, key in listings:
        refused(lambda: call(MaxResults=21, **kw), "InvalidInputException", "MAX_VALUE_EXCEEDED")
        assert len(call(MaxResults=20, **kw)[key]) == 20
        assert len(call(MaxResults=3, **kw)[key]) == 3


def test_short_pages_still_list_everything(aws):
    seeded = aws.seed_org(members(), OUS)
    aws.post("settings", {"short_pages": True})
    org = client(aws)
    got = pages(org.list_accounts)
    sizes = [len(p["Accounts"]) for p in got]
    assert sizes[0] == 0 and "NextToken" in got[0], sizes
    assert any(0 < s < 20 for s in sizes[:-1]) and max(sizes) <= 20 and len(got) > 4, sizes
    assert sorted(a["Id"] for p in got for a in p["Accounts"]) == ALL_ACCOUNTS
    children = list(org.get_paginator("list_children").paginate(ParentId=seeded["ous"]["teams"], ChildType="ORGANIZATIONAL_UNIT"))
    assert len(children) > 2 and sum(len(p["Children"]) for p in children) == TEAMS
    payments = list(org.get_paginator("list_accounts_for_parent").paginate(ParentId=seeded["ous"]["prod/payments"]))
    assert len(payments) > 2 and sum(len(p["Accounts"]) for p in payments) == LAYOUT["prod/payments"]


def test_account_state_and_status_as_aws_reports_them(aws):
    seeded = aws.seed_org([
        {"id": "300000000001", "name": "active"},
        {"id": "300000000002", "name": "to-suspend"},
        {"id": "300000000003", "name": "to-close"},
        {"id": "300000000004", "state": "PENDING_CLOSURE"},
        {"id": "300000000005", "state": "PENDING_ACTIVATION"},
        {"id": "300000000006", "name": "leaves"},
    ])
    assert aws.org_account_state("300000000002", "SUSPENDED") == {"id": "300000000002", "state": "SUSPENDED", "status": "SUSPENDED"}
    assert aws.org_account_state("300000000003", "CLOSED")["status"] == "SUSPENDED"
    aws.remove_org_account("300000000006")
    org = client(aws)
    listed = {a["Id"]: a for p in org.get_paginator("list_accounts").paginate() for a in p["Accounts"]}
    assert {i: (a["Status"], a["State"]) for i, a in listed.items()} == {
        ACCOUNT_A: ("ACTIVE", "ACTIVE"),
        "300000000001": ("ACTIVE", "ACTIVE"),
        "300000000002": ("SUSPENDED", "SUSPENDED"),
        "300000000003": ("SUSPENDED", "CLOSED"),
        "300000000004": ("PENDING_CLOSURE", "PENDING_CLOSURE"),
        "300000000005": ("ACTIVE", "PENDING_ACTIVATION"),
    }
    assert (listed[ACCOUNT_A]["Name"], listed[ACCOUNT_A]["JoinedMethod"]) == ("management", "INVITED")
    assert (listed["300000000001"]["Name"], listed["300000000001"]["JoinedMethod"]) == ("active", "CREATED")
    assert listed["300000000003"]["Arn"] == f"arn:aws:organizations::{ACCOUNT_A}:account/{seeded['organization_id']}/300000000003"
    assert org.describe_account(AccountId="300000000003")["Account"]["State"] == "CLOSED"
    # JoinedTimestamp is epoch seconds, a JSON number, as awsJson1.1 sends timestamps.
    body = raw(aws, "ListAccounts", {}).json()
    stamps = [a["JoinedTimestamp"] for a in body["Accounts"]]
    assert all(isinstance(t, (int, float)) and not isinstance(t, bool) and abs(time.time() - t) < 120 for t in stamps), stamps


def test_tags_are_listed_and_replaced(aws):
    seeded = aws.seed_org(
        [{"id": "400000000001", "ou": "prod", "tags": {"team": "payments", "env": "prod"}}, {"id": "400000000002"}],
        ous=[{"name": "prod", "tags": {"tier": "1"}}],
    )
    org = client(aws)

    def tags(resource: str) -> dict[str, str]:
        return {t["Key"]: t["Value"] for p in org.get_paginator("list_tags_for_resource").paginate(ResourceId=resource) for t in p["Tags"]}

    assert tags("400000000001") == {"team": "payments", "env": "prod"}
    assert tags("400000000002") == {}
    assert tags(seeded["ous"]["prod"]) == {"tier": "1"}
    aws.org_tags("400000000001", {"team": "web"})
    assert tags("400000000001") == {"team": "web"}
    refused(lambda: org.list_tags_for_resource(ResourceId="499999999999"), "TargetNotFoundException")


def test_a_member_account_and_an_outsider_may_not_list(aws):
    org = client(aws)
    # Before any organisation is seeded, no account is in one.
    refused(org.list_accounts, "AWSOrganizationsNotInUseException")
    seeded = aws.seed_org(members(), OUS)
    member = "200000000010"
    m = client(aws, creds=assume(aws, member))
    for call in (
        m.list_accounts,
        lambda: m.list_accounts_for_parent(ParentId=seeded["root_id"]),
        lambda: m.list_children(ParentId=seeded["root_id"], ChildType="ORGANIZATIONAL_UNIT"),
        lambda: m.list_tags_for_resource(ResourceId=member),
    ):
        refused(call, "AccessDeniedException")
    # A member may still describe its organisation, as in AWS.
    assert m.describe_organization()["Organization"]["MasterAccountId"] == ACCOUNT_A
    outsider = client(aws, creds=assume(aws, "999999999999"))
    refused(outsider.list_accounts, "AWSOrganizationsNotInUseException")
    refused(outsider.describe_organization, "AWSOrganizationsNotInUseException")
    by_member = [e for e in aws.log() if e["operation"] == "ListAccounts" and e["account"] == member]
    assert len(by_member) == 1 and by_member[0]["status"] == 400
    assert len(org.list_accounts()["Accounts"]) == 20, "the management account lists"


def test_a_delegated_admin_reached_through_sts_may_list(aws):
    admin = "200000000040"
    seeded = aws.seed_org(members(), OUS, delegated_admins=[admin])
    a = client(aws, creds=assume(aws, admin, "OrganizationAccountAccessRole"))
    listed = list(a.get_paginator("list_accounts").paginate())
    assert [len(p["Accounts"]) for p in listed] == [20, 20, 20, 5]
    assert sorted(x["Id"] for p in listed for x in p["Accounts"]) == ALL_ACCOUNTS
    teams = list(a.get_paginator("list_children").paginate(ParentId=seeded["ous"]["teams"], ChildType="ORGANIZATIONAL_UNIT"))
    assert sum(len(p["Children"]) for p in teams) == TEAMS
    assert a.list_tags_for_resource(ResourceId="200000000007")["Tags"] == [{"Key": "n", "Value": "7"}]
    calls = [e for e in aws.log() if e["operation"] == "ListAccounts"]
    assert [(e["account"], e["status"]) for e in calls] == [(admin, 200)] * 4
    # Tokens are bound to their caller: the management account's is not the admin's.
    token = client(aws).list_accounts()["NextToken"]
    refused(lambda: a.list_accounts(NextToken=token), "InvalidInputException", "INVALID_NEXT_TOKEN")
    # Leaving the organisation ends the delegation.
    aws.remove_org_account(admin)
    refused(a.list_accounts, "AWSOrganizationsNotInUseException")


def test_a_denied_role_is_refused_while_another_member_role_works(aws):
    aws.seed_org(members(), OUS)
    denied = "arn:aws:iam::200000000011:role/headroom-reader"
    member = "200000000012"
    allowed = f"arn:aws:iam::{member}:role/headroom-reader"
    aws.role(denied, deny=True)
    sts = client(aws, "sts")
    for _ in range(2):  # every time, not once
        with pytest.raises(botocore.exceptions.ClientError) as e:
            sts.assume_role(RoleArn=denied, RoleSessionName="headroom-test")
        assert e.value.response["Error"]["Code"] == "AccessDenied"
    creds = sts.assume_role(RoleArn=allowed, RoleSessionName="headroom-test")["Credentials"]
    assert [(x["role_arn"], x["refused"]) for x in aws.assumed()] == [(denied, True), (denied, True), (allowed, False)]

    aws.seed_ssm("eu-west-1", 3, 0, account=member, prefix="/member")
    ssm = client(aws, "ssm", creds=creds, region_name="eu-west-1")
    names = [p["Name"] for p in ssm.describe_parameters()["Parameters"]]
    assert len(names) == 3 and all(n.startswith("/member/") for n in names), names
    # moto keeps them in the member's data: the base account has none.
    assert client(aws, "ssm", region_name="eu-west-1").describe_parameters()["Parameters"] == []
    log = aws.log()
    assert [(e["account"], e["status"]) for e in log if e["operation"] == "DescribeParameters"] == [(member, 200), (ACCOUNT_A, 200)]
    assert [e["status"] for e in log if e["operation"] == "AssumeRole"] == [403, 403, 200]


def test_a_fault_on_list_accounts_answers_too_many_requests_in_organizations_shape(aws):
    seeded = aws.seed_org(members(), OUS)
    aws.fault(operation="ListAccounts", code="TooManyRequestsException", times=2)
    r = raw(aws, "ListAccounts", {})
    assert r.status_code == 400
    assert r.headers["x-amzn-ErrorType"].split(":")[0] == "TooManyRequestsException"
    body = r.json()
    assert body["__type"] == "TooManyRequestsException" and body["Message"] and "message" not in body, body
    org = client(aws, config=NO_RETRIES)
    refused(org.list_accounts, "TooManyRequestsException")
    assert len(org.list_accounts()["Accounts"]) == 20, "the fault fired its two times"
    # Other operations are untouched.
    assert len(org.list_children(ParentId=seeded["ous"]["teams"], ChildType="ORGANIZATIONAL_UNIT")["Children"]) == 20
    assert [(e["status"], e["fault"]) for e in aws.log() if e["operation"] == "ListAccounts"] == [
        (400, "TooManyRequestsException"), (400, "TooManyRequestsException"), (200, None),
    ]
