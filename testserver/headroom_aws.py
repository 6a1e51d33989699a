"""The local AWS test server: moto's server with a thin layer that behaves like AWS
where moto does not and the exporters depend on it.

What the layer adds, per request, in front of moto (everything else is moto's):
- SSM DescribeParameters with AWS's paging: MaxResults 1..50 (default 10), more than 50
  is a ValidationException; optionally short and empty pages that still carry a
  NextToken; only the account's own parameters, never moto's public /aws/service ones.
- Service Quotas from data set through the control API (moto has none for ssm, ecr or
  s3): ListServiceQuotas (account and resource level, ALL) and
  ListAWSDefaultServiceQuotas paged at 100 like AWS, ListServices (the seeded
  services, paged at 100 with signed tokens), and GetServiceQuota /
  GetAWSDefaultServiceQuota answering a value, NoSuchResourceException or
  AccessDeniedException per account, region, service and quota.
- Seeded quotas for the whole of Service Quotas (any service, with usage, UsageMetric,
  GlobalQuota, QuotaAppliedAtLevel), and a bulk generator (`generate_quotas`).
- The quota utilization report: StartQuotaUtilizationReport and
  GetQuotaUtilizationReport, computed from the seeded usage when a report starts, with a
  scripted lifecycle (PENDING, IN_PROGRESS, COMPLETED or FAILED, or stuck), pages of at
  most 1,000 by utilization descending, tokens bound to their report, reports bound to
  their account and region, and expiry (15 minutes unless set shorter).
- CloudWatch GetMetricData for the seeded AWS/Usage metrics, in the protocol the SDKs
  speak now (Smithy RPC v2 CBOR, query-compatible errors) and in JSON 1.0: datapoints
  every period (60 s unless seeded otherwise) over the past hours at the seeded usage,
  exact dimension matching, at most 500 queries, MaxDatapoints paging; a metric can be
  made late (its newest datapoint minutes old) or empty.
- AWS Organizations from the layer's own organisation, seeded through the control API
  with caller-chosen account IDs (moto's ListAccounts pages at 100, its ListChildren
  not at all): ListAccounts, ListAccountsForParent, ListChildren,
  ListOrganizationalUnitsForParent, ListTagsForResource, ListRoots (at most 20 a page,
  MaxResults 1..20, more is InvalidInputException MAX_VALUE_EXCEEDED), DescribeOrganization
  and DescribeAccount; accounts with Status and State (CLOSED reads Status SUSPENDED),
  JoinedMethod and JoinedTimestamp; AWS-like IDs (o-, r-, ou-<root>-); only the
  management account and delegated administrators may list (another member gets
  AccessDeniedException, an account outside the organisation
  AWSOrganizationsNotInUseException); errors in Organizations' shape (Message, Reason).
  Other Organizations operations go to moto, which knows nothing of this organisation.
- Paging like AWS on every listing the exporters call (DescribeParameters,
  DescribeRepositories, ListImages, ListBuckets, ListDirectoryBuckets, ListAccessPoints,
  ListServices, ListServiceQuotas, ListAWSDefaultServiceQuotas and the Organizations
  listings above; Organizations is global, so its tokens bind no region): opaque signed tokens
  bound to the operation, account, region and the request's own inputs, expiring after
  15 minutes (settable), refused otherwise with each service's own error code; with
  short pages on, every listing answers empty, short and full pages that carry tokens.
- Fault injection: throttling, 5xx, access denied or latency on chosen operations,
  accounts and regions, every n-th matching call and/or a limited number of times.
- Fast seeding of thousands of parameters straight into moto's backend.
- A request log, so tests can count calls from the server's side.
- AssumeRole as a role's trust policy has it: a role may require an external ID
  (AccessDenied without it), be denied outright (AccessDenied, as for a member account
  without that role or whose trust policy leaves the caller out) and hand out
  credentials that expire in seconds; requests signed with expired credentials are
  refused (ExpiredToken), as AWS refuses them. Any account ID can be assumed into:
  requests signed with the credentials count as that account's (log, moto's data).

Control API (JSON over HTTP, under /_headroom/):
  POST /_headroom/reset                     forget faults, quotas, log, settings, organization
  POST /_headroom/seed/ssm                  {"account","region","standard","advanced","prefix"}
  POST /_headroom/quotas                    {"account","region","service_code","quota_code",
                                             "applied": number|"NoSuchResource"|"AccessDenied",
                                             "default": number|"NoSuchResource"|"AccessDenied",
                                             "resources": {"<resource ARN>": number}}
  POST /_headroom/seed_quotas               {"account","region","replace": bool,
                                             "quotas": [{"service_code","service_name","quota_code",
                                               "quota_name","applied","default","adjustable","global",
                                               "usage","usage_metric": {"MetricNamespace","MetricName",
                                               "MetricDimensions","MetricStatisticRecommendation"},
                                               "period","quota_period","resources"}],
                                             "generate": {"count","services","no_usage_every","prefix"}}
  POST /_headroom/report_behaviour          {"account","region","pending_polls","in_progress_polls",
                                             "ready_after_s","fail","error_code","error_message",
                                             "stuck","expiry_s","reuse_s"}
  POST /_headroom/metric_state              {"account","region","service_code","quota_code",
                                             "late_minutes","no_data","history_minutes"}
  POST /_headroom/faults                    {"operation","account","region","code","status",
                                             "every","times","latency_ms","hold"} (all optional but
                                             code, latency_ms or hold); returns {"id"}. With "hold":
                                             true a request it fires on waits until the fault is
                                             deleted (at most 120 s), then is answered
  POST /_headroom/faults/list               [{"id","seen","fired","holding"}]
  POST /_headroom/faults/delete             {"id"}: that fault no longer fires; held requests go on
  POST /_headroom/settings                  {"short_pages": bool, "token_ttl_s": seconds,
                                             "endless_pages": [{"operation","account","region"}]
                                             (account and region optional): those listings never
                                             end, every page past the last item is empty and
                                             carries a token}
  GET  /_headroom/log                       [{"operation","account","region","status","at"}]
  GET  /_headroom/issued_secrets            [secret keys and session tokens AssumeRole gave out]
  POST /_headroom/roles                     {"role_arn","external_id","duration_s","deny"}: what AssumeRole
                                             of that role requires (AccessDenied without the external ID;
                                             always with "deny": true) and how long its credentials live
                                             (then ExpiredToken)
  POST /_headroom/organization              {"management_account" (default 123456789012),
                                             "ous": [{"name","tags","children": [...]}],
                                             "accounts": [{"id" (12 digits),"name","email","ou" (path of OU
                                               names, ""/absent = root),"tags","state","joined_method",
                                               "joined"}],
                                             "delegated_admins": [account IDs], "replace": bool}: a new
                                             organization (refused if one exists without replace); the
                                             management account is added in the root as "management"
                                             unless listed; returns {"organization_id","root_id",
                                             "ous": {path: OU ID},"accounts": [IDs]}
  POST /_headroom/organization/accounts     {"ous","accounts"} added (OUs merged by path);
                                             returns {"ous","accounts"}
  POST /_headroom/organization/account_state {"id","state"}: PENDING_ACTIVATION, ACTIVE, SUSPENDED,
                                             PENDING_CLOSURE or CLOSED; returns {"id","state","status"}
  POST /_headroom/organization/remove       {"id"}: the account leaves (not the management account)
  POST /_headroom/organization/tags         {"id","tags"}: replaces the tags of an account, OU or root
  GET  /_headroom/assumed                   [{"role_arn","external_id","session_name","at","refused","expires"}]
  GET  /_headroom/health                    {"ok": true}

Run: python -m testserver.headroom_aws --port 0 [--host 127.0.0.1] [--seed demo]
It prints one line `READY http://host:port` once it accepts connections.
"""

from __future__ import annotations

import argparse
import base64
import copy
import datetime
import hashlib
import hmac
import io
import json
import math
import os
import re
import secrets
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterable

import cbor2

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

DEFAULT_ACCOUNT = "123456789012"
# The longest a fault with "hold" keeps a request waiting.
HOLD_LIMIT_S = 120.0
# S3 Control operations: signed for s3 like S3's, but errors in <ErrorResponse>.
S3_CONTROL_OPERATIONS = ("ListAccessPoints",)
# CloudWatch's Smithy service name: the RPC v2 CBOR path segment and the JSON target prefix.
CLOUDWATCH_SERVICE = "GraniteServiceVersion20100801"
CREDENTIAL_RE = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")
# AWS Organizations' JSON target prefix, and the operations the layer answers from its
# own organisation model (every other Organizations operation goes to moto, which knows
# nothing of it).
ORGANIZATIONS_TARGET = "AWSOrganizationsV20161128"
ORGANIZATIONS_OPERATIONS = (
    "ListAccounts", "ListAccountsForParent", "ListChildren", "ListOrganizationalUnitsForParent",
    "ListTagsForResource", "ListRoots", "DescribeOrganization", "DescribeAccount",
)


@dataclass
class Fault:
    id: int
    operation: str | None = None
    account: str | None = None
    region: str | None = None
    code: str | None = None
    status: int = 400
    message: str = "injected by the headroom test server"
    every: int = 1
    times: int | None = None
    latency_ms: int = 0
    # Requests it fires on wait until it is deleted (`released` is set).
    hold: bool = False
    released: threading.Event = field(default_factory=threading.Event)
    holding: int = 0
    seen: int = 0
    fired: int = 0

    def matches(self, op: str, account: str, region: str) -> bool:
        return (
            (self.operation is None or self.operation == op)
            and (self.account is None or self.account == account)
            and (self.region is None or self.region == region)
        )


@dataclass
class ReportBehaviour:
    """How the utilization reports of one account and region progress. A report takes
    the behaviour in force when it starts."""

    pending_polls: int = 1  # GetQuotaUtilizationReport calls answering PENDING
    in_progress_polls: int = 1  # then this many answering IN_PROGRESS
    ready_after_s: float = 0.0  # and never finished before this many seconds from the start
    fail: bool = False  # finish as FAILED with error_code and error_message
    error_code: str = "ReportGenerationFailed"
    error_message: str = "The quota utilization report could not be generated."
    stuck: bool = False  # stay IN_PROGRESS for ever after the PENDING polls
    expiry_s: float = 900.0  # AWS deletes reports 15 minutes after they start
    reuse_s: float = 0.0  # Start hands back a report younger than this instead of a new one

    @classmethod
    def from_request(cls, req: dict) -> ReportBehaviour:
        kinds = {f.name: type(f.default) for f in fields(cls)}
        return cls(**{k: kinds[k](v) for k, v in req.items() if k in kinds})


@dataclass
class Report:
    """One quota utilization report: its rows are fixed when it starts."""

    id: str
    account: str
    region: str
    started: float  # epoch seconds; GeneratedAt
    rows: list[dict[str, Any]]
    behaviour: ReportBehaviour
    polls: int = 0
    status: str = "PENDING"

    def poll(self, now: float) -> str:
        """Counts one GetQuotaUtilizationReport call and returns the status it sees."""
        self.polls += 1
        if self.status in ("COMPLETED", "FAILED"):
            return self.status
        b = self.behaviour
        if self.polls <= b.pending_polls:
            self.status = "PENDING"
        elif b.stuck or self.polls <= b.pending_polls + b.in_progress_polls or now - self.started < b.ready_after_s:
            self.status = "IN_PROGRESS"
        else:
            self.status = "FAILED" if b.fail else "COMPLETED"
        return self.status


class QuotaStore(dict):
    """The seeded quotas by (account, region, service code, quota code), with an index
    by account and region kept in step, so that a listing of one target costs that
    target's quotas and not every account's (benchmarks seed hundreds of thousands)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_target: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {}

    def __setitem__(self, key: tuple[str, str, str, str], value: dict[str, Any]) -> None:
        super().__setitem__(key, value)
        self.by_target.setdefault(key[:2], {})[key[2:]] = value

    def __delitem__(self, key: tuple[str, str, str, str]) -> None:
        super().__delitem__(key)
        target = self.by_target.get(key[:2])
        if target is not None:
            target.pop(key[2:], None)

    def clear(self) -> None:
        super().clear()
        self.by_target.clear()

    def of(self, account: str, region: str) -> dict[tuple[str, str], dict[str, Any]]:
        """(service code, quota code) -> entry, for one account and region."""
        return self.by_target.get((account, region), {})


@dataclass
class State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    faults: list[Fault] = field(default_factory=list)
    next_fault: int = 1
    # (account, region, service_code, quota_code) -> {"applied": ..., "default": ...}; the
    # keys seed_quotas stores are those of quota_entry, metric_state adds late_minutes,
    # no_data and history_minutes
    quotas: QuotaStore = field(default_factory=lambda: QuotaStore())
    # utilization reports by ReportId, and the behaviour of new ones by (account, region)
    reports: dict[str, Report] = field(default_factory=dict)
    report_behaviour: dict[tuple[str, str], ReportBehaviour] = field(default_factory=dict)
    # signs the pagination tokens of reports and GetMetricData, so that forged or
    # foreign tokens are refused
    token_key: bytes = field(default_factory=lambda: os.urandom(16))
    log: list[dict[str, Any]] = field(default_factory=list)
    # the secret keys and session tokens AssumeRole handed out
    issued_secrets: list[str] = field(default_factory=list)
    # What a role requires of AssumeRole (by role ARN): {"external_id", "duration_s"}.
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Every AssumeRole answered or refused: role, external ID, session name, when, and
    # when the credentials it gave expire.
    assumed: list[dict[str, Any]] = field(default_factory=list)
    # Expiry (epoch seconds) of the access keys of credentials handed out with a
    # duration: requests signed with them after that are refused, as AWS refuses them.
    expiry: dict[str, float] = field(default_factory=dict)
    short_pages: bool = False
    # Listings that never end: {"operation", "account"?, "region"?} (a server gone wrong).
    endless_pages: list[dict[str, str]] = field(default_factory=list)
    # How long a pagination token of `page_window` stays valid.
    token_ttl_s: float = 900.0
    # (account, region, repository) -> digests of archived images
    archived: dict[tuple[str, str, str], set[str]] = field(default_factory=dict)
    # (account, region) -> directory buckets; (account, region) -> (on buckets, other) access points
    directory_buckets: dict[tuple[str, str], int] = field(default_factory=dict)
    access_points: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    # The AWS Organizations organisation seeded through the control API (None: no
    # account is in an organisation, as in a fresh moto).
    org: Organization | None = None

    def reset(self) -> None:
        with self.lock:
            self.org = None
            for f in self.faults:
                f.released.set()
            self.faults.clear()
            self.quotas.clear()
            self.log.clear()
            self.archived.clear()
            self.directory_buckets.clear()
            self.access_points.clear()
            self.reports.clear()
            self.issued_secrets.clear()
            self.roles.clear()
            self.assumed.clear()
            self.expiry.clear()
            self.report_behaviour.clear()
            self.short_pages = False
            self.endless_pages.clear()
            self.token_ttl_s = 900.0


STATE = State()


def account_for(access_key: str | None) -> str:
    if not access_key:
        return DEFAULT_ACCOUNT
    from moto.iam.models import get_account_id_from

    return get_account_id_from(access_key)


def json_response(
    start: Callable, status: int, body: Any, headers: Iterable[tuple[str, str]] = (), content_type: str = "application/x-amz-json-1.1"
) -> list[bytes]:
    data = json.dumps(body, default=str).encode()
    reason = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "Error")
    start(
        f"{status} {reason}",
        [("Content-Type", content_type), ("Content-Length", str(len(data))), *headers],
    )
    return [data]


def aws_json_error(start: Callable, status: int, code: str, message: str) -> list[bytes]:
    return json_response(
        start, status, {"__type": code, "message": message}, [("x-amzn-ErrorType", f"{code}:http://internal.amazon.com/coral/")]
    )


def org_error(start: Callable, status: int, code: str, message: str, reason: str | None = None) -> list[bytes]:
    """An AWS Organizations error: its shapes carry `Message` (capital M), and
    InvalidInputException a `Reason` from the InvalidInputExceptionReason enum."""
    body = {"__type": code, "Message": message, **({"Reason": reason} if reason else {})}
    return json_response(start, status, body, [("x-amzn-ErrorType", f"{code}:http://internal.amazon.com/coral/com.amazonaws.awsorganizations.v20161128/")])


def xml_error(start: Callable, status: int, code: str, message: str, wrapped: bool = True) -> list[bytes]:
    """An XML error as AWS sends it: wrapped in <ErrorResponse> by the query services
    (STS, IAM) and S3 Control, an <Error> root by S3 itself, whose SDK reads the code
    only from the root's children."""
    if wrapped:
        body = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
            "<RequestId>headroom</RequestId></ErrorResponse>"
        )
    else:
        body = f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>headroom</RequestId></Error>"
    data = f'<?xml version="1.0" encoding="UTF-8"?>\n{body}'.encode()
    start(f"{status} Error", [("Content-Type", "text/xml"), ("Content-Length", str(len(data)))])
    return [data]


def cbor_response(start: Callable, status: int, body: Any, headers: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    """A Smithy RPC v2 CBOR response (timestamps must already be CBORTag(1, seconds))."""
    data = cbor2.dumps(body)
    start(
        f"{status} {'OK' if status == 200 else 'Error'}",
        [("Content-Type", "application/cbor"), ("smithy-protocol", "rpc-v2-cbor"), ("Content-Length", str(len(data))), *headers],
    )
    return [data]


# CloudWatch's error shapes by their query error code (the body's __type names the shape).
CLOUDWATCH_ERROR_SHAPES = {
    "InvalidParameterValue": "InvalidParameterValueException",
    "MissingParameter": "MissingRequiredParameterException",
    "InvalidParameterCombination": "InvalidParameterCombinationException",
    "InternalServiceError": "InternalServiceFault",
    "ValidationError": "ValidationException",
}


def query_compatible_error(start: Callable, cbor: bool, status: int, code: str, message: str) -> list[bytes]:
    """An error of a former query-protocol service (CloudWatch) in CBOR or JSON 1.0: the
    SDKs take the code from the x-amzn-query-error header (`code;Sender`), as AWS sends it."""
    fault = "Sender" if status < 500 else "Receiver"
    headers = [("x-amzn-query-error", f"{code};{fault}")]
    body = {"__type": f"com.amazonaws.cloudwatch#{CLOUDWATCH_ERROR_SHAPES.get(code, code)}", "message": message}
    if cbor:
        return cbor_response(start, status, body, headers)
    return json_response(start, status, body, headers, "application/x-amz-json-1.0")


def sign_token(*parts: str) -> str:
    """An opaque pagination token (standard base64, as AWS's token patterns allow) that
    carries `parts` and a MAC, so the server can tell its own tokens from forged ones."""
    payload = ":".join(parts)
    mac = hmac.new(STATE.token_key, payload.encode(), hashlib.sha256).hexdigest()[:20]
    return base64.b64encode(f"{payload}:{mac}".encode()).decode()


def read_token(token: Any) -> list[str] | None:
    """The parts of a token made by sign_token; None if it is not one."""
    try:
        raw = base64.b64decode(str(token), validate=True).decode()
    except Exception:
        return None
    payload, _, mac = raw.rpartition(":")
    expected = hmac.new(STATE.token_key, payload.encode(), hashlib.sha256).hexdigest()[:20]
    return payload.split(":") if payload and hmac.compare_digest(mac, expected) else None


class BadToken(Exception):
    """A pagination token this server did not give for this listing, or an expired one."""


def page_window(operation: str, bind: Any, total: int, size: int, token: Any) -> tuple[int, int, str | None]:
    """The page of a listing of `total` items that `token` asks for: (start, end, next
    token). Tokens are opaque, signed, and bound to the operation and its inputs (`bind`:
    account, region and the request's own parameters), so one replayed for another
    operation, account, region, repository or service is refused, as is one older than
    the token lifetime (15 minutes unless set shorter). With short pages on, pages run
    empty, a third, full, ... and every page but the last carries a token, as real
    Parameter Store and other services do."""
    fingerprint = hashlib.sha256(json.dumps([operation, bind], sort_keys=True, default=str).encode()).hexdigest()[:16]
    offset, number = 0, 0
    if token is not None and token != "":
        parts = read_token(token)
        if not parts or len(parts) != 6 or parts[:3] != ["page", operation, fingerprint] or not (parts[3].isdigit() and parts[4].isdigit()):
            raise BadToken("The pagination token is not valid for this request.")
        if time.time() - float(parts[5]) > STATE.token_ttl_s:
            raise BadToken("The pagination token has expired.")
        offset, number = int(parts[3]), int(parts[4])
    if STATE.short_pages:
        size = (0, max(1, size // 3), size)[number % 3]
    end = min(offset + size, total)
    endless = any(
        e.get("operation") == operation and e.get("account", bind[0]) == bind[0] and ("region" not in e or e["region"] in bind)
        for e in STATE.endless_pages
    )
    following = sign_token("page", operation, fingerprint, str(end), str(number + 1), repr(time.time())) if end < total or endless else None
    return offset, end, following


class Layer:
    """WSGI middleware in front of moto's app."""

    def __init__(self, moto_app: Any):
        self.moto = moto_app

    def __call__(self, environ: dict, start: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        if path.startswith("/_headroom/"):
            return self.control(environ, path, body, start)

        target = environ.get("HTTP_X_AMZ_TARGET", "")
        auth = environ.get("HTTP_AUTHORIZATION", "")
        m = CREDENTIAL_RE.search(auth)
        access_key, region, signing_service = (m.group(1), m.group(2), m.group(3)) if m else (None, "us-east-1", "")
        account = account_for(access_key)
        s3_op = self.s3_operation(environ, signing_service)
        # Smithy RPC v2 CBOR (CloudWatch in the current SDKs): POST /service/<service>/operation/<op>
        cbor_service, cbor_op = self.cbor_operation(environ, path)
        if cbor_op:
            operation = cbor_op
        else:
            operation = target.split(".", 1)[1] if "." in target else s3_op or self.query_operation(environ, body, signing_service)
        xml = signing_service in ("sts", "s3", "s3express", "iam")
        cloudwatch = cbor_service == CLOUDWATCH_SERVICE or target.startswith(CLOUDWATCH_SERVICE + ".")
        organizations = target.startswith(ORGANIZATIONS_TARGET + ".")

        fault = self.pick_fault(operation, account, region)
        status_box: list[int] = []
        with STATE.lock:
            expires = STATE.expiry.get(access_key or "")
        if expires is not None and time.time() >= expires:
            fault = Fault(id=0, operation=operation, code="ExpiredTokenException" if not xml and not cloudwatch else "ExpiredToken", status=400,
                          message="The security token included in the request is expired")

        def recording_start(status: str, headers: list, exc_info: Any = None) -> Any:
            status_box.append(int(status.split(" ", 1)[0]))
            return start(status, headers, exc_info) if exc_info else start(status, headers)

        try:
            if fault is not None:
                if fault.latency_ms:
                    time.sleep(fault.latency_ms / 1000)
                if fault.hold:
                    with STATE.lock:
                        fault.holding += 1
                    try:
                        fault.released.wait(HOLD_LIMIT_S)
                    finally:
                        with STATE.lock:
                            fault.holding -= 1
                if fault.code:
                    if xml:
                        s3_rest = signing_service in ("s3", "s3express") and s3_op not in S3_CONTROL_OPERATIONS
                        return xml_error(recording_start, fault.status, fault.code, fault.message, wrapped=not s3_rest)
                    if cloudwatch:
                        return query_compatible_error(recording_start, bool(cbor_op), fault.status, fault.code, fault.message)
                    if organizations:
                        return org_error(recording_start, fault.status, fault.code, fault.message)
                    return aws_json_error(recording_start, fault.status, fault.code, fault.message)
            if cloudwatch:
                return self.cloudwatch(account, region, operation, body, bool(cbor_op), recording_start)
            if organizations and operation in ORGANIZATIONS_OPERATIONS:
                return self.organizations(account, operation, body, recording_start)
            if s3_op in ("ListBuckets", "ListDirectoryBuckets", "ListAccessPoints"):
                return getattr(self, s3_op.lower())(environ, account, region, recording_start)
            if target == "AmazonSSM.DescribeParameters":
                return self.describe_parameters(account, region, body, recording_start)
            if target == "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories":
                return self.describe_repositories(account, region, body, recording_start)
            if target == "AmazonEC2ContainerRegistry_V20150921.ListImages":
                return self.list_images(account, region, body, recording_start)
            if target.startswith("ServiceQuotasV20190624."):
                return self.service_quotas(account, region, operation, body, recording_start)
            if operation == "AssumeRole":
                refused = self.check_assume_role(body, account)
                if refused:
                    return xml_error(recording_start, 403, "AccessDenied", refused)
                # The answer is held until its credentials' lifetime is set, then sent
                # with its own length.
                held: list = []
                answer = b"".join(self.moto(environ, lambda status, headers, exc_info=None: held.append((status, headers))))
                answer = self.expire_credentials(body, answer)
                status, headers = held[0]
                recording_start(status, [(k, v) for k, v in headers if k.lower() != "content-length"] + [("Content-Length", str(len(answer)))])
                # Kept so that tests can look for them where they must never be (logs).
                issued = re.findall(rb"<(SecretAccessKey|SessionToken)>([^<]+)</", answer)
                with STATE.lock:
                    STATE.issued_secrets.extend(v.decode() for _, v in issued)
                return [answer]
            return self.moto(environ, recording_start)
        finally:
            with STATE.lock:
                STATE.log.append(
                    {
                        "operation": operation,
                        "service": signing_service,
                        "account": account,
                        "region": region,
                        "status": status_box[0] if status_box else 0,
                        "fault": fault.code if fault is not None else None,
                        "at": time.time(),
                    }
                )

    @staticmethod
    def check_assume_role(body: bytes, caller: str) -> str | None:
        """Records an AssumeRole; the refusal's message if the role is denied or requires
        an external ID the request does not carry (AWS answers AccessDenied)."""
        from urllib.parse import parse_qs

        params = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
        role_arn = params.get("RoleArn", "")
        with STATE.lock:
            wants = dict(STATE.roles.get(role_arn, {}))
            STATE.assumed.append({
                "role_arn": role_arn, "external_id": params.get("ExternalId"),
                "session_name": params.get("RoleSessionName"), "at": time.time(),
                "refused": False, "expires": None,
            })
            # A denied role: the member account has no such role, or its trust policy
            # does not name the caller; AWS answers both alike.
            denied = bool(wants.get("deny"))
            if denied or wants.get("external_id") is not None and params.get("ExternalId") != wants["external_id"]:
                STATE.assumed[-1]["refused"] = True
                return f"User: arn:aws:iam::{caller}:user/headroom is not authorized to perform: sts:AssumeRole on resource: {role_arn}"
        return None

    @staticmethod
    def expire_credentials(body: bytes, answer: bytes) -> bytes:
        """Gives the credentials of a role with a `duration_s` that lifetime: the
        Expiration the answer states, and the time after which requests signed with
        them are refused."""
        from urllib.parse import parse_qs

        role_arn = parse_qs(body.decode(errors="replace")).get("RoleArn", [""])[0]
        with STATE.lock:
            duration = STATE.roles.get(role_arn, {}).get("duration_s")
        key = re.search(rb"<AccessKeyId>([^<]+)</AccessKeyId>", answer)
        if duration is None or key is None:
            return answer
        # Whole seconds, as the Expiration it states.
        expires = float(math.ceil(time.time() + float(duration)))
        stamp = datetime.datetime.fromtimestamp(expires, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        answer = re.sub(rb"<Expiration>[^<]+</Expiration>", f"<Expiration>{stamp}</Expiration>".encode(), answer)
        with STATE.lock:
            STATE.expiry[key.group(1).decode()] = expires
            STATE.assumed[-1]["expires"] = expires
        return answer

    @staticmethod
    def cbor_operation(environ: dict, path: str) -> tuple[str | None, str | None]:
        """(service, operation) of a Smithy RPC v2 CBOR request, else (None, None)."""
        m = re.fullmatch(r"/service/([^/]+)/operation/([^/]+)", path)
        if environ.get("REQUEST_METHOD") != "POST" or not m or environ.get("HTTP_SMITHY_PROTOCOL") != "rpc-v2-cbor":
            return None, None
        return m.group(1), m.group(2)

    @staticmethod
    def query_operation(environ: dict, body: bytes, service: str) -> str:
        """The operation of a query-protocol (STS) or REST (S3) request."""
        from urllib.parse import parse_qs

        if body and environ.get("REQUEST_METHOD") == "POST":
            action = parse_qs(body.decode(errors="replace")).get("Action")
            if action:
                return action[0]
        query = parse_qs(environ.get("QUERY_STRING", ""))
        if "Action" in query:
            return query["Action"][0]
        return f"{service}:{environ.get('REQUEST_METHOD', '')} {environ.get('PATH_INFO', '')}"

    @staticmethod
    def s3_operation(environ: dict, service: str) -> str | None:
        """The S3 and S3 Control listings the exporters use (REST, no operation header)."""
        from urllib.parse import parse_qs

        if service not in ("s3", "s3express") or environ.get("REQUEST_METHOD") != "GET":
            return None
        path = environ.get("PATH_INFO", "")
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if path == "/v20180820/accesspoint":
            return "ListAccessPoints"
        if path == "/" and query.get("x-id") == ["ListDirectoryBuckets"]:
            return "ListDirectoryBuckets"
        host = environ.get("HTTP_HOST", "")
        if path == "/" and (host.startswith("127.") or host.startswith("localhost")) and not query.keys() - {"x-id", "max-buckets", "continuation-token", "prefix", "bucket-region"}:
            return "ListBuckets"
        return None

    @staticmethod
    def pick_fault(operation: str, account: str, region: str) -> Fault | None:
        with STATE.lock:
            for f in STATE.faults:
                if not f.matches(operation, account, region):
                    continue
                if f.times is not None and f.fired >= f.times:
                    continue
                f.seen += 1
                if f.seen % f.every == 0:
                    f.fired += 1
                    return f
        return None

    # --- SSM -----------------------------------------------------------------------

    def describe_parameters(self, account: str, region: str, body: bytes, start: Callable) -> list[bytes]:
        from moto.ssm.models import ssm_backends

        req = json.loads(body or b"{}")
        max_results = req.get("MaxResults", 10)
        if not isinstance(max_results, int) or not 1 <= max_results <= 50:
            return aws_json_error(
                start,
                400,
                "ValidationException",
                f"1 validation error detected: Value '{max_results}' at 'maxResults' failed to satisfy "
                "constraint: Member must have value less than or equal to 50",
            )
        if req.get("Shared"):
            return json_response(start, 200, {"Parameters": []})
        backend = ssm_backends[account][region]
        params = [
            p
            for p in backend.describe_parameters(req.get("Filters") or [], req.get("ParameterFilters") or [])
            if not p.name.startswith("/aws/")
        ]
        try:
            # Real Parameter Store returns short pages, even empty ones, with a token.
            offset, end, token = page_window("DescribeParameters", [account, region, req.get("Filters"), req.get("ParameterFilters")], len(params), max_results, req.get("NextToken"))
        except BadToken as e:
            return aws_json_error(start, 400, "InvalidNextToken", str(e))
        out: dict[str, Any] = {"Parameters": [self.metadata(p) for p in params[offset:end]]}
        if token:
            out["NextToken"] = token
        return json_response(start, 200, out)

    @staticmethod
    def metadata(p: Any) -> dict[str, Any]:
        d = p.describe_response_object(False)
        d.pop("Value", None)
        lm = d.get("LastModifiedDate")
        if hasattr(lm, "timestamp"):
            d["LastModifiedDate"] = lm.timestamp()
        return d

    # --- S3 ------------------------------------------------------------------------------
    # moto truncates ListBuckets at MaxBuckets without a continuation token, and has no
    # directory buckets or paged access points.

    @staticmethod
    def xml(start: Callable, body: str) -> list[bytes]:
        data = ('<?xml version="1.0" encoding="UTF-8"?>\n' + body).encode()
        start("200 OK", [("Content-Type", "application/xml"), ("Content-Length", str(len(data)))])
        return [data]

    @staticmethod
    def query(environ: dict) -> dict[str, str]:
        from urllib.parse import parse_qs

        return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).items()}

    def listbuckets(self, environ: dict, account: str, region: str, start: Callable) -> list[bytes]:
        from moto.s3.models import s3_backends

        q = self.query(environ)
        paginated = "max-buckets" in q or "continuation-token" in q
        with STATE.lock:
            entry = STATE.quotas.get((account, "us-east-1", "s3", "L-DC2B2D3D"), {})
        applied = entry.get("applied")
        if not paginated and isinstance(applied, (int, float)) and applied > 10_000:
            return xml_error(start, 400, "InvalidRequest", "Unpaginated ListBuckets is not supported for accounts with a general purpose bucket quota above 10,000; use max-buckets", wrapped=False)
        max_buckets = int(q.get("max-buckets", 10_000))
        if not 1 <= max_buckets <= 10_000:
            return xml_error(start, 400, "InvalidArgument", "max-buckets must be 1 to 10000", wrapped=False)
        buckets = sorted(s3_backends[account]["aws"].buckets.values(), key=lambda b: b.name)
        try:
            offset, end, token = page_window("ListBuckets", [account, q.get("prefix"), q.get("bucket-region")], len(buckets), max_buckets, q.get("continuation-token"))
        except BadToken:
            return xml_error(start, 400, "InvalidArgument", "The continuation token provided is incorrect", wrapped=False)
        if not paginated:
            offset, end, token = 0, len(buckets), None
        page = buckets[offset:end]
        items = "".join(
            f"<Bucket><Name>{b.name}</Name><CreationDate>{b.creation_date_ISO8601}</CreationDate><BucketRegion>{b.region_name}</BucketRegion></Bucket>"
            for b in page
        )
        return self.xml(
            start,
            '<ListAllMyBucketsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Owner><ID>{account}</ID><DisplayName>headroom</DisplayName></Owner><Buckets>{items}</Buckets>"
            + (f"<ContinuationToken>{token}</ContinuationToken>" if token else "")
            + "</ListAllMyBucketsResult>",
        )

    def listdirectorybuckets(self, environ: dict, account: str, region: str, start: Callable) -> list[bytes]:
        q = self.query(environ)
        max_buckets = int(q.get("max-directory-buckets", 1000))
        if not 1 <= max_buckets <= 1000:
            return xml_error(start, 400, "InvalidArgument", "max-directory-buckets must be 1 to 1000", wrapped=False)
        with STATE.lock:
            n = STATE.directory_buckets.get((account, region), 0)
        try:
            offset, end, token = page_window("ListDirectoryBuckets", [account, region], n, max_buckets, q.get("continuation-token"))
        except BadToken:
            return xml_error(start, 400, "InvalidArgument", "The continuation token provided is incorrect", wrapped=False)
        names = [f"headroom-{i:05d}--{region}-az1--x-s3" for i in range(offset, end)]
        items = "".join(f"<Bucket><Name>{x}</Name><CreationDate>2026-01-01T00:00:00.000Z</CreationDate></Bucket>" for x in names)
        return self.xml(
            start,
            '<ListAllMyDirectoryBucketsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Buckets>{items}</Buckets>" + (f"<ContinuationToken>{token}</ContinuationToken>" if token else "") + "</ListAllMyDirectoryBucketsResult>",
        )

    def listaccesspoints(self, environ: dict, account: str, region: str, start: Callable) -> list[bytes]:
        q = self.query(environ)
        if environ.get("HTTP_X_AMZ_ACCOUNT_ID") != account:
            return xml_error(start, 403, "AccessDenied", "Access Denied")
        max_results = int(q.get("maxResults", 1000))
        if not 1 <= max_results <= 1000:
            return xml_error(start, 400, "InvalidRequest", "maxResults must be 1 to 1000")
        with STATE.lock:
            on_buckets, other = STATE.access_points.get((account, region), (0, 0))
        # By default only access points of general purpose buckets are listed.
        n = on_buckets + other if q.get("dataSourceType") == "ALL" else on_buckets
        try:
            offset, end, token = page_window("ListAccessPoints", [account, region, q.get("dataSourceType"), q.get("bucket")], n, max_results, q.get("nextToken"))
        except BadToken:
            return xml_error(start, 400, "InvalidRequest", "The pagination token is not valid")
        items = "".join(
            f"<AccessPoint><Name>ap-{i:05d}</Name><NetworkOrigin>Internet</NetworkOrigin><Bucket>bucket-{i:05d}</Bucket></AccessPoint>"
            for i in range(offset, end)
        )
        return self.xml(
            start,
            '<ListAccessPointsResult xmlns="http://awss3control.amazonaws.com/doc/2018-08-20/">'
            f"<AccessPointList>{items}</AccessPointList>" + (f"<NextToken>{token}</NextToken>" if token else "") + "</ListAccessPointsResult>",
        )

    # --- ECR ---------------------------------------------------------------------------
    # moto returns every repository and image in one page whatever maxResults says.

    @staticmethod
    def page_of(items: list, req: dict, start: Callable, limit: int, default: int, key: str, operation: str, bind: Any) -> list[bytes]:
        max_results = req.get("maxResults", default)
        if not isinstance(max_results, int) or not 1 <= max_results <= limit:
            return aws_json_error(
                start, 400, "InvalidParameterException",
                f"Invalid parameter at 'maxResults' failed to satisfy constraint: 'Member must have value less than or equal to {limit}'",
            )
        try:
            offset, end, token = page_window(operation, bind, len(items), max_results, req.get("nextToken"))
        except BadToken:
            return aws_json_error(start, 400, "InvalidParameterException", "Invalid parameter at 'nextToken'")
        out: dict[str, Any] = {key: items[offset:end]}
        if token:
            out["nextToken"] = token
        return json_response(start, 200, out)

    def describe_repositories(self, account: str, region: str, body: bytes, start: Callable) -> list[bytes]:
        from moto.ecr.models import ecr_backends

        from moto.ecr.exceptions import RepositoryNotFoundException

        req = json.loads(body or b"{}")
        try:
            found = ecr_backends[account][region].describe_repositories(repository_names=req.get("repositoryNames"))
        except RepositoryNotFoundException as e:
            return aws_json_error(start, 400, "RepositoryNotFoundException", str(e))
        repos = [
            {
                "repositoryArn": r.arn,
                "registryId": r.registry_id,
                "repositoryName": r.name,
                "repositoryUri": r.uri,
                "createdAt": r.created_at.timestamp(),
                "imageTagMutability": "MUTABLE",
            }
            for r in found
        ]
        return self.page_of(repos, req, start, 1000, 100, "repositories", "DescribeRepositories", [account, region, req.get("repositoryNames")])

    def list_images(self, account: str, region: str, body: bytes, start: Callable) -> list[bytes]:
        from moto.ecr.exceptions import RepositoryNotFoundException
        from moto.ecr.models import ecr_backends

        req = json.loads(body or b"{}")
        name = req.get("repositoryName", "")
        flt = req.get("filter") or {}
        status = flt.get("imageStatus", "ACTIVE")
        try:
            images = ecr_backends[account][region].list_images(name, req.get("registryId"), tag_status=flt.get("tagStatus", "ANY"))
        except RepositoryNotFoundException:
            return aws_json_error(start, 400, "RepositoryNotFoundException", f"The repository with name '{name}' does not exist in the registry with id '{account}'")
        with STATE.lock:
            archived = set(STATE.archived.get((account, region, name), set()))
        ids = []
        # Real ECR: one entry per tag, and a digest-only entry for an untagged image.
        for image in images:
            is_archived = image.image_digest in archived
            if status == "ACTIVE" and is_archived or status == "ARCHIVED" and not is_archived:
                continue
            for tag in image.image_tags or [None]:
                ids.append({"imageDigest": image.image_digest, **({"imageTag": tag} if tag else {})})
        return self.page_of(ids, req, start, 1000, 100, "imageIds", "ListImages", [account, region, name, flt])

    # --- Service Quotas ----------------------------------------------------------------

    def service_quotas(self, account: str, region: str, operation: str, body: bytes, start: Callable) -> list[bytes]:
        req = json.loads(body or b"{}")
        service_code, quota_code = req.get("ServiceCode", ""), req.get("QuotaCode", "")
        if operation == "ListServiceQuotas":
            return self.list_service_quotas(account, region, req, start)
        if operation == "ListAWSDefaultServiceQuotas":
            return self.list_service_quotas(account, region, req, start, defaults=True)
        if operation == "ListServices":
            return self.list_services(account, region, req, start)
        if operation == "StartQuotaUtilizationReport":
            return self.start_quota_utilization_report(account, region, start)
        if operation == "GetQuotaUtilizationReport":
            return self.get_quota_utilization_report(account, region, req, start)
        if operation not in ("GetServiceQuota", "GetAWSDefaultServiceQuota"):
            return aws_json_error(start, 400, "IllegalArgumentException", f"{operation} is not served by the test server")
        with STATE.lock:
            entry = dict(STATE.quotas.get((account, region, service_code, quota_code), {}))
        key = "applied" if operation == "GetServiceQuota" else "default"
        value = entry.get(key, "NoSuchResource")
        if value == "NoSuchResource":
            return aws_json_error(start, 400, "NoSuchResourceException", f"The request failed because the specified service or quota does not exist: {service_code}/{quota_code}")
        if value == "AccessDenied":
            return aws_json_error(start, 400, "AccessDeniedException", "You do not have sufficient access to perform this action.")
        quota = {**quota_item(account, region, service_code, quota_code, entry), "Value": value}
        if operation == "GetServiceQuota":
            quota["QuotaAppliedAtLevel"] = "ACCOUNT"
        return json_response(start, 200, {"Quota": quota})

    def list_services(self, account: str, region: str, req: dict, start: Callable) -> list[bytes]:
        """ListServices: the services of the account's and region's seeded quotas, by
        service code, at most 100 a page like AWS."""
        max_results = req.get("MaxResults", 100)
        if not isinstance(max_results, int) or isinstance(max_results, bool) or not 1 <= max_results <= 100:
            return aws_json_error(start, 400, "ValidationException", "MaxResults must be 1 to 100")
        with STATE.lock:
            names = {
                svc: entry.get("service_name", svc)
                for (svc, _code), entry in STATE.quotas.of(account, region).items()
            }
        items = [{"ServiceCode": code, "ServiceName": names[code]} for code in sorted(names)]
        try:
            offset, end, token = page_window("ListServices", [account, region], len(items), max_results, req.get("NextToken"))
        except BadToken as e:
            return aws_json_error(start, 400, "InvalidPaginationTokenException", str(e))
        out: dict[str, Any] = {"Services": items[offset:end]}
        if token:
            out["NextToken"] = token
        return json_response(start, 200, out)

    def list_service_quotas(self, account: str, region: str, req: dict, start: Callable, defaults: bool = False) -> list[bytes]:
        """ListServiceQuotas (applied values: the account's, QuotaAppliedAtLevel ACCOUNT by
        default; those applied to single resources with RESOURCE; both with ALL) or
        ListAWSDefaultServiceQuotas (`defaults`), paged at most 100 a page like AWS. A
        quota without a value of that kind is not listed, as AWS leaves out quotas
        whose applied value is not available."""
        service_code, quota_code = req.get("ServiceCode", ""), req.get("QuotaCode")
        if not service_code:
            return aws_json_error(start, 400, "ValidationException", "ServiceCode is required")
        level = req.get("QuotaAppliedAtLevel", "ACCOUNT")
        if level not in ("ACCOUNT", "RESOURCE", "ALL") or (defaults and "QuotaAppliedAtLevel" in req):
            return aws_json_error(start, 400, "ValidationException", f"invalid QuotaAppliedAtLevel {level!r}")
        max_results = req.get("MaxResults", 100)
        if not isinstance(max_results, int) or not 1 <= max_results <= 100:
            return aws_json_error(start, 400, "ValidationException", "MaxResults must be 1 to 100")
        items = []
        with STATE.lock:
            for (svc, code), entry in sorted(STATE.quotas.of(account, region).items()):
                if svc != service_code or (quota_code and code != quota_code):
                    continue
                quota = quota_item(account, region, svc, code, entry)
                value = entry.get("default" if defaults else "applied")
                if (defaults or level in ("ACCOUNT", "ALL")) and isinstance(value, (int, float)) and not isinstance(value, bool):
                    items.append({**quota, "Value": value, **({} if defaults else {"QuotaAppliedAtLevel": "ACCOUNT"})})
                if not defaults and level in ("RESOURCE", "ALL"):
                    for arn, v in sorted(entry.get("resources", {}).items()):
                        items.append({
                            **quota, "Value": v, "QuotaAppliedAtLevel": "RESOURCE",
                            "QuotaContext": {"ContextScope": "RESOURCE", "ContextScopeType": "AWS::ECR::Repository", "ContextId": arn},
                        })
        op = "ListAWSDefaultServiceQuotas" if defaults else "ListServiceQuotas"
        try:
            offset, end, token = page_window(op, [account, region, service_code, quota_code, level], len(items), max_results, req.get("NextToken"))
        except BadToken as e:
            return aws_json_error(start, 400, "InvalidPaginationTokenException", str(e))
        out: dict[str, Any] = {"Quotas": items[offset:end]}
        if token:
            out["NextToken"] = token
        return json_response(start, 200, out)

    # The quota utilization report. AWS (API reference, GetQuotaUtilizationReport and
    # StartQuotaUtilizationReport): Start answers a ReportId and PENDING, or hands back a
    # recent report; Get answers PENDING, IN_PROGRESS, COMPLETED or FAILED (ErrorCode,
    # ErrorMessage), rows sorted by utilization descending, at most 1,000 a page (the
    # default), TotalCount across pages, GeneratedAt; reports are deleted after 15
    # minutes. Utilization = usage / applied value × 100, for quotas with usage data.

    def start_quota_utilization_report(self, account: str, region: str, start: Callable) -> list[bytes]:
        now = time.time()
        with STATE.lock:
            behaviour = STATE.report_behaviour.get((account, region), ReportBehaviour())
            if behaviour.reuse_s > 0:
                recent = [
                    r for r in STATE.reports.values()
                    if (r.account, r.region) == (account, region) and r.status != "FAILED"
                    and now - r.started < min(behaviour.reuse_s, r.behaviour.expiry_s)
                ]
                if recent:
                    r = max(recent, key=lambda r: r.started)
                    return json_response(start, 200, {
                        "ReportId": r.id, "Status": r.status,
                        "Message": "A report generated in the last few minutes is reused.",
                    })
            rows = utilization_rows(account, region)
            report = Report(str(uuid.uuid4()), account, region, now, rows, behaviour)
            STATE.reports[report.id] = report
        return json_response(start, 200, {"ReportId": report.id, "Status": "PENDING", "Message": "The report is being generated."})

    def get_quota_utilization_report(self, account: str, region: str, req: dict, start: Callable) -> list[bytes]:
        report_id = req.get("ReportId")
        if not isinstance(report_id, str) or not report_id:
            return aws_json_error(start, 400, "ValidationException", "1 validation error detected: Value null at 'reportId' failed to satisfy constraint: Member must not be null")
        max_results = req.get("MaxResults", 1000)
        if not isinstance(max_results, int) or isinstance(max_results, bool) or not 1 <= max_results <= 1000:
            return aws_json_error(
                start, 400, "ValidationException",
                f"1 validation error detected: Value '{max_results}' at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to 1000",
            )
        now = time.time()
        with STATE.lock:
            report = STATE.reports.get(report_id)
            if report is not None and now - report.started >= report.behaviour.expiry_s:
                del STATE.reports[report_id]  # deleted once expired, like AWS
                report = None
            # Another account's or region's report does not exist for this caller.
            if report is None or (report.account, report.region) != (account, region):
                return aws_json_error(start, 400, "NoSuchResourceException", f"The quota utilization report {report_id} does not exist or has expired.")
            status = report.poll(now)
            rows = report.rows
        out: dict[str, Any] = {"ReportId": report_id, "Status": status}
        token = req.get("NextToken")
        offset = 0
        if token is not None:
            parts = read_token(token)
            if status != "COMPLETED" or not parts or len(parts) != 3 or parts[:2] != ["report", report_id] or not parts[2].isdigit():
                return aws_json_error(start, 400, "InvalidPaginationTokenException", "The pagination token is not valid for this report.")
            offset = int(parts[2])
        if status == "FAILED":
            out.update(ErrorCode=report.behaviour.error_code, ErrorMessage=report.behaviour.error_message)
        if status != "COMPLETED":
            return json_response(start, 200, out)
        out.update(GeneratedAt=report.started, TotalCount=len(rows), Quotas=rows[offset : offset + max_results])
        if offset + max_results < len(rows):
            out["NextToken"] = sign_token("report", report_id, str(offset + max_results))
        return json_response(start, 200, out)

    # --- CloudWatch ----------------------------------------------------------------------
    # GetMetricData for the AWS/Usage metrics of the seeded quotas, answered by the layer:
    # CloudWatch's usage metrics are published every minute (CloudWatch User Guide, "AWS
    # usage metrics"). Errors are query-compatible codes (InvalidParameterValue,
    # InvalidNextToken, ...), since CloudWatch was a query-protocol service.

    def cloudwatch(self, account: str, region: str, operation: str, body: bytes, cbor: bool, start: Callable) -> list[bytes]:
        def reply(out: dict[str, Any]) -> list[bytes]:
            if cbor:
                return cbor_response(start, 200, out)
            return json_response(start, 200, out, content_type="application/x-amz-json-1.0")

        if operation != "GetMetricData":
            return query_compatible_error(start, cbor, 400, "InvalidAction", f"{operation} is not served by the test server")
        try:
            req = cbor2.loads(body) if cbor else json.loads(body or b"{}")
            if not isinstance(req, dict):
                raise CloudWatchError("SerializationException", "the request body is not a structure")
            out = get_metric_data(account, region, req, time.time())
        except CloudWatchError as e:
            return query_compatible_error(start, cbor, 400, e.code, e.message)
        except (cbor2.CBORDecodeError, ValueError) as e:
            return query_compatible_error(start, cbor, 400, "SerializationException", f"cannot decode the request: {e}")
        if cbor:
            for result in out["MetricDataResults"]:
                result["Timestamps"] = [cbor2.CBORTag(1, float(t)) for t in result["Timestamps"]]
        return reply(out)

    # --- Organizations -----------------------------------------------------------------
    # Answered from the layer's organisation (org_answer), global: the signing region
    # (us-east-1) is not part of a token's binding.

    def organizations(self, account: str, operation: str, body: bytes, start: Callable) -> list[bytes]:
        try:
            req = json.loads(body or b"{}")
            if not isinstance(req, dict):
                raise ValueError("the request body is not a structure")
        except ValueError as e:
            return org_error(start, 400, "SerializationException", f"cannot decode the request: {e}")
        try:
            with STATE.lock:
                out = org_answer(STATE.org, account, operation, req)
        except OrgError as e:
            return org_error(start, 400, e.code, e.message, e.reason)
        return json_response(start, 200, out)

    # --- control -------------------------------------------------------------------------

    def control(self, environ: dict, path: str, body: bytes, start: Callable) -> list[bytes]:
        req = json.loads(body or b"{}") if body else {}
        action = path[len("/_headroom/") :]
        try:
            result = self.control_action(action, req)
        except (KeyError, ValueError, TypeError) as e:
            return json_response(start, 400, {"error": f"{action}: {e!r}"})
        if result is None:
            return json_response(start, 404, {"error": f"no control action {action}"})
        return json_response(start, 200, result)

    def control_action(self, action: str, req: dict) -> Any:
        if action == "health":
            return {"ok": True}
        if action == "reset":
            STATE.reset()
            return {"ok": True}
        if action == "log":
            with STATE.lock:
                return list(STATE.log)
        if action == "issued_secrets":
            with STATE.lock:
                return list(STATE.issued_secrets)
        if action == "roles":
            role = {k: req[k] for k in ("external_id", "duration_s", "deny") if req.get(k) is not None}
            with STATE.lock:
                STATE.roles[str(req["role_arn"])] = role
            return {"ok": True}
        if action == "assumed":
            with STATE.lock:
                return list(STATE.assumed)
        if action == "settings":
            with STATE.lock:
                STATE.short_pages = bool(req.get("short_pages", STATE.short_pages))
                STATE.token_ttl_s = float(req.get("token_ttl_s", STATE.token_ttl_s))
                if "endless_pages" in req:
                    STATE.endless_pages = [{k: str(v) for k, v in e.items() if k in ("operation", "account", "region")}
                                           for e in req["endless_pages"]]
            return {"ok": True}
        if action == "quotas":
            key = (req.get("account", DEFAULT_ACCOUNT), req["region"], req["service_code"], req["quota_code"])
            with STATE.lock:
                STATE.quotas[key] = {k: v for k, v in req.items() if k in ("applied", "default", "adjustable", "global", "name", "resources")}
            return {"ok": True}
        if action == "seed_quotas":
            account, region = req.get("account", DEFAULT_ACCOUNT), req["region"]
            quotas = list(req.get("quotas", []))
            gen = req.get("generate")
            if gen:
                quotas += generate_quotas(int(gen["count"]), int(gen.get("services", 1)), int(gen.get("no_usage_every", 0)), gen.get("prefix", "svc"))
            return seed_quotas(account, region, quotas, bool(req.get("replace", False)))
        if action == "report_behaviour":
            key = (req.get("account", DEFAULT_ACCOUNT), req["region"])
            behaviour = ReportBehaviour.from_request(req)
            with STATE.lock:
                STATE.report_behaviour[key] = behaviour
            return {"ok": True}
        if action == "metric_state":
            key = (req.get("account", DEFAULT_ACCOUNT), req["region"], req["service_code"], req["quota_code"])
            with STATE.lock:
                entry = STATE.quotas[key]
                for name, kind in (("late_minutes", float), ("no_data", bool), ("history_minutes", float)):
                    if name in req:
                        entry[name] = kind(req[name])
            return {"ok": True}
        if action == "faults":
            with STATE.lock:
                f = Fault(
                    id=STATE.next_fault,
                    operation=req.get("operation"),
                    account=req.get("account"),
                    region=req.get("region"),
                    code=req.get("code"),
                    status=int(req.get("status", 400)),
                    message=req.get("message", "injected by the headroom test server"),
                    every=max(1, int(req.get("every", 1))),
                    times=req.get("times"),
                    latency_ms=int(req.get("latency_ms", 0)),
                    hold=bool(req.get("hold", False)),
                )
                if not f.code and not f.latency_ms and not f.hold:
                    raise ValueError("a fault needs code, latency_ms or hold")
                STATE.next_fault += 1
                STATE.faults.append(f)
            return {"id": f.id}
        if action == "faults/list":
            with STATE.lock:
                return [{"id": f.id, "seen": f.seen, "fired": f.fired, "holding": f.holding} for f in STATE.faults]
        if action == "faults/delete":
            with STATE.lock:
                for f in STATE.faults:
                    if f.id == int(req["id"]):
                        f.released.set()
                STATE.faults = [f for f in STATE.faults if f.id != int(req["id"])]
            return {"ok": True}
        if action == "seed/s3":
            return seed_s3(
                req.get("account", DEFAULT_ACCOUNT), req.get("buckets", {}), req.get("directory_buckets", {}),
                req.get("access_points", {}), req.get("prefix", "headroom"),
            )
        if action == "seed/ecr":
            return seed_ecr(req.get("account", DEFAULT_ACCOUNT), req["region"], req.get("repositories", {}), int(req.get("empty", 0)), req.get("prefix", "empty"))
        if action == "organization":
            return seed_organization(req)
        if action in ("organization/accounts", "organization/account_state", "organization/remove", "organization/tags"):
            return change_organization(action.split("/", 1)[1], req)
        if action == "seed/ssm":
            return seed_ssm(
                req.get("account", DEFAULT_ACCOUNT),
                req["region"],
                int(req.get("standard", 0)),
                int(req.get("advanced", 0)),
                req.get("prefix", "/headroom/seed"),
            )
        return None


def seed_ssm(account: str, region: str, standard: int, advanced: int, prefix: str) -> dict[str, int]:
    """Puts parameters straight into moto's backend: thousands in well under a second."""
    from moto.ssm.models import ssm_backends

    backend = ssm_backends[account][region]
    for tier, n in (("Standard", standard), ("Advanced", advanced)):
        for i in range(n):
            backend.put_parameter(
                name=f"{prefix}/{tier.lower()}/p{i:06d}",
                description=None,
                value="v",
                parameter_type="String",
                allowed_pattern=None,
                keyid=None,
                overwrite=True,
                tags=[],
                data_type="text",
                tier=tier,
                policies=None,
            )
    return {"standard": standard, "advanced": advanced}


def seed_s3(account: str, buckets: dict[str, int], directory: dict[str, int], access_points: dict[str, Any], prefix: str) -> dict[str, int]:
    """General purpose buckets straight into moto's backend, by region; directory
    buckets and access points (by region, [on buckets, on other data sources]) kept by
    the layer."""
    from moto.s3.models import s3_backends

    backend = s3_backends[account]["aws"]
    total = 0
    for region, n in buckets.items():
        for i in range(int(n)):
            backend.create_bucket(f"{prefix}-{account}-{region}-{i:05d}", region)
            total += 1
    with STATE.lock:
        for region, n in directory.items():
            STATE.directory_buckets[(account, region)] = int(n)
        for region, n in access_points.items():
            on_buckets, other = (n, 0) if isinstance(n, int) else (int(n[0]), int(n[1]))
            STATE.access_points[(account, region)] = (on_buckets, other)
    return {"buckets": total}


def seed_ecr(account: str, region: str, repositories: dict[str, dict], empty: int, prefix: str) -> dict[str, int]:
    """Creates repositories and images straight in moto's backend.

    repositories: {name: {"images": n, "tags_per_image": k, "untagged": u, "archived": a,
                          "lifecycle": bool}}
    gives n tagged images with k tags each, u untagged images, and a archived images
    (tagged, hidden from ListImages unless asked for); plus `empty` repositories
    named `{prefix}-NNNNN` with no images.
    """
    from moto.ecr.models import Image, ecr_backends

    backend = ecr_backends[account][region]

    def repo(name: str) -> Any:
        if name in backend.repositories:
            return backend.repositories[name]
        return backend.create_repository(name, None, {"encryptionType": "AES256"}, {"scanOnPush": False}, "MUTABLE", [])

    images = 0
    for name, spec in repositories.items():
        r = repo(name)
        k = max(1, int(spec.get("tags_per_image", 1)))
        groups = (("tagged", int(spec.get("images", 0))), ("untagged", int(spec.get("untagged", 0))), ("archived", int(spec.get("archived", 0))))
        archived = set()
        for kind, n in groups:
            for i in range(n):
                digest = "sha256:" + hashlib.sha256(f"{account}/{region}/{name}/{kind}/{i}".encode()).hexdigest()
                manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json", "config": {"digest": digest}, "layers": []})
                tag = None if kind == "untagged" else f"{kind}-{i}-0"
                image = Image(account, tag, manifest, name, "application/vnd.docker.distribution.manifest.v2+json", digest)
                if tag:
                    image.image_tags = [f"{kind}-{i}-{t}" for t in range(k if kind == "tagged" else 1)]
                r.images.append(image)
                images += 1
                if kind == "archived":
                    archived.add(digest)
        if spec.get("lifecycle"):
            # Set on the model directly: moto validates rules we do not need here.
            r.lifecycle_policy = json.dumps({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 14}, "action": {"type": "expire"}}]})
        if archived:
            with STATE.lock:
                STATE.archived.setdefault((account, region, name), set()).update(archived)
    for i in range(empty):
        repo(f"{prefix}-{i:05d}")
    return {"repositories": len(repositories) + empty, "images": images}


# --- AWS Organizations ----------------------------------------------------------------------
# The layer keeps its own organisation: moto's ListAccounts pages at 100, its ListChildren
# does not page, and it cannot take caller-chosen account IDs or account states.

ORG_PAGE_MAX = 20  # MaxResults 1..20 on every Organizations listing; AWS's own page size
ACCOUNT_STATES = ("PENDING_ACTIVATION", "ACTIVE", "SUSPENDED", "PENDING_CLOSURE", "CLOSED")
# The Status AWS still reports beside each State (Status has no PENDING_ACTIVATION or
# CLOSED: a closed account stays SUSPENDED in it until it leaves the organisation).
STATUS_OF_STATE = {"PENDING_ACTIVATION": "ACTIVE", "ACTIVE": "ACTIVE", "SUSPENDED": "SUSPENDED", "PENDING_CLOSURE": "PENDING_CLOSURE", "CLOSED": "SUSPENDED"}
ACCOUNT_ID_RE = re.compile(r"\d{12}")
ROOT_ID_RE = re.compile(r"r-[0-9a-z]{4,32}")
OU_ID_RE = re.compile(r"ou-[0-9a-z]{4,32}-[a-z0-9]{8,32}")
ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def random_id(n: int) -> str:
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(n))


@dataclass
class OrgAccount:
    id: str
    name: str
    email: str
    parent: str  # the root's or an OU's ID
    state: str = "ACTIVE"
    joined_method: str = "CREATED"
    joined: float = 0.0  # epoch seconds


@dataclass
class OrgUnit:
    id: str
    name: str
    parent: str
    path: str  # the OU names from the root, joined by "/"


@dataclass
class Organization:
    """One organisation: a root, OUs and accounts in creation order (the order the
    listings answer in), tags of any of them, and the delegated administrators that
    may call the listings besides the management account."""

    id: str
    management: str
    root: str
    ous: dict[str, OrgUnit] = field(default_factory=dict)
    accounts: dict[str, OrgAccount] = field(default_factory=dict)
    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    delegated_admins: set[str] = field(default_factory=set)

    def arn(self, kind: str, resource: str) -> str:
        return f"arn:aws:organizations::{self.management}:{kind}/{self.id}/{resource}"

    def ou_by_path(self, path: str) -> str:
        """The ID of the OU at `path` ("" is the root)."""
        path = path.strip("/")
        if not path:
            return self.root
        for ou in self.ous.values():
            if ou.path == path:
                return ou.id
        raise ValueError(f"no OU at path {path!r}")

    def account_item(self, a: OrgAccount) -> dict[str, Any]:
        return {
            "Id": a.id, "Arn": self.arn("account", a.id), "Email": a.email, "Name": a.name,
            "Status": STATUS_OF_STATE[a.state], "State": a.state,
            "JoinedMethod": a.joined_method, "JoinedTimestamp": a.joined,
        }

    def ou_item(self, ou: OrgUnit) -> dict[str, Any]:
        return {"Id": ou.id, "Arn": self.arn("ou", ou.id), "Name": ou.name}

    def description(self) -> dict[str, Any]:
        return {
            "Id": self.id, "Arn": f"arn:aws:organizations::{self.management}:organization/{self.id}",
            "FeatureSet": "ALL", "MasterAccountArn": self.arn("account", self.management),
            "MasterAccountId": self.management, "MasterAccountEmail": self.accounts[self.management].email,
            "AvailablePolicyTypes": [{"Type": "SERVICE_CONTROL_POLICY", "Status": "ENABLED"}],
        }

    def add_ous(self, specs: list[dict[str, Any]], parent: str = "", created: dict[str, str] | None = None) -> dict[str, str]:
        """Adds nested OUs ({"name", "children", "tags"}) under the OU at path `parent`,
        keeping those that exist by path; OU IDs by path."""
        created = {} if created is None else created
        parent_id = self.ou_by_path(parent)
        for spec in specs:
            name = str(spec["name"])
            if not name or "/" in name:
                raise ValueError(f"an OU name must be non-empty without '/': {name!r}")
            path = f"{parent}/{name}" if parent else name
            try:
                ou_id = self.ou_by_path(path)
            except ValueError:
                ou_id = f"ou-{self.root[2:]}-{random_id(8)}"
                while ou_id in self.ous:
                    ou_id = f"ou-{self.root[2:]}-{random_id(8)}"
                self.ous[ou_id] = OrgUnit(ou_id, name, parent_id, path)
            if spec.get("tags") is not None:
                self.tags[ou_id] = {str(k): str(v) for k, v in spec["tags"].items()}
            created[path] = ou_id
            self.add_ous(list(spec.get("children") or []), path, created)
        return created

    def add_accounts(self, specs: list[dict[str, Any]]) -> list[str]:
        """Adds accounts ({"id", "name", "email", "ou", "tags", "state", "joined_method",
        "joined"}); their IDs."""
        ids = []
        for spec in specs:
            account_id = str(spec["id"])
            if not ACCOUNT_ID_RE.fullmatch(account_id):
                raise ValueError(f"an account ID is 12 digits: {account_id!r}")
            if account_id in self.accounts:
                raise ValueError(f"account {account_id} is already in the organization")
            state = str(spec.get("state", "ACTIVE"))
            if state not in ACCOUNT_STATES:
                raise ValueError(f"state must be one of {ACCOUNT_STATES}: {state!r}")
            self.accounts[account_id] = OrgAccount(
                id=account_id,
                name=str(spec.get("name", f"account-{account_id}")),
                email=str(spec.get("email", f"aws+{account_id}@example.com")),
                parent=self.ou_by_path(str(spec.get("ou") or "")),
                state=state,
                # The management account created the organisation; AWS lists it as INVITED.
                joined_method=str(spec.get("joined_method", "INVITED" if account_id == self.management else "CREATED")),
                joined=float(spec.get("joined", time.time())),
            )
            if spec.get("tags") is not None:
                self.tags[account_id] = {str(k): str(v) for k, v in spec["tags"].items()}
            ids.append(account_id)
        return ids


def seed_organization(req: dict[str, Any]) -> dict[str, Any]:
    """A new organisation (POST /_headroom/organization); the management account is
    one of its accounts, in the root and named "management" unless listed. Built
    whole before it replaces the old one, so a bad request changes nothing."""
    management = str(req.get("management_account", DEFAULT_ACCOUNT))
    if not ACCOUNT_ID_RE.fullmatch(management):
        raise ValueError(f"management_account is 12 digits: {management!r}")
    org = Organization(id=f"o-{random_id(10)}", management=management, root=f"r-{random_id(4)}")
    ous = org.add_ous(list(req.get("ous") or []))
    specs = list(req.get("accounts") or [])
    if not any(str(s.get("id")) == management for s in specs):
        specs.insert(0, {"id": management, "name": "management"})
    ids = org.add_accounts(specs)
    for admin in req.get("delegated_admins") or []:
        if str(admin) not in org.accounts or str(admin) == management:
            raise ValueError(f"a delegated administrator must be a member account of the organization: {admin!r}")
        org.delegated_admins.add(str(admin))
    with STATE.lock:
        if STATE.org is not None and not req.get("replace", False):
            raise ValueError("an organization exists: pass replace, or add to it with organization/accounts")
        STATE.org = org
    return {"organization_id": org.id, "root_id": org.root, "ous": ous, "accounts": ids}


def change_organization(action: str, req: dict[str, Any]) -> dict[str, Any]:
    """The organization/... control actions, on a copy that replaces the organisation
    only if the whole request is valid."""
    with STATE.lock:
        if STATE.org is None:
            raise ValueError("no organization: seed one with POST /_headroom/organization")
        org = copy.deepcopy(STATE.org)
    out: dict[str, Any]
    if action == "accounts":
        ous = org.add_ous(list(req.get("ous") or []))
        out = {"ous": ous, "accounts": org.add_accounts(list(req.get("accounts") or []))}
    else:
        resource = str(req["id"])
        if action == "tags":
            if resource not in org.accounts and resource not in org.ous and resource != org.root:
                raise ValueError(f"no account, OU or root {resource} in the organization")
            org.tags[resource] = {str(k): str(v) for k, v in dict(req["tags"]).items()}
            out = {"id": resource, "tags": org.tags[resource]}
        elif resource not in org.accounts:
            raise ValueError(f"no account {resource} in the organization")
        elif action == "account_state":
            state = str(req["state"])
            if state not in ACCOUNT_STATES:
                raise ValueError(f"state must be one of {ACCOUNT_STATES}: {state!r}")
            org.accounts[resource].state = state
            out = {"id": resource, "state": state, "status": STATUS_OF_STATE[state]}
        elif action == "remove":
            if resource == org.management:
                raise ValueError("the management account cannot leave its organization")
            del org.accounts[resource]
            org.tags.pop(resource, None)
            # Leaving the organisation ends a delegated administrator's registration.
            org.delegated_admins.discard(resource)
            out = {"id": resource, "removed": True}
        else:
            raise ValueError(f"no organization action {action}")
    with STATE.lock:
        STATE.org = org
    return out


class OrgError(Exception):
    """A client error of an Organizations operation, in its own error shape."""

    def __init__(self, code: str, message: str, reason: str | None = None):
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason


def org_page(org_operation: str, bind: list[Any], items: list[Any], req: dict[str, Any], key: str, paged_by_caller: bool = True) -> dict[str, Any]:
    """One page of an Organizations listing: at most 20 items (MaxResults 1..20, else
    InvalidInputException as AWS answers a value out of range), with the server's
    signed tokens; a token that is not one of this listing's is InvalidInputException
    (INVALID_NEXT_TOKEN)."""
    max_results = req.get("MaxResults", ORG_PAGE_MAX) if paged_by_caller else ORG_PAGE_MAX
    if not isinstance(max_results, int) or isinstance(max_results, bool):
        raise OrgError("SerializationException", f"MaxResults must be an integer: {max_results!r}")
    if max_results < 1:
        raise OrgError("InvalidInputException", "You provided a value for MaxResults that is less than the minimum allowed (1).", "MIN_VALUE_EXCEEDED")
    if max_results > ORG_PAGE_MAX:
        raise OrgError("InvalidInputException", f"You provided a value for MaxResults that exceeds the maximum allowed ({ORG_PAGE_MAX}).", "MAX_VALUE_EXCEEDED")
    try:
        offset, end, token = page_window(org_operation, bind, len(items), max_results, req.get("NextToken"))
    except BadToken as e:
        raise OrgError("InvalidInputException", str(e), "INVALID_NEXT_TOKEN") from None
    out: dict[str, Any] = {key: items[offset:end]}
    if token:
        out["NextToken"] = token
    return out


def org_parent(org: Organization, req: dict[str, Any]) -> str:
    """The request's ParentId: a root or an OU of the organisation."""
    parent = req.get("ParentId")
    if not parent:
        raise OrgError("InvalidInputException", "You must specify a value for ParentId.", "INPUT_REQUIRED")
    if not isinstance(parent, str) or not (ROOT_ID_RE.fullmatch(parent) or OU_ID_RE.fullmatch(parent)):
        raise OrgError("InvalidInputException", f"The ParentId {parent!r} does not match the required pattern.", "INVALID_PATTERN")
    if parent != org.root and parent not in org.ous:
        raise OrgError("ParentNotFoundException", "We can't find a root or OU with the ParentId that you specified.")
    return parent


def org_answer(org: Organization | None, caller: str, operation: str, req: dict[str, Any]) -> dict[str, Any]:
    """The answer of an Organizations operation to `caller`. An account outside every
    organisation gets AWSOrganizationsNotInUseException; a member account that is not
    a delegated administrator may only describe the organisation (AccessDeniedException
    otherwise), as AWS answers. The caller holds STATE.lock."""
    if org is None or caller not in org.accounts:
        raise OrgError("AWSOrganizationsNotInUseException", "Your account is not a member of an organization.")
    if operation == "DescribeOrganization":
        return {"Organization": org.description()}
    if caller != org.management and caller not in org.delegated_admins:
        raise OrgError("AccessDeniedException", "You don't have permissions to access this resource.")
    if operation == "ListAccounts":
        items = [org.account_item(a) for a in org.accounts.values()]
        return org_page(operation, [caller], items, req, "Accounts")
    if operation == "ListAccountsForParent":
        parent = org_parent(org, req)
        items = [org.account_item(a) for a in org.accounts.values() if a.parent == parent]
        return org_page(operation, [caller, parent], items, req, "Accounts")
    if operation == "ListChildren":
        child_type = req.get("ChildType")
        if child_type not in ("ACCOUNT", "ORGANIZATIONAL_UNIT"):
            raise OrgError("InvalidInputException", f"ChildType must be ACCOUNT or ORGANIZATIONAL_UNIT: {child_type!r}", "INVALID_ENUM" if child_type else "INPUT_REQUIRED")
        parent = org_parent(org, req)
        if child_type == "ACCOUNT":
            items = [{"Id": a.id, "Type": "ACCOUNT"} for a in org.accounts.values() if a.parent == parent]
        else:
            items = [{"Id": ou.id, "Type": "ORGANIZATIONAL_UNIT"} for ou in org.ous.values() if ou.parent == parent]
        return org_page(operation, [caller, parent, child_type], items, req, "Children")
    if operation == "ListOrganizationalUnitsForParent":
        parent = org_parent(org, req)
        items = [org.ou_item(ou) for ou in org.ous.values() if ou.parent == parent]
        return org_page(operation, [caller, parent], items, req, "OrganizationalUnits")
    if operation == "ListRoots":
        items = [{"Id": org.root, "Arn": org.arn("root", org.root), "Name": "Root", "PolicyTypes": []}]
        return org_page(operation, [caller], items, req, "Roots")
    if operation == "ListTagsForResource":
        resource = req.get("ResourceId")
        if not resource:
            raise OrgError("InvalidInputException", "You must specify a value for ResourceId.", "INPUT_REQUIRED")
        if not isinstance(resource, str) or not (ACCOUNT_ID_RE.fullmatch(resource) or ROOT_ID_RE.fullmatch(resource) or OU_ID_RE.fullmatch(resource)):
            raise OrgError("InvalidInputException", f"The ResourceId {resource!r} does not match the required pattern.", "INVALID_PATTERN")
        if resource not in org.accounts and resource not in org.ous and resource != org.root:
            raise OrgError("TargetNotFoundException", "We can't find a root, OU, account, or policy with the TargetId that you specified.")
        items = [{"Key": k, "Value": v} for k, v in org.tags.get(resource, {}).items()]
        # No MaxResults in its input: AWS chooses the page size.
        return org_page(operation, [caller, resource], items, req, "Tags", paged_by_caller=False)
    if operation == "DescribeAccount":
        account_id = req.get("AccountId")
        if not isinstance(account_id, str) or account_id not in org.accounts:
            raise OrgError("AccountNotFoundException", "We can't find an AWS account with the AccountId that you specified.")
        return {"Account": org.account_item(org.accounts[account_id])}
    raise OrgError("InvalidInputException", f"{operation} is not served by the test server", "INVALID_ENUM")


# --- Service Quotas data -------------------------------------------------------------------

def number(value: Any) -> float | None:
    """A quota value as a number; None for an absent one or a scripted error."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def quota_item(account: str, region: str, service_code: str, quota_code: str, entry: dict[str, Any]) -> dict[str, Any]:
    """The ServiceQuota structure of a stored quota, without Value."""
    item: dict[str, Any] = {
        "ServiceCode": service_code,
        "ServiceName": entry.get("service_name", service_code),
        "QuotaArn": f"arn:aws:servicequotas:{region}:{account}:{service_code}/{quota_code}",
        "QuotaCode": quota_code,
        "QuotaName": entry.get("name", quota_code),
        "Unit": "None",
        "Adjustable": bool(entry.get("adjustable", True)),
        "GlobalQuota": bool(entry.get("global", False)),
    }
    if entry.get("usage_metric"):
        item["UsageMetric"] = entry["usage_metric"]
    if entry.get("quota_period"):
        item["Period"] = entry["quota_period"]
    return item


def quota_entry(spec: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(service_code, quota_code, stored entry) of one quota of seed_quotas.

    `applied` absent means only the default applies (ListServiceQuotas leaves the quota
    out, ListAWSDefaultServiceQuotas lists it); `usage` absent means the quota has no
    usage data; a quota with usage gets a default UsageMetric (AWS/Usage ResourceCount,
    dimensions Service=<service code>, Type=Resource, Resource=<quota code>, Class=None,
    Maximum) unless `usage_metric` says otherwise; `period` is the seconds between the
    metric's datapoints (60, as AWS publishes usage every minute)."""
    service_code, quota_code = str(spec["service_code"]), str(spec["quota_code"])
    entry: dict[str, Any] = {
        "name": str(spec.get("quota_name", quota_code)),
        "service_name": str(spec.get("service_name", service_code)),
        "adjustable": bool(spec.get("adjustable", True)),
        "global": bool(spec.get("global", False)),
        "period": int(spec.get("period", 60)),
    }
    if entry["period"] <= 0:
        raise ValueError(f"period must be positive: {entry['period']}")
    for key in ("applied", "default"):
        if spec.get(key) is not None:
            entry[key] = spec[key]  # a number, or "NoSuchResource" / "AccessDenied"
    if spec.get("usage") is not None:
        entry["usage"] = float(spec["usage"])
    metric = spec.get("usage_metric")
    if metric is None and "usage" in entry:
        metric = {}
    if metric is not None:
        entry["usage_metric"] = {
            "MetricNamespace": str(metric.get("MetricNamespace", "AWS/Usage")),
            "MetricName": str(metric.get("MetricName", "ResourceCount")),
            "MetricDimensions": {
                str(k): str(v)
                for k, v in (metric.get("MetricDimensions") or {"Service": service_code, "Type": "Resource", "Resource": quota_code, "Class": "None"}).items()
            },
            "MetricStatisticRecommendation": str(metric.get("MetricStatisticRecommendation", "Maximum")),
        }
    if spec.get("quota_period"):
        entry["quota_period"] = dict(spec["quota_period"])  # {"PeriodValue": n, "PeriodUnit": "SECOND"}
    if spec.get("resources"):
        entry["resources"] = dict(spec["resources"])
    return service_code, quota_code, entry


def seed_quotas(account: str, region: str, quotas: list[dict[str, Any]], replace: bool = False) -> dict[str, int]:
    """Stores quotas for an account and region; `replace` forgets its earlier ones first."""
    entries = [quota_entry(spec) for spec in quotas]
    with STATE.lock:
        if replace:
            for service_code, quota_code in list(STATE.quotas.of(account, region)):
                del STATE.quotas[(account, region, service_code, quota_code)]
        for service_code, quota_code, entry in entries:
            STATE.quotas[(account, region, service_code, quota_code)] = entry
    return {"quotas": len(entries)}


def generate_quotas(count: int, services: int, no_usage_every: int = 0, prefix: str = "svc") -> list[dict[str, Any]]:
    """`count` quotas spread round-robin over `services` services (`{prefix}000`, ...),
    for seed_quotas: deterministic, so tests and benches can compute what to expect.

    Quota i is `L-{i:08X}` with default 100 × (1 + i mod 7), applied twice its default
    when i is a multiple of 3 (else absent), and an integer usage up to 110% of its
    limit; with `no_usage_every` n > 0, every n-th quota (i mod n = n - 1) has no usage."""
    if count < 0 or services < 1:
        raise ValueError("count must be >= 0 and services >= 1")
    out = []
    for i in range(count):
        service_code = f"{prefix}{i % services:03d}"
        default = 100 * (1 + i % 7)
        applied = 2 * default if i % 3 == 0 else None
        limit = applied or default
        spec: dict[str, Any] = {
            "service_code": service_code,
            "service_name": f"Generated service {i % services}",
            "quota_code": f"L-{i:08X}",
            "quota_name": f"Generated quota {i}",
            "default": default,
            "adjustable": i % 2 == 0,
            "global": False,
            "usage_metric": {
                "MetricNamespace": "AWS/Usage",
                "MetricName": "ResourceCount",
                "MetricDimensions": {"Service": service_code, "Type": "Resource", "Resource": f"R{i:06d}", "Class": "None"},
                "MetricStatisticRecommendation": "Maximum",
            },
        }
        if applied is not None:
            spec["applied"] = applied
        if not (no_usage_every > 0 and i % no_usage_every == no_usage_every - 1):
            spec["usage"] = (i * 7919) % (limit * 11 // 10 + 1)
        out.append(spec)
    return out


def has_usage_data(entry: dict[str, Any]) -> bool:
    return entry.get("usage") is not None and bool(entry.get("usage_metric")) and not entry.get("no_data")


def utilization_rows(account: str, region: str) -> list[dict[str, Any]]:
    """The rows of a utilization report of an account and region, best first: quotas
    with usage data and a limit above 0 (the applied value, else the default), sorted by
    utilization descending, then service and quota code. The caller holds STATE.lock."""
    rows = []
    for (service_code, quota_code), entry in STATE.quotas.of(account, region).items():
        if not has_usage_data(entry):
            continue
        default, applied = number(entry.get("default")), number(entry.get("applied"))
        limit = applied if applied is not None else default
        if not limit or limit <= 0:
            continue
        row = {
            "QuotaCode": quota_code,
            "ServiceCode": service_code,
            "QuotaName": entry.get("name", quota_code),
            "Namespace": entry["usage_metric"]["MetricNamespace"],
            "Utilization": entry["usage"] / limit * 100,
            "AppliedValue": limit,
            "ServiceName": entry.get("service_name", service_code),
            "Adjustable": bool(entry.get("adjustable", True)),
        }
        if default is not None:
            row["DefaultValue"] = default
        rows.append(row)
    rows.sort(key=lambda r: (-r["Utilization"], r["ServiceCode"], r["QuotaCode"]))
    return rows


# --- CloudWatch GetMetricData --------------------------------------------------------------

class CloudWatchError(Exception):
    """A client error of GetMetricData, with its query-compatible code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


MAX_METRIC_DATA_QUERIES = 500
DEFAULT_MAX_DATAPOINTS = 100_800
QUERY_ID_RE = re.compile(r"[a-z][a-zA-Z0-9_]{0,254}")
# Maximum, Minimum, Average, Sum, SampleCount, and the percentile-like statistics.
STAT_RE = re.compile(r"Maximum|Minimum|Average|Sum|SampleCount|IQM|p\d{1,2}(\.\d+)?|(tm|wm|tc|ts|pr|TM|WM|TC|TS|PR)\d*(\.\d+)?(\([^)]*\))?")


def epoch_seconds(value: Any, name: str) -> float:
    """A timestamp of a request: CBOR tag 1 (decoded as datetime), or epoch seconds."""
    if isinstance(value, datetime.datetime):
        return value.replace(tzinfo=value.tzinfo or datetime.timezone.utc).timestamp()
    if isinstance(value, cbor2.CBORTag) and value.tag == 1:
        return float(value.value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise CloudWatchError("InvalidParameterValue", f"The parameter {name} is not a valid timestamp.")


def round_start(start: float, now: float) -> float:
    """CloudWatch rounds StartTime down: to the minute if less than 15 days ago, to 5
    minutes up to 63 days ago, to the hour beyond (API reference, GetMetricData)."""
    age = now - start
    step = 60 if age < 15 * 86400 else 300 if age < 63 * 86400 else 3600
    return math.floor(start / step) * step


PERIOD_UNIT_SECONDS = {"MICROSECOND": 1e-6, "MILLISECOND": 1e-3, "SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86400, "WEEK": 604800}


def raw_value(entry: dict[str, Any]) -> float:
    """The value of each raw datapoint of a seeded quota's usage metric. The seeded
    usage is what counts against the quota: for a rate quota (a quota period) whose
    metric is summed (CallCount), each raw datapoint holds the calls of its own period,
    usage × raw period / quota period (a per-second quota at 5 a second: 300 a minute)."""
    usage = float(entry["usage"])
    qp = entry.get("quota_period") or {}
    seconds = float(qp.get("PeriodValue") or 0) * PERIOD_UNIT_SECONDS.get(str(qp.get("PeriodUnit")), 0)
    if entry["usage_metric"].get("MetricStatisticRecommendation") == "Sum" and seconds > 0:
        return usage * int(entry.get("period", 60)) / seconds
    return usage


def stat_value(stat: str, usage: float, samples: int) -> float:
    """A statistic over `samples` datapoints that all carry `usage`."""
    if stat == "Sum":
        return usage * samples
    if stat == "SampleCount":
        return float(samples)
    return usage


def datapoints(entry: dict[str, Any], stat: str, period: int, start: float, end: float, now: float) -> list[tuple[float, float]]:
    """The datapoints of a seeded quota's usage metric in [start, end), oldest first, one
    per `period` bucket from `start` that holds a raw datapoint. Raw datapoints are every
    `entry["period"]` seconds, from `history_minutes` (180) before the newest one to the
    newest, which is the last whole period `late_minutes` (0) ago."""
    if not has_usage_data(entry):
        return []
    raw = int(entry.get("period", 60))
    newest = math.floor((now - float(entry.get("late_minutes", 0)) * 60) / raw) * raw
    oldest = newest - float(entry.get("history_minutes", 180)) * 60

    def raw_count(lo: float, hi: float) -> int:
        lo, hi = max(lo, oldest), min(hi, newest + 1)
        first, last = math.ceil(lo / raw), math.ceil(hi / raw) - 1
        return max(0, last - first + 1) if hi > lo else 0

    points = []
    first_bucket = max(0, math.floor((oldest - start) / period))
    last_bucket = min(math.ceil((end - start) / period), math.floor((newest - start) / period) + 1)
    for k in range(first_bucket, last_bucket):
        bucket = start + k * period
        n = raw_count(bucket, min(bucket + period, end))
        if n:
            points.append((bucket, stat_value(stat, raw_value(entry), n)))
    return points


def get_metric_data(account: str, region: str, req: dict[str, Any], now: float) -> dict[str, Any]:
    """GetMetricData over the seeded AWS/Usage metrics of an account and region.

    As AWS: at most 500 queries with unique Ids; a metric matches only on the same
    namespace, name and exactly the same dimensions (else an empty result, no error);
    results in the order of the queries (ReturnData false leaves one out), newest
    datapoint first unless ScanBy is TimestampAscending; at most MaxDatapoints (100,800)
    datapoints a response, the rest behind a NextToken, a result cut by the page
    marked PartialData. Metric math and Metrics Insights are not served."""
    queries = req.get("MetricDataQueries")
    if not isinstance(queries, list) or not queries:
        raise CloudWatchError("MissingParameter", "The parameter MetricDataQueries is required.")
    if len(queries) > MAX_METRIC_DATA_QUERIES:
        raise CloudWatchError("InvalidParameterValue", f"The collection MetricDataQueries must not have a size greater than {MAX_METRIC_DATA_QUERIES}.")
    for name in ("StartTime", "EndTime"):
        if req.get(name) is None:
            raise CloudWatchError("MissingParameter", f"The parameter {name} is required.")
    start, end = round_start(epoch_seconds(req["StartTime"], "StartTime"), now), epoch_seconds(req["EndTime"], "EndTime")
    if start >= end:
        raise CloudWatchError("InvalidParameterValue", "The parameter StartTime must be less than the parameter EndTime.")
    scan = req.get("ScanBy", "TimestampDescending")
    if scan not in ("TimestampDescending", "TimestampAscending"):
        raise CloudWatchError("ValidationError", f"1 validation error detected: Value '{scan}' at 'scanBy' failed to satisfy constraint: Member must satisfy enum value set: [TimestampDescending, TimestampAscending]")
    max_points = req.get("MaxDatapoints", DEFAULT_MAX_DATAPOINTS)
    if not isinstance(max_points, int) or isinstance(max_points, bool) or max_points < 1:
        raise CloudWatchError("InvalidParameterValue", "The parameter MaxDatapoints must be a positive integer.")

    parsed = []
    seen: set[str] = set()
    for n, q in enumerate(queries, 1):
        where = f"MetricDataQueries.member.{n}"
        qid = q.get("Id") if isinstance(q, dict) else None
        if not isinstance(qid, str) or not QUERY_ID_RE.fullmatch(qid):
            raise CloudWatchError("ValidationError", f"The value {qid!r} for parameter {where}.Id is invalid: it must start with a lowercase letter and hold only letters, digits and underscores.")
        if qid in seen:
            raise CloudWatchError("ValidationError", f"The values for parameter Id in MetricDataQueries are not unique: {qid}.")
        seen.add(qid)
        stat = q.get("MetricStat")
        if q.get("Expression") is not None or not isinstance(stat, dict):
            raise CloudWatchError("InvalidParameterValue", f"{where}: the test server serves only MetricStat queries, not Expression.")
        metric = stat.get("Metric") or {}
        period = stat.get("Period")
        if not isinstance(period, int) or isinstance(period, bool) or period <= 0 or (period % 60 and period not in (1, 5, 10, 20, 30)):
            raise CloudWatchError("InvalidParameterValue", f"The parameter {where}.MetricStat.Period must be 1, 5, 10, 20, 30, or any multiple of 60.")
        if not isinstance(stat.get("Stat"), str) or not STAT_RE.fullmatch(stat["Stat"]):
            raise CloudWatchError("ValidationError", f"The value for parameter {where}.MetricStat.Stat is not a valid statistic.")
        dims = frozenset((str(d.get("Name")), str(d.get("Value"))) for d in metric.get("Dimensions") or [])
        key = (metric.get("Namespace"), metric.get("MetricName"), dims)
        parsed.append((qid, q.get("Label") or metric.get("MetricName") or qid, key, stat["Stat"], period, q.get("ReturnData", True) is not False))

    # The token binds the query set and time range, and keeps the clock of the first page.
    fingerprint = hashlib.sha256(json.dumps([account, region, queries, start, end, scan], sort_keys=True, default=str).encode()).hexdigest()[:16]
    offset = 0
    if req.get("NextToken") is not None:
        parts = read_token(req["NextToken"])
        if not parts or len(parts) != 4 or parts[:2] != ["gmd", fingerprint]:
            raise CloudWatchError("InvalidNextToken", "The service couldn't process your request because the NextToken is not valid for it.")
        now, offset = float(parts[2]), int(parts[3])

    with STATE.lock:
        metrics: dict[tuple, dict[str, Any]] = {}
        for entry in STATE.quotas.of(account, region).values():
            m = entry.get("usage_metric")
            if m:
                metrics.setdefault((m["MetricNamespace"], m["MetricName"], frozenset(m["MetricDimensions"].items())), dict(entry))
    series = []
    for qid, label, key, stat, period, returned in parsed:
        if not returned:
            continue
        entry = metrics.get(key)
        points = datapoints(entry, stat, period, start, end, now) if entry else []
        if scan == "TimestampDescending":
            points.reverse()
        series.append((qid, label, points))

    results = []
    position, page_end = 0, offset + max_points
    for qid, label, points in series:
        first, last = position, position + len(points)
        position = last
        if not (first < page_end and last > offset) and not (not points and offset == 0):
            continue
        chunk = points[max(offset, first) - first : min(last, page_end) - first]
        results.append({
            "Id": qid,
            "Label": label,
            "Timestamps": [int(t) if float(t).is_integer() else t for t, _ in chunk],
            "Values": [float(v) for _, v in chunk],
            "StatusCode": "PartialData" if last > page_end else "Complete",
        })
    out: dict[str, Any] = {"MetricDataResults": results, "Messages": []}
    if position > page_end:
        out["NextToken"] = sign_token("gmd", fingerprint, repr(now), str(page_end))
    return out


DEMO_ACCOUNTS = ("123456789012", "210987654321")


def seed_demo() -> None:
    """Sample data for `make demo`: two accounts, two regions; one account near its
    standard-parameter limit, one repository near its image limit, one account with
    many buckets."""
    a, b = DEMO_ACCOUNTS
    seed_ssm(a, "eu-west-1", 8_734, 12, "/demo/app")
    seed_ssm(a, "us-east-1", 1_234, 56, "/demo/app")
    seed_ssm(b, "eu-west-1", 9_612, 3, "/demo/legacy")
    seed_ssm(b, "us-east-1", 310, 0, "/demo/app")
    seed_ecr(a, "eu-west-1", {"payments/api": {"images": 9_100, "tags_per_image": 2, "untagged": 400, "archived": 120}, "web/frontend": {"images": 800, "tags_per_image": 1, "lifecycle": True}}, 25, "service")
    seed_ecr(a, "us-east-1", {"web/frontend": {"images": 140}}, 0, "service")
    seed_ecr(b, "eu-west-1", {"legacy/batch": {"images": 2_000, "untagged": 1_500}}, 3, "tool")
    with STATE.lock:
        STATE.quotas[(a, "eu-west-1", "ecr", "L-03A36CE1")] = {
            "applied": 20_000, "default": 10_000,
            "resources": {f"arn:aws:ecr:eu-west-1:{a}:repository/payments/api": 10_000},
        }
        for acct in DEMO_ACCOUNTS:
            STATE.quotas[(acct, "us-east-1", "s3", "L-DC2B2D3D")] = {"applied": 10_000, "default": 10_000}
    seed_s3(a, {"eu-west-1": 40, "us-east-1": 12}, {"eu-west-1": 2}, {"eu-west-1": [30, 4]}, "demo")
    seed_s3(b, {"eu-west-1": 6_100, "us-east-1": 3_050}, {}, {"us-east-1": 120}, "demo")
    # Metered quotas for servicequotas_exporter: one account short of vCPUs in
    # eu-west-1, the rest comfortable.
    def metered(service: str, code: str, name: str, usage: float, applied: float | None, default: float, **kw: Any) -> dict[str, Any]:
        q = {"service_code": service, "service_name": service, "quota_code": code, "quota_name": name,
             "default": default, "adjustable": True, "usage": usage, **kw}
        return q if applied is None else {**q, "applied": applied}

    for acct, vcpus in ((a, 1_180), (b, 40)):
        seed_quotas(acct, "eu-west-1", [
            metered("ec2", "L-1216C47A", "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances", vcpus, 1_280, 5),
            metered("ec2", "L-0263D0A3", "EC2-VPC Elastic IPs", 3, None, 5),
            metered("vpc", "L-F678F1CE", "VPCs per Region", 2, None, 5),
            metered("lambda", "L-B99A9384", "Concurrent executions", 120, 1_000, 1_000),
        ])
        seed_quotas(acct, "us-east-1", [
            metered("ec2", "L-1216C47A", "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances", 64, 640, 5),
            metered("elasticloadbalancing", "L-53DA6B97", "Application Load Balancers per Region", 7, 50, 50),
            metered("iam", "L-FE177D64", "Roles per account", 412 if acct == a else 96, None, 1_000, **{"global": True}),
        ])


class QuietHandler(MotoRequestHandler):
    """One line per request is noise in test logs; errors are still reported."""

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        pass


def serve(host: str, port: int, seed: str | None) -> None:
    if seed == "demo":
        seed_demo()
    app = Layer(DomainDispatcherApplication(create_backend_app))
    server = make_server(host, port, app, threaded=True, request_handler=QuietHandler)
    real_host, real_port = server.server_address[:2]
    print(f"READY http://{real_host}:{real_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--seed", choices=["demo"], default=None)
    args = ap.parse_args(argv)
    serve(args.host, args.port, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
