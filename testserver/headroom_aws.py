"""The local AWS test server: moto's server with a thin layer that behaves like AWS
where moto does not and the exporters depend on it.

What the layer adds, per request, in front of moto (everything else is moto's):
- SSM DescribeParameters with AWS's paging: MaxResults 1..50 (default 10), more than 50
  is a ValidationException; optionally short and empty pages that still carry a
  NextToken; only the account's own parameters, never moto's public /aws/service ones.
- Service Quotas from data set through the control API (moto has none for ssm, ecr or
  s3): ListServiceQuotas (account and resource level, ALL) and
  ListAWSDefaultServiceQuotas paged at 100 like AWS, and GetServiceQuota /
  GetAWSDefaultServiceQuota answering a value, NoSuchResourceException or
  AccessDeniedException per account, region, service and quota.
- Fault injection: throttling, 5xx, access denied or latency on chosen operations,
  accounts and regions, every n-th matching call and/or a limited number of times.
- Fast seeding of thousands of parameters straight into moto's backend.
- A request log, so tests can count calls from the server's side.

Control API (JSON over HTTP, under /_headroom/):
  POST /_headroom/reset                     forget faults, quotas, log, settings
  POST /_headroom/seed/ssm                  {"account","region","standard","advanced","prefix"}
  POST /_headroom/quotas                    {"account","region","service_code","quota_code",
                                             "applied": number|"NoSuchResource"|"AccessDenied",
                                             "default": number|"NoSuchResource"|"AccessDenied",
                                             "resources": {"<resource ARN>": number}}
  POST /_headroom/faults                    {"operation","account","region","code","status",
                                             "every","times","latency_ms"} (all optional but code
                                             or latency_ms); returns {"id"}
  POST /_headroom/settings                  {"short_pages": bool}
  GET  /_headroom/log                       [{"operation","account","region","status"}]
  GET  /_headroom/health                    {"ok": true}

Run: python -m testserver.headroom_aws --port 0 [--host 127.0.0.1] [--seed demo]
It prints one line `READY http://host:port` once it accepts connections.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

DEFAULT_ACCOUNT = "123456789012"
CREDENTIAL_RE = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")


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
    seen: int = 0
    fired: int = 0

    def matches(self, op: str, account: str, region: str) -> bool:
        return (
            (self.operation is None or self.operation == op)
            and (self.account is None or self.account == account)
            and (self.region is None or self.region == region)
        )


@dataclass
class State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    faults: list[Fault] = field(default_factory=list)
    next_fault: int = 1
    # (account, region, service_code, quota_code) -> {"applied": ..., "default": ...}
    quotas: dict[tuple[str, str, str, str], dict[str, Any]] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    short_pages: bool = False
    # (account, region, repository) -> digests of archived images
    archived: dict[tuple[str, str, str], set[str]] = field(default_factory=dict)
    # (account, region) -> directory buckets; (account, region) -> (on buckets, other) access points
    directory_buckets: dict[tuple[str, str], int] = field(default_factory=dict)
    access_points: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)

    def reset(self) -> None:
        with self.lock:
            self.faults.clear()
            self.quotas.clear()
            self.log.clear()
            self.archived.clear()
            self.directory_buckets.clear()
            self.access_points.clear()
            self.short_pages = False


STATE = State()


def account_for(access_key: str | None) -> str:
    if not access_key:
        return DEFAULT_ACCOUNT
    from moto.iam.models import get_account_id_from

    return get_account_id_from(access_key)


def json_response(start: Callable, status: int, body: Any, headers: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    data = json.dumps(body, default=str).encode()
    reason = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "Error")
    start(
        f"{status} {reason}",
        [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(data))), *headers],
    )
    return [data]


def aws_json_error(start: Callable, status: int, code: str, message: str) -> list[bytes]:
    return json_response(
        start, status, {"__type": code, "message": message}, [("x-amzn-ErrorType", f"{code}:http://internal.amazon.com/coral/")]
    )


def xml_error(start: Callable, status: int, code: str, message: str) -> list[bytes]:
    data = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ErrorResponse><Error><Type>Sender</Type>'
        f"<Code>{code}</Code><Message>{message}</Message></Error><RequestId>headroom</RequestId></ErrorResponse>"
    ).encode()
    start(f"{status} Error", [("Content-Type", "text/xml"), ("Content-Length", str(len(data)))])
    return [data]


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
        operation = target.split(".", 1)[1] if "." in target else s3_op or self.query_operation(environ, body, signing_service)
        xml = signing_service in ("sts", "s3", "s3express", "iam")

        fault = self.pick_fault(operation, account, region)
        status_box: list[int] = []

        def recording_start(status: str, headers: list, exc_info: Any = None) -> Any:
            status_box.append(int(status.split(" ", 1)[0]))
            return start(status, headers, exc_info) if exc_info else start(status, headers)

        try:
            if fault is not None:
                if fault.latency_ms:
                    time.sleep(fault.latency_ms / 1000)
                if fault.code:
                    if xml:
                        return xml_error(recording_start, fault.status, fault.code, fault.message)
                    return aws_json_error(recording_start, fault.status, fault.code, fault.message)
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
                    }
                )

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
        token = req.get("NextToken")
        offset, page_number = 0, 0
        if token:
            try:
                _, off, num = base64.b64decode(token).decode().split(":")
                offset, page_number = int(off), int(num)
            except Exception:
                return aws_json_error(start, 400, "InvalidNextToken", "The specified token isn't valid.")
        backend = ssm_backends[account][region]
        params = [
            p
            for p in backend.describe_parameters(req.get("Filters") or [], req.get("ParameterFilters") or [])
            if not p.name.startswith("/aws/")
        ]
        size = max_results
        if STATE.short_pages:
            # Real Parameter Store returns short pages, even empty ones, with a token.
            size = (0, max(1, max_results // 3), max_results)[page_number % 3]
        page = params[offset : offset + size]
        out: dict[str, Any] = {"Parameters": [self.metadata(p) for p in page]}
        end = offset + size
        if end < len(params):
            out["NextToken"] = base64.b64encode(f"headroom:{end}:{page_number + 1}".encode()).decode()
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

    @staticmethod
    def offset_of(token: str | None) -> int:
        return int(base64.b64decode(token).decode().split(":")[1]) if token else 0

    @staticmethod
    def token_for(end: int, total: int) -> str | None:
        return base64.b64encode(f"headroom:{end}".encode()).decode() if end < total else None

    def listbuckets(self, environ: dict, account: str, region: str, start: Callable) -> list[bytes]:
        from moto.s3.models import s3_backends

        q = self.query(environ)
        paginated = "max-buckets" in q or "continuation-token" in q
        with STATE.lock:
            entry = STATE.quotas.get((account, "us-east-1", "s3", "L-DC2B2D3D"), {})
        applied = entry.get("applied")
        if not paginated and isinstance(applied, (int, float)) and applied > 10_000:
            return xml_error(start, 400, "InvalidRequest", "Unpaginated ListBuckets is not supported for accounts with a general purpose bucket quota above 10,000; use max-buckets")
        max_buckets = int(q.get("max-buckets", 10_000))
        if not 1 <= max_buckets <= 10_000:
            return xml_error(start, 400, "InvalidArgument", "max-buckets must be 1 to 10000")
        buckets = sorted(s3_backends[account]["aws"].buckets.values(), key=lambda b: b.name)
        try:
            offset = self.offset_of(q.get("continuation-token"))
        except Exception:
            return xml_error(start, 400, "InvalidArgument", "The continuation token provided is incorrect")
        page = buckets[offset : offset + max_buckets] if paginated else buckets
        items = "".join(
            f"<Bucket><Name>{b.name}</Name><CreationDate>{b.creation_date_ISO8601}</CreationDate><BucketRegion>{b.region_name}</BucketRegion></Bucket>"
            for b in page
        )
        token = self.token_for(offset + max_buckets, len(buckets)) if paginated else None
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
            return xml_error(start, 400, "InvalidArgument", "max-directory-buckets must be 1 to 1000")
        with STATE.lock:
            n = STATE.directory_buckets.get((account, region), 0)
        offset = self.offset_of(q.get("continuation-token"))
        names = [f"headroom-{i:05d}--{region}-az1--x-s3" for i in range(offset, min(n, offset + max_buckets))]
        items = "".join(f"<Bucket><Name>{x}</Name><CreationDate>2026-01-01T00:00:00.000Z</CreationDate></Bucket>" for x in names)
        token = self.token_for(offset + max_buckets, n)
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
        offset = self.offset_of(q.get("nextToken"))
        items = "".join(
            f"<AccessPoint><Name>ap-{i:05d}</Name><NetworkOrigin>Internet</NetworkOrigin><Bucket>bucket-{i:05d}</Bucket></AccessPoint>"
            for i in range(offset, min(n, offset + max_results))
        )
        token = self.token_for(offset + max_results, n)
        return self.xml(
            start,
            '<ListAccessPointsResult xmlns="http://awss3control.amazonaws.com/doc/2018-08-20/">'
            f"<AccessPointList>{items}</AccessPointList>" + (f"<NextToken>{token}</NextToken>" if token else "") + "</ListAccessPointsResult>",
        )

    # --- ECR ---------------------------------------------------------------------------
    # moto returns every repository and image in one page whatever maxResults says.

    @staticmethod
    def page_of(items: list, req: dict, start: Callable, limit: int, default: int, key: str) -> list[bytes]:
        max_results = req.get("maxResults", default)
        if not isinstance(max_results, int) or not 1 <= max_results <= limit:
            return aws_json_error(
                start, 400, "InvalidParameterException",
                f"Invalid parameter at 'maxResults' failed to satisfy constraint: 'Member must have value less than or equal to {limit}'",
            )
        offset = 0
        if req.get("nextToken"):
            try:
                offset = int(base64.b64decode(req["nextToken"]).decode().split(":")[1])
            except Exception:
                return aws_json_error(start, 400, "InvalidParameterException", "Invalid parameter at 'nextToken'")
        out: dict[str, Any] = {key: items[offset : offset + max_results]}
        if offset + max_results < len(items):
            out["nextToken"] = base64.b64encode(f"headroom:{offset + max_results}".encode()).decode()
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
        return self.page_of(repos, req, start, 1000, 100, "repositories")

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
        return self.page_of(ids, req, start, 1000, 100, "imageIds")

    # --- Service Quotas ----------------------------------------------------------------

    def service_quotas(self, account: str, region: str, operation: str, body: bytes, start: Callable) -> list[bytes]:
        req = json.loads(body or b"{}")
        service_code, quota_code = req.get("ServiceCode", ""), req.get("QuotaCode", "")
        if operation == "ListServiceQuotas":
            return self.list_service_quotas(account, region, req, start)
        if operation == "ListAWSDefaultServiceQuotas":
            return self.list_service_quotas(account, region, req, start, defaults=True)
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
        quota = {
            "ServiceCode": service_code,
            "ServiceName": service_code,
            "QuotaArn": f"arn:aws:servicequotas:{region}:{account}:{service_code}/{quota_code}",
            "QuotaCode": quota_code,
            "QuotaName": entry.get("name", quota_code),
            "Value": value,
            "Unit": "None",
            "Adjustable": bool(entry.get("adjustable", True)),
            "GlobalQuota": bool(entry.get("global", False)),
        }
        return json_response(start, 200, {"Quota": quota})

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
            for (acct, reg, svc, code), entry in sorted(STATE.quotas.items()):
                if (acct, reg, svc) != (account, region, service_code) or (quota_code and code != quota_code):
                    continue
                quota = {
                    "ServiceCode": svc, "ServiceName": svc, "QuotaCode": code, "QuotaName": entry.get("name", code),
                    "QuotaArn": f"arn:aws:servicequotas:{region}:{account}:{svc}/{code}",
                    "Unit": "None", "Adjustable": bool(entry.get("adjustable", True)), "GlobalQuota": bool(entry.get("global", False)),
                }
                value = entry.get("default" if defaults else "applied")
                if (defaults or level in ("ACCOUNT", "ALL")) and isinstance(value, (int, float)) and not isinstance(value, bool):
                    items.append({**quota, "Value": value})
                if not defaults and level in ("RESOURCE", "ALL"):
                    for arn, v in sorted(entry.get("resources", {}).items()):
                        items.append({**quota, "Value": v, "QuotaContext": {"ContextScope": "RESOURCE", "ContextScopeType": "AWS::ECR::Repository", "ContextId": arn}})
        offset = int(req.get("NextToken") or 0)
        out: dict[str, Any] = {"Quotas": items[offset : offset + max_results]}
        if offset + max_results < len(items):
            out["NextToken"] = str(offset + max_results)
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
        if action == "settings":
            with STATE.lock:
                STATE.short_pages = bool(req.get("short_pages", STATE.short_pages))
            return {"ok": True}
        if action == "quotas":
            key = (req.get("account", DEFAULT_ACCOUNT), req["region"], req["service_code"], req["quota_code"])
            with STATE.lock:
                STATE.quotas[key] = {k: v for k, v in req.items() if k in ("applied", "default", "adjustable", "global", "name", "resources")}
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
                )
                if not f.code and not f.latency_ms:
                    raise ValueError("a fault needs code or latency_ms")
                STATE.next_fault += 1
                STATE.faults.append(f)
            return {"id": f.id}
        if action == "seed/s3":
            return seed_s3(
                req.get("account", DEFAULT_ACCOUNT), req.get("buckets", {}), req.get("directory_buckets", {}),
                req.get("access_points", {}), req.get("prefix", "headroom"),
            )
        if action == "seed/ecr":
            return seed_ecr(req.get("account", DEFAULT_ACCOUNT), req["region"], req.get("repositories", {}), int(req.get("empty", 0)), req.get("prefix", "empty"))
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
