"""The IAM policies in deploy/iam grant exactly what the code calls, and the README and
the Terraform module say the same.

The AWS operations are read out of the Rust sources: every `.send()` ends a fluent SDK
call `<client>.<operation>()...send()`, the operation is the first call of that chain,
and the client's crate (`aws_sdk_ecr`, ...) comes from the nearest typed declaration of
the receiver (`let client: aws_sdk_ecr::Client`, `client: &aws_sdk_ecr::Client`,
`sts: aws_sdk_sts::Client`, `build_client::<aws_sdk_sts::Client>`). Each operation
maps to its IAM action through OPERATIONS below; an operation missing from that table
fails the test, so a new SDK call cannot ship without a decision about its permission.

The exporters are the workspace's (tests/exporters.py); each one's policy is
deploy/iam/<its binary, with dashes>.json (ssm-quota-exporter.json,
servicequotas-exporter.json), and the README's table names it by its binary.

An action is granted to one of three identities: the reader (the exporter's policy, in
the account it reads), the exporter's own identity to reach a reader
(assume-role-policy.json, SOURCE_IDENTITY_ACTIONS), or the identity that reads AWS
Organizations to discover member accounts (organizations-discovery.json,
DISCOVERY_ACTIONS).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest

from exporters import EXPORTERS as WORKSPACE_EXPORTERS, Exporter

ROOT = Path(__file__).resolve().parent.parent
IAM_DIR = ROOT / "deploy" / "iam"
TF_DIR = ROOT / "deploy" / "terraform"
MODULE_DIR = TF_DIR / "cross-account-role"
DISCOVERY_MODULE_DIR = TF_DIR / "organizations-discovery"
DISCOVERY_POLICY = IAM_DIR / "organizations-discovery.json"

# (SDK crate without "aws_sdk_", fluent method) -> IAM action, from the AWS Service
# Authorization Reference and each API's "Permissions" section. Add every new SDK call
# here *and* to the policy that needs it.
OPERATIONS: dict[tuple[str, str], str] = {
    ("ssm", "describe_parameters"): "ssm:DescribeParameters",
    ("ecr", "describe_repositories"): "ecr:DescribeRepositories",
    ("ecr", "list_images"): "ecr:ListImages",
    ("ecr", "get_lifecycle_policy"): "ecr:GetLifecyclePolicy",
    # S3's names differ from the API's: ListBuckets is authorized by ListAllMyBuckets,
    # ListDirectoryBuckets by the s3express service.
    ("s3", "list_buckets"): "s3:ListAllMyBuckets",
    ("s3", "list_directory_buckets"): "s3express:ListAllMyDirectoryBuckets",
    ("s3control", "list_access_points"): "s3:ListAccessPoints",
    ("servicequotas", "list_service_quotas"): "servicequotas:ListServiceQuotas",
    ("servicequotas", "list_aws_default_service_quotas"): "servicequotas:ListAWSDefaultServiceQuotas",
    ("servicequotas", "start_quota_utilization_report"): "servicequotas:StartQuotaUtilizationReport",
    ("servicequotas", "get_quota_utilization_report"): "servicequotas:GetQuotaUtilizationReport",
    ("servicequotas", "list_services"): "servicequotas:ListServices",
    ("cloudwatch", "get_metric_data"): "cloudwatch:GetMetricData",
    ("sts", "assume_role"): "sts:AssumeRole",
    ("sts", "get_caller_identity"): "sts:GetCallerIdentity",
    ("organizations", "list_accounts"): "organizations:ListAccounts",
    ("organizations", "list_accounts_for_parent"): "organizations:ListAccountsForParent",
    ("organizations", "list_children"): "organizations:ListChildren",
    ("organizations", "list_tags_for_resource"): "organizations:ListTagsForResource",
}

# "No permissions are required to perform this operation", and an explicit deny does
# not stop it: granting it would change nothing, so no policy lists it.
NEEDS_NO_PERMISSION = {"sts:GetCallerIdentity"}

# Called by the exporter's own identity to reach a target account, so granted by
# assume-role-policy.json and never by a reader policy.
SOURCE_IDENTITY_ACTIONS = {"sts:AssumeRole"}

# Called from common/ to discover member accounts (`organization:` in the config), by
# the exporter's own identity or the role in `organization.role_arn`, in the management
# account or a delegated administrator: granted by organizations-discovery.json, never
# by a reader policy (a reader role is in a member account, where they fail).
DISCOVERY_ACTIONS = {
    "organizations:ListAccounts",
    "organizations:ListAccountsForParent",
    "organizations:ListChildren",
    "organizations:ListTagsForResource",
}

# The discovery action called only when the config reads account tags (`account_tags`
# or `organization.require_tags`) lives alone in a statement with this Sid, so that it
# can be left out.
DISCOVERY_OPTIONAL_STATEMENTS = {"ReadAccountTags": {"organizations:ListTagsForResource"}}

# Actions a call needs besides its own: with EKS Pod Identity the exporter's session
# carries transitive session tags, which AssumeRole passes on, and passing session tags
# needs sts:TagSession from the caller and in the target role's trust policy.
IMPLIED_ACTIONS = {"sts:AssumeRole": {"sts:TagSession"}}

# Actions called from common/ only for some quotas: the limit resolver asks Service
# Quotas only for the QuotaSpecs a collector declares (`Collector::quotas`) that Service
# Quotas knows (`looked_up`, see quota_specs). Any other action called from common/ is
# needed by every exporter.
COMMON_ONLY_IF = {
    "servicequotas:ListServiceQuotas": ("looked_up",),
    "servicequotas:ListAWSDefaultServiceQuotas": ("looked_up",),
}

# Actions that act on one resource and are scoped to its ARN (in any partition); every
# other action must have Resource "*" (it supports no resource-level permission, or is
# a listing that is not a request on one resource ARN).
SCOPED_RESOURCES = {
    "ecr:ListImages": "arn:*:ecr:*:*:repository/*",
    "ecr:GetLifecyclePolicy": "arn:*:ecr:*:*:repository/*",
    "sts:AssumeRole": "arn:*:iam::*:role/headroom-reader",
    "sts:TagSession": "arn:*:iam::*:role/headroom-reader",
    # ListTagsForResource also takes OUs, roots and policies; the exporter reads the tags
    # of accounts only. (ListAccountsForParent and ListChildren accept only roots and
    # OUs, so scoping them to those ARNs would allow what "*" allows.)
    "organizations:ListTagsForResource": "arn:*:organizations::*:account/o-*/*",
}

# The optional collector's action lives alone in a statement with this Sid, so that it
# can be left out (the Terraform module does so by this Sid).
OPTIONAL_STATEMENTS = {"OptionalCollectorEcrLifecyclePolicies": {"ecr:GetLifecyclePolicy"}}

ACTION_RE = re.compile(r"`([a-z0-9-]+:[A-Za-z0-9*]+)`")
JSON_ACTION_RE = re.compile(r'"([a-z0-9-]+:[A-Za-z0-9*]+)"')


# --- reading Rust --------------------------------------------------------------------


def strip_rust(src: str) -> str:
    """The source with comments and the contents of string and char literals blanked
    out (newlines kept, so offsets and line numbers stay)."""
    out = list(src)
    i, n = 0, len(src)

    def blank(a: int, b: int) -> None:
        for k in range(a, min(b, n)):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j)
            i = j
        elif (m := re.compile(r'b?r(#*)"').match(src, i)) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            end = src.find('"' + m.group(1), m.end())
            end = n if end < 0 else end
            blank(m.end(), end)
            i = end + 1 + len(m.group(1))
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            blank(i + 1, j)
            i = j + 1
        elif c == "'":
            # A char literal ('x', '\n', '\''), or a lifetime ('a), which stays.
            if i + 1 < n and src[i + 1] == "\\":
                j = src.find("'", i + 3)
                blank(i + 1, j)
                i = j + 1
            elif i + 2 < n and src[i + 2] == "'":
                blank(i + 1, i + 2)
                i += 3
            else:
                i += 1
        else:
            i += 1
    return "".join(out)


def strip_test_modules(src: str) -> str:
    """Blanks `#[cfg(test)] mod ... { ... }`: unit tests are not what the exporter calls."""
    out = src
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{", src):
        depth, j = 1, m.end()
        while j < len(src) and depth:
            depth += {"{": 1, "}": -1}.get(src[j], 0)
            j += 1
        out = out[: m.start()] + re.sub(r"[^\n]", " ", src[m.start() : j]) + out[j:]
    return out


def rust_sources(crate_dir: Path) -> dict[Path, str]:
    files = sorted((crate_dir / "src").rglob("*.rs"))
    assert files, f"no Rust sources under {crate_dir / 'src'}"
    return {f: strip_test_modules(strip_rust(f.read_text())) for f in files}


def _back(src: str, i: int) -> int:
    while i >= 0 and src[i].isspace():
        i -= 1
    return i


def _ident_back(src: str, end: int) -> int:
    """Start of the identifier that ends at `end` (inclusive)."""
    i = end
    while i >= 0 and (src[i].isalnum() or src[i] == "_"):
        i -= 1
    return i + 1


def send_chain(src: str, dot: int) -> tuple[list[str], str | None]:
    """Walks back from the `.` of `.send()` over `.method(args)` calls. Returns the
    method names, first call first, and the receiver's identifier (None when the chain
    does not start at a plain identifier or field)."""
    calls: list[str] = []
    i = dot
    while True:
        j = _back(src, i - 1)
        while j >= 0 and src[j] == "?":
            j = _back(src, j - 1)
        if j < 0:
            return calls[::-1], None
        if src[j] == ")":
            depth, k = 0, j
            while k >= 0:
                depth += {")": 1, "(": -1}.get(src[k], 0)
                if depth == 0:
                    break
                k -= 1
            end = _back(src, k - 1)
            start = _ident_back(src, end)
            if start > end:
                return calls[::-1], None
            calls.append(src[start : end + 1])
            p = _back(src, start - 1)
            if p >= 0 and src[p] == ".":
                i = p
                continue
            return calls[::-1], None  # a free function call: no client receiver
        start = _ident_back(src, j)
        if start > j:
            return calls[::-1], None
        return calls[::-1], src[start : j + 1]


def client_crate(src: str, ident: str, at: int) -> str | None:
    """The SDK crate of `ident`'s nearest typed declaration before `at` (else the only
    one in the file): `ident: &aws_sdk_x::Client`, `ident = f::<aws_sdk_x::Client>(...)`."""
    decl = re.compile(rf"\b{re.escape(ident)}\s*[:=][^;(){{}},]*?\baws_sdk_(\w+)::Client\b")
    found = [(m.start(), m.group(1)) for m in decl.finditer(src)]
    before = [c for pos, c in found if pos < at]
    if before:
        return before[-1]
    crates = {c for _, c in found}
    return crates.pop() if len(crates) == 1 else None


@dataclass(frozen=True)
class Call:
    crate: str
    operation: str
    where: str


PASS_THROUGH = {"clone", "as_ref", "borrow", "to_owned"}


def find_calls(src: str, where: str) -> tuple[list[Call], list[str]]:
    """The SDK calls of one stripped source file, and what could not be understood."""
    calls, problems = [], []
    for m in re.finditer(r"\.\s*send_with\s*\(", src):
        line = src.count("\n", 0, m.start()) + 1
        problems.append(f"{where}:{line}: `send_with` is not understood by this test; write `client.<operation>()...send()`")
    for m in re.finditer(r"\.\s*send\s*\(\s*\)", src):
        line = src.count("\n", 0, m.start()) + 1
        chain, receiver = send_chain(src, m.start())
        while chain and chain[0] in PASS_THROUGH:
            chain = chain[1:]
        if not chain or receiver is None:
            problems.append(
                f"{where}:{line}: cannot tell which SDK operation this `.send()` sends; "
                "write it as one chain on a client variable: `client.<operation>()...send()`"
            )
            continue
        crate = client_crate(src, receiver, m.start())
        if crate is None:
            problems.append(
                f"{where}:{line}: cannot tell which SDK client `{receiver}` is; give it a type "
                "(`let client: aws_sdk_<service>::Client = target.client();`)"
            )
            continue
        calls.append(Call(crate, chain[0], f"{where}:{line}"))
    return calls, problems


def sdk_calls(crate_dir: Path) -> list[Call]:
    calls, problems = [], []
    for path, src in rust_sources(crate_dir).items():
        c, p = find_calls(src, str(path.relative_to(ROOT)))
        calls += c
        problems += p
    assert not problems, "\n".join(problems)
    return calls


def action_of(call: Call) -> str:
    key = (call.crate, call.operation)
    assert key in OPERATIONS, (
        f"{call.where}: aws_sdk_{call.crate} operation `{call.operation}` is not in OPERATIONS "
        "in tests/test_iam.py. Look up its IAM action in the AWS Service Authorization "
        "Reference, add it to that table, and grant it in the exporter's policy in deploy/iam/ "
        "and in the README's IAM permissions section."
    )
    return OPERATIONS[key]


# --- what each exporter needs ----------------------------------------------------------


# Every exporter of the workspace (tests/exporters.py), by its short name (the crate's
# directory: ssm, ecr, s3, servicequotas).
BY_SHORT: dict[str, Exporter] = {e.short: e for e in WORKSPACE_EXPORTERS}
EXPORTERS = sorted(BY_SHORT)


def exporter_crates() -> dict[str, Path]:
    on_disk = {p.parent.name for p in (ROOT / "exporters").glob("*/Cargo.toml")}
    assert on_disk == set(BY_SHORT), f"crates under exporters/ that are not workspace members: {sorted(on_disk - set(BY_SHORT))}"
    return {short: ROOT / e.crate_dir for short, e in BY_SHORT.items()}


def policy_path(exporter: str) -> Path:
    """deploy/iam/<binary with dashes>.json: ssm-quota-exporter.json for
    ssm_quota_exporter, servicequotas-exporter.json for servicequotas_exporter."""
    return IAM_DIR / f"{BY_SHORT[exporter].binary.replace('_', '-')}.json"


def fn_bodies(src: str, name: str) -> list[tuple[int, int]]:
    """The (start, end) offsets of the bodies of every `fn <name>(...)` in a stripped source."""
    bodies = []
    for m in re.finditer(rf"\bfn\s+{re.escape(name)}\s*\(", src):
        start = src.find("{", m.end())
        if start < 0:
            continue
        depth, j = 1, start + 1
        while j < len(src) and depth:
            depth += {"{": 1, "}": -1}.get(src[j], 0)
            j += 1
        bodies.append((start, j))
    return bodies


def quota_specs(crate_dir: Path) -> list[dict[str, bool]]:
    """The flags of every quota spec of an exporter crate. `looked_up`: the limit
    resolver asks Service Quotas for it. It only asks for the specs a collector declares
    in `fn quotas()`, and of those only the ones Service Quotas knows: a static
    `QuotaSpec::service_quota(...)` is looked up, `QuotaSpec::documented(...)` is not; a
    `QuotaSpec::discovered(...)` is looked up when built in a `fn quotas()`, and not when
    built at collection time (it carries the limit the service reported, and the
    resolver never sees it). `.per_resource()` on the same expression marks
    resource-level values."""
    specs = []
    for path, src in rust_sources(crate_dir).items():
        declared = fn_bodies(src, "quotas")
        for m in re.finditer(r"\bQuotaSpec::(\w+)\s*\(", src):
            kind = m.group(1)
            assert kind in ("service_quota", "documented", "discovered"), f"{path.relative_to(ROOT)}: QuotaSpec::{kind} is not read by this test"
            end = src.find(";", m.end())
            expression = src[m.start() : end if end >= 0 else len(src)]
            in_quotas_fn = any(a <= m.start() < b for a, b in declared)
            looked_up = kind == "service_quota" or (kind == "discovered" and in_quotas_fn)
            specs.append({"looked_up": looked_up, "resource_level": ".per_resource()" in expression})
        assert not re.search(r"(?<![\w:])QuotaSpec\s*\{", src.replace("pub struct QuotaSpec {", "")), (
            f"{path.relative_to(ROOT)}: build quota specs with QuotaSpec::service_quota or ::documented; this test reads those"
        )
    return specs


class Needs(NamedTuple):
    reader: set[str]  # the reader policy (deploy/iam/<exporter>.json)
    source: set[str]  # the exporter's own identity (assume-role-policy.json)
    discovery: set[str]  # the identity that reads Organizations (organizations-discovery.json)


def needed_actions(exporter: str) -> Needs:
    """What each identity must be granted for one exporter: its crate's calls plus
    those of common/."""
    crate = exporter_crates()[exporter]
    needs = Needs(set(), set(), set())
    own = [action_of(c) for c in sdk_calls(crate)]
    common = [action_of(c) for c in sdk_calls(ROOT / "common")]
    specs = quota_specs(crate)
    for action in own + common:
        if action in NEEDS_NO_PERMISSION:
            continue
        if action in SOURCE_IDENTITY_ACTIONS:
            needs.source.add(action)
        elif action in DISCOVERY_ACTIONS:
            needs.discovery.add(action)
        elif action in own or common_needed(action, specs):
            needs.reader.add(action)
    return needs


def common_needed(action: str, specs: list[dict[str, bool]]) -> bool:
    """Whether an action called from common/ is needed by an exporter with these quotas."""
    flags = COMMON_ONLY_IF.get(action)
    if flags is None:
        return True
    return any(all(s[f] for f in flags) for s in specs)


# --- reading policies ------------------------------------------------------------------


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def as_list(v) -> list:
    return v if isinstance(v, list) else [v]


def policy_actions(doc: dict) -> set[str]:
    return {a for s in doc["Statement"] for a in as_list(s["Action"])}


# --- tests -------------------------------------------------------------------------------


def test_the_scanner_sees_the_calls_it_must():
    """Every `.send()` is read as a call, and every operation in OPERATIONS is still
    called (so a scanner gone blind, or a stale table entry, fails here)."""
    calls = sdk_calls(ROOT / "common") + [c for e in EXPORTERS for c in sdk_calls(exporter_crates()[e])]
    found = {(c.crate, c.operation) for c in calls}
    sends = sum(
        len(re.findall(r"\.\s*send\s*\(\s*\)", src))
        for d in [ROOT / "common", *exporter_crates().values()]
        for src in rust_sources(d).values()
    )
    assert len(calls) == sends
    unused = set(OPERATIONS) - found
    assert not unused, f"OPERATIONS lists operations the code no longer calls: {sorted(unused)}; remove them and their permissions"


def test_the_scanner_reads_chains_and_client_types():
    src = strip_rust(
        "struct P { sts: aws_sdk_sts::Client }\n"
        "fn f(client: &aws_sdk_ecr::Client) {\n"
        "    // client.delete_repository().send()\n"
        "    let q = '\"';\n"
        "    let r = client\n        .list_images()\n        .repository_name(\"x.send()\")\n        .send();\n"
        "    let c: aws_sdk_s3control::Client = t.client();\n"
        "    c.clone().list_access_points().account_id(&a).send().await?;\n"
        "    self.sts.assume_role().role_arn(&self.arn).send();\n"
        "    let req = c.list_access_points();\n"
        "    req.send();\n"
        "    let other = make();\n"
        "    other.get_things().send();\n"
        "}\n"
        "#[cfg(test)]\nmod tests {\n    fn t(client: &aws_sdk_ssm::Client) { client.delete_parameter().send(); }\n}\n"
    )
    calls, problems = find_calls(strip_test_modules(src), "x.rs")
    assert [(c.crate, c.operation, c.where) for c in calls] == [
        ("ecr", "list_images", "x.rs:8"),
        ("s3control", "list_access_points", "x.rs:10"),
        ("sts", "assume_role", "x.rs:11"),
    ]
    assert len(problems) == 2
    assert problems[0].startswith("x.rs:13: cannot tell which SDK operation")
    assert problems[1].startswith("x.rs:15: cannot tell which SDK client `other`")


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_policy_grants_exactly_what_the_exporter_calls(exporter: str):
    path = policy_path(exporter)
    assert path.exists(), f"exporter crate exporters/{exporter} has no policy {path.relative_to(ROOT)}"
    reader = needed_actions(exporter).reader
    granted = policy_actions(load(path))
    missing, extra = sorted(reader - granted), sorted(granted - reader)
    assert not missing and not extra, (
        f"{path.relative_to(ROOT)}: the code calls actions the policy does not grant: {missing}; "
        f"the policy grants actions the code never calls: {extra}"
    )


def test_assume_role_policy_grants_what_the_exporters_own_identity_calls():
    source = set().union(*(needed_actions(e).source for e in EXPORTERS))
    source |= set().union(*(IMPLIED_ACTIONS.get(a, set()) for a in source))
    granted = policy_actions(load(IAM_DIR / "assume-role-policy.json"))
    assert granted == source


def test_discovery_policy_grants_exactly_what_account_discovery_calls():
    """organizations-discovery.json grants the Organizations calls of common/, which
    every exporter makes when the config has an `organization:` section."""
    per_exporter = [needed_actions(e).discovery for e in EXPORTERS]
    assert all(d == per_exporter[0] for d in per_exporter), per_exporter
    called = per_exporter[0]
    assert called, "common/ no longer calls Organizations: remove organizations-discovery.json and DISCOVERY_ACTIONS"
    stale = DISCOVERY_ACTIONS - called
    assert not stale, f"DISCOVERY_ACTIONS lists actions the code no longer calls: {sorted(stale)}"
    granted = policy_actions(load(DISCOVERY_POLICY))
    missing, extra = sorted(called - granted), sorted(granted - called)
    assert not missing and not extra, (
        f"{DISCOVERY_POLICY.relative_to(ROOT)}: the code calls actions the policy does not grant: {missing}; "
        f"the policy grants actions the code never calls: {extra}"
    )
    for s in load(DISCOVERY_POLICY)["Statement"]:
        actions = set(as_list(s["Action"]))
        for sid, optional in DISCOVERY_OPTIONAL_STATEMENTS.items():
            if actions & optional:
                assert s["Sid"] == sid and actions == optional, s


def test_every_policy_file_is_a_valid_identity_policy():
    files = sorted(IAM_DIR.glob("*.json"))
    assert {f.name for f in files} == {policy_path(e).name for e in EXPORTERS} | {
        "assume-role-policy.json",
        "trust-policy.json",
        DISCOVERY_POLICY.name,
    }
    for f in files:
        doc = load(f)
        assert doc.get("Version") == "2012-10-17", f.name
        assert isinstance(doc.get("Statement"), list) and doc["Statement"], f.name
        sids = [s.get("Sid") for s in doc["Statement"]]
        assert all(isinstance(s, str) and re.fullmatch(r"[A-Za-z0-9]+", s) for s in sids), (f.name, sids)
        assert len(set(sids)) == len(sids), (f.name, sids)
        for s in doc["Statement"]:
            assert s["Effect"] == "Allow", (f.name, s)
            actions = as_list(s["Action"])
            assert actions and all(JSON_ACTION_RE.fullmatch(f'"{a}"') and "*" not in a for a in actions), (f.name, s)
            if f.name == "trust-policy.json":
                continue
            assert set(s) <= {"Sid", "Effect", "Action", "Resource"}, (f.name, s)
            for a in actions:
                want = SCOPED_RESOURCES.get(a, "*")
                assert s["Resource"] == want, f"{f.name} {s['Sid']}: {a} should have Resource {want!r}"


def test_optional_collectors_have_their_own_statement():
    for exporter in EXPORTERS:
        for s in load(policy_path(exporter))["Statement"]:
            actions = set(as_list(s["Action"]))
            for sid, optional in OPTIONAL_STATEMENTS.items():
                if actions & optional:
                    assert s["Sid"] == sid and actions == optional, (exporter, s)


def test_trust_policy_trusts_the_exporter_role_with_an_external_id():
    [s] = load(IAM_DIR / "trust-policy.json")["Statement"]
    assert s["Effect"] == "Allow" and sorted(as_list(s["Action"])) == sorted({"sts:AssumeRole"} | IMPLIED_ACTIONS["sts:AssumeRole"])
    assert s["Principal"] == {"AWS": "arn:aws:iam::111111111111:role/headroom-exporter"}
    assert list(s["Condition"]) == ["StringEquals"] and list(s["Condition"]["StringEquals"]) == ["sts:ExternalId"]


# --- the README ----------------------------------------------------------------------------


def readme_iam_section() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^### IAM permissions\n(.*?)(?=^#{1,3} |\Z)", text, re.M | re.S)
    assert m, "README.md has no '### IAM permissions' section"
    return m.group(1)


class ReadmeTable(NamedTuple):
    by_exporter: dict[str, set[str]]  # by exporter binary name
    discovery: set[str]  # the `discovery` rows: organizations-discovery.json


def readme_table() -> ReadmeTable:
    """Actions by exporter binary name, from the section's table (`all` rows go to every
    exporter), and the actions of its `discovery` rows, which go to no exporter: they
    are granted to the identity that reads Organizations."""
    rows = [l for l in readme_iam_section().splitlines() if l.startswith("|")]
    assert len(rows) > 2, "the IAM permissions section has no table"
    by_exporter: dict[str, set[str]] = {BY_SHORT[e].binary: set() for e in EXPORTERS}
    discovery: set[str] = set()
    for row in rows[2:]:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if cells[0] == "discovery":
            discovery |= set(ACTION_RE.findall(cells[1]))
            continue
        who = re.findall(r"`(\w+_exporter)`", cells[0])
        if cells[0] == "all":
            who = list(by_exporter)
        assert who, f"README IAM table row names no exporter: {row}"
        for w in who:
            assert w in by_exporter, f"README IAM table names an unknown exporter: {w}"
            by_exporter[w] |= set(ACTION_RE.findall(cells[1]))
    return ReadmeTable(by_exporter, discovery)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_readme_table_lists_exactly_the_policies_actions(exporter: str):
    binary = BY_SHORT[exporter].binary
    listed = readme_table().by_exporter[binary]
    want = policy_actions(load(policy_path(exporter))) | policy_actions(load(IAM_DIR / "assume-role-policy.json"))
    hint = (
        f"; {sorted(listed & NEEDS_NO_PERMISSION)} need no permission: mention them below the table, not in it"
        if listed & NEEDS_NO_PERMISSION else ""
    )
    assert listed == want, (
        f"README.md 'IAM permissions' table for {binary} lists {sorted(listed)}, "
        f"but deploy/iam grants {sorted(want)}: missing {sorted(want - listed)}, extra {sorted(listed - want)}{hint}"
    )


def test_readme_table_lists_exactly_the_discovery_actions():
    listed = readme_table().discovery
    want = policy_actions(load(DISCOVERY_POLICY))
    assert listed == want, (
        f"README.md 'IAM permissions' table: its `discovery` rows list {sorted(listed)}, "
        f"{DISCOVERY_POLICY.relative_to(ROOT)} grants {sorted(want)}: missing {sorted(want - listed)}, "
        f"extra {sorted(listed - want)}"
    )


def test_readme_json_example_grants_what_the_policies_grant():
    blocks = re.findall(r"```json\n(.*?)```", readme_iam_section(), re.S)
    reader = set().union(*(policy_actions(load(policy_path(e))) for e in EXPORTERS))
    source = policy_actions(load(IAM_DIR / "assume-role-policy.json"))
    assert blocks, "README.md 'IAM permissions' lost its JSON example of the reader policy"
    for block in blocks:
        json.loads(block)
    listed = {a for b in blocks for a in JSON_ACTION_RE.findall(b)} - {"sts:ExternalId"}
    assert listed - source == reader, (
        f"README.md 'IAM permissions' JSON example grants {sorted(listed)}; deploy/iam grants "
        f"{sorted(reader)}: missing {sorted(reader - listed)}, extra {sorted(listed - source - reader)}"
    )


def test_the_iam_readme_table_lists_every_policy_file_with_its_actions():
    """deploy/iam/README.md: a row per policy file, naming exactly the actions it grants."""
    rows = {}
    for line in (IAM_DIR / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and (m := re.fullmatch(r"`([\w.-]+\.json)`", cells[0])):
            rows[m.group(1)] = set(ACTION_RE.findall(cells[-1]))
    files = {f.name for f in IAM_DIR.glob("*.json")}
    assert set(rows) == files, f"deploy/iam/README.md table: rows for {sorted(rows)}, files {sorted(files)}"
    for name, listed in rows.items():
        if name == "trust-policy.json":
            continue  # a trust policy, described rather than listed
        granted = policy_actions(load(IAM_DIR / name))
        assert listed == granted, f"deploy/iam/README.md: the row of {name} lists {sorted(listed)}, the file grants {sorted(granted)}"


# --- Terraform -------------------------------------------------------------------------------


def tf_files() -> list[Path]:
    files = sorted(TF_DIR.rglob("*.tf"))
    for module in (MODULE_DIR, DISCOVERY_MODULE_DIR):
        assert {"main.tf", "variables.tf", "outputs.tf", "versions.tf"} <= {f.name for f in files if f.parent == module}, module
    return files


def test_terraform_reads_the_policy_files_and_names_no_read_action():
    main = (MODULE_DIR / "main.tf").read_text()
    for e in EXPORTERS:
        assert f'"${{path.module}}/../../iam/{policy_path(e).name}"' in main, f"main.tf does not read {policy_path(e).name}"
        assert (MODULE_DIR / "../../iam" / policy_path(e).name).resolve() == policy_path(e)
    discovery_main = (DISCOVERY_MODULE_DIR / "main.tf").read_text()
    assert f'"${{path.module}}/../../iam/{DISCOVERY_POLICY.name}"' in discovery_main, f"organizations-discovery/main.tf does not read {DISCOVERY_POLICY.name}"
    assert (DISCOVERY_MODULE_DIR / "../../iam" / DISCOVERY_POLICY.name).resolve() == DISCOVERY_POLICY
    prefixes = sorted(
        {a.split(":")[0] for e in EXPORTERS for a in policy_actions(load(policy_path(e)))}
        | {a.split(":")[0] for a in policy_actions(load(DISCOVERY_POLICY))}
    )
    assert "organizations" in prefixes
    inlined = re.compile(rf'"({"|".join(map(re.escape, prefixes))}):[A-Za-z*]')
    for f in tf_files():
        m = inlined.search(f.read_text())
        assert not m, f"{f.relative_to(ROOT)} names the action {m.group(0)}…; grant it in deploy/iam/ instead"
    # The module leaves the optional statement out by its Sid: the two must agree.
    assert re.findall(r'ecr_lifecycle_sid\s*=\s*"([^"]*)"', main) == list(OPTIONAL_STATEMENTS)
    assert set(OPTIONAL_STATEMENTS) <= {s["Sid"] for s in load(policy_path("ecr"))["Statement"]}


def test_terraform_knows_every_exporter_and_its_policy_file():
    """The module's exporter names are the workspace's (the crates' directory names),
    each mapped to that exporter's own policy file: the `exporters` variable's default
    (every exporter) and validation, and the policy_files map of main.tf."""
    import hcl2

    variables = hcl2.loads((MODULE_DIR / "variables.tf").read_text())
    [exporters] = [v['"exporters"'] for v in variables["variable"] if '"exporters"' in v]
    assert [d.strip('"') for d in exporters["default"]] == list(BY_SHORT), (
        f"variables.tf: the default of exporters is {exporters['default']}, the workspace has {list(BY_SHORT)}"
    )
    [validation] = exporters["validation"]
    allowed = re.search(r"contains\(\[([^\]]*)\]", validation["condition"]).group(1)
    assert sorted(x.strip().strip('"') for x in allowed.split(",")) == EXPORTERS, f"variables.tf: exporters validation allows {allowed}"
    for e in EXPORTERS:
        assert f'\\"{e}\\"' in validation["error_message"] and f'\\"{e}\\"' in exporters["description"], f"variables.tf: exporters does not mention {e!r}"
    files = hcl2.loads((MODULE_DIR / "main.tf").read_text())["locals"][0]["policy_files"]
    want = {e: f'"${{path.module}}/../../iam/{policy_path(e).name}"' for e in EXPORTERS}
    assert files == want, f"main.tf policy_files: {files}, want {want}"


def test_terraform_parses():
    import hcl2  # python-hcl2, pinned in testserver/requirements.txt

    parsed = {f.name: hcl2.loads(f.read_text()) for f in tf_files() if f.parent == MODULE_DIR}
    variables = {k.strip('"') for v in parsed["variables.tf"]["variable"] for k in v}
    assert {"exporter_role_arn", "external_id", "exporters"} <= variables
    aws = parsed["versions.tf"]["terraform"][0]["required_providers"][0]["aws"]
    assert aws["source"].strip('"') == "hashicorp/aws"
    assert re.fullmatch(r">=\s*5(\.\d+)*", aws["version"].strip('"'))
    discovery = {f.name: hcl2.loads(f.read_text()) for f in tf_files() if f.parent == DISCOVERY_MODULE_DIR}
    variables = {k.strip('"') for v in discovery["variables.tf"]["variable"] for k in v}
    assert {"role_name", "policy_name"} <= variables
    assert {k.strip('"') for o in discovery["outputs.tf"]["output"] for k in o} >= {"policy_arn"}
    aws = discovery["versions.tf"]["terraform"][0]["required_providers"][0]["aws"]
    assert aws["source"].strip('"') == "hashicorp/aws"
    assert re.fullmatch(r">=\s*5(\.\d+)*", aws["version"].strip('"'))
    for readme in sorted(TF_DIR.rglob("README.md")):
        for block in re.findall(r"```hcl\n(.*?)```", readme.read_text(), re.S):
            hcl2.loads(block)
