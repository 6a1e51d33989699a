"""The alert rules and dashboards against a real Prometheus that scrapes every exporter
of the workspace (tests/exporters.py), which count sample data on the local AWS test
server.

The data puts one quota above the warning threshold: standard parameters in eu-west-1
at 850 of a limit lowered to 1,000 by a config override (85%); one above its own,
lowered warning threshold (advanced parameters); and one above the critical threshold
(97 of 100 directory buckets in account B, us-east-1). Everything else sits far below
its limit.

Every value the tests expect (ratios, panels) is computed here from the seed and the
limits the exporters know, never read back from Prometheus and compared with itself.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
import yaml

from conftest import ACCOUNT_A, ACCOUNT_B, ROLE_B, RULE_FILES, AwsServer, Exporter, fast_retries, free_port, terminate, wait_until
from exporters import EXPORTERS

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
VERSION = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["version"]
REGIONS = ["eu-west-1", "us-east-1"]
RATIO_RULE = "quota:aws_quota_usage:ratio"
ACCOUNT_A_NAME = "prod-payments"
# The one quota above the warning threshold.
FULL = {"account_id": ACCOUNT_A, "aws_region": "eu-west-1", "service_code": "ssm", "quota_code": "standard_parameters"}

# --- the seed --------------------------------------------------------------------------

# (account, region) -> (standard, advanced) parameters; none elsewhere.
PARAMETERS = {(ACCOUNT_A, "eu-west-1"): (850, 12), (ACCOUNT_A, "us-east-1"): (40, 0), (ACCOUNT_B, "eu-west-1"): (120, 3)}
STANDARD_LIMIT = 1000  # a limit override: AWS's is 10,000
ADVANCED_WARNING = 0.0001  # a threshold override: 12 of 100,000 in account A, eu-west-1, are above it
# (account, region) -> repositories: `images` tagged images and `untagged` more.
REPOSITORIES = {
    (ACCOUNT_A, "eu-west-1"): {"team/app": {"images": 30, "tags_per_image": 2, "untagged": 4}, "team/web": {"images": 5, "lifecycle": True}},
    (ACCOUNT_A, "us-east-1"): {"team/api": {"images": 7}},
}
# account -> region -> count.
BUCKETS = {ACCOUNT_A: {"eu-west-1": 12, "us-east-1": 3}, ACCOUNT_B: {"eu-west-1": 2}}
# 97 of 100 in account B, us-east-1: the one quota above the critical threshold.
DIRECTORY_BUCKETS = {ACCOUNT_A: {"eu-west-1": 2}, ACCOUNT_B: {"us-east-1": 97}}
ACCESS_POINTS = {ACCOUNT_A: {"eu-west-1": 4}}
# A metered quota in account A, eu-west-1, half used: in every query, never above a threshold.
EC2 = {
    "service_code": "ec2", "service_name": "Amazon EC2", "quota_code": "L-1216C47A",
    "quota_name": "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
    "default": 5, "applied": 640, "adjustable": True, "usage": 320,
}
# quota_code -> (service_code, quota_name, limit): the limits are the exporters' AWS
# defaults (the test server knows none of these quotas), the override, and EC2's.
QUOTA_CODES = {
    "standard_parameters": ("ssm", "Standard parameters", STANDARD_LIMIT),
    "advanced_parameters": ("ssm", "Advanced parameters", 100_000),
    "L-CFEB8E8D": ("ecr", "Registered repositories", 100_000),
    "L-03A36CE1": ("ecr", "Images per repository", 100_000),
    "L-DC2B2D3D": ("s3", "General purpose buckets", 10_000),
    "L-775A314D": ("s3", "Directory buckets", 100),
    "L-FAABEEBA": ("s3", "Access Points", 10_000),
    EC2["quota_code"]: (EC2["service_code"], EC2["quota_name"], EC2["applied"]),
}
# What aws_quota_account_info adds to each account's ratios: account A is named and
# tagged in the config; account B, reached by its role alone, is named by its ID.
ACCOUNT_LABELS = {ACCOUNT_A: {"account_name": ACCOUNT_A_NAME, "tag_team": "payments"}, ACCOUNT_B: {"account_name": ACCOUNT_B}}

Labels = tuple[tuple[str, str], ...]


def labels(**kv: str) -> Labels:
    """A label set, as a key; an empty label is no label at all in Prometheus."""
    return tuple(sorted((k, v) for k, v in kv.items() if v != ""))


@dataclass(frozen=True)
class Quota:
    account_id: str
    aws_region: str
    quota_code: str
    usage: float
    resource: str = ""

    @property
    def service_code(self) -> str:
        return QUOTA_CODES[self.quota_code][0]

    @property
    def limit(self) -> float:
        return QUOTA_CODES[self.quota_code][2]

    @property
    def ratio(self) -> float:
        return self.usage / self.limit

    @property
    def warning(self) -> float:
        return ADVANCED_WARNING if self.quota_code == "advanced_parameters" else 0.80

    def labels(self, named: bool = False, **extra: str) -> Labels:
        """Its labels on aws_quota_usage without the target's; `named`: with its account's
        name and tags, as the ratio rule joins them."""
        return labels(
            account_id=self.account_id, aws_region=self.aws_region, service_code=self.service_code,
            quota_code=self.quota_code, quota_name=QUOTA_CODES[self.quota_code][1], resource=self.resource,
            **(ACCOUNT_LABELS[self.account_id] if named else {}), **extra,
        )


def seeded_quotas() -> list[Quota]:
    """Every quota the exporters count, in every account and region, zero where nothing is seeded."""
    quotas = []
    for account in ACCOUNT_LABELS:
        for region in REGIONS:
            standard, advanced = PARAMETERS.get((account, region), (0, 0))
            repositories = REPOSITORIES.get((account, region), {})
            quotas += [
                Quota(account, region, "standard_parameters", standard),
                Quota(account, region, "advanced_parameters", advanced),
                Quota(account, region, "L-CFEB8E8D", len(repositories)),
                *(Quota(account, region, "L-03A36CE1", r["images"] + r.get("untagged", 0), name) for name, r in repositories.items()),
                Quota(account, region, "L-775A314D", DIRECTORY_BUCKETS.get(account, {}).get(region, 0)),
                Quota(account, region, "L-FAABEEBA", ACCESS_POINTS.get(account, {}).get(region, 0)),
            ]
        # General purpose buckets count per account, whatever their region.
        quotas.append(Quota(account, "global", "L-DC2B2D3D", sum(BUCKETS.get(account, {}).values())))
    return [*quotas, Quota(ACCOUNT_A, "eu-west-1", EC2["quota_code"], EC2["usage"])]


QUOTAS = seeded_quotas()

# Collectors that count per account, in region "global"; the others per configured region.
GLOBAL_COLLECTORS = {"s3_buckets", "servicequotas_global"}
# The AWS calls of the exporters, by (service_code, operation): those of every refresh,
# and those made at start and then hourly (credentials, limits).
REFRESH_CALLS = {
    ("ssm", "DescribeParameters"), ("ecr", "DescribeRepositories"), ("ecr", "ListImages"), ("ecr", "GetLifecyclePolicy"),
    ("s3", "ListBuckets"), ("s3", "ListDirectoryBuckets"), ("s3", "ListAccessPoints"),
    ("servicequotas", "StartQuotaUtilizationReport"), ("servicequotas", "GetQuotaUtilizationReport"),
}
STARTUP_CALLS = {("sts", "AssumeRole"), ("sts", "GetCallerIdentity"), ("servicequotas", "ListAWSDefaultServiceQuotas"), ("servicequotas", "ListServiceQuotas")}
# The errors among them, in every refresh: GetLifecyclePolicy of the repositories without a
# policy, and the throttling the fixture injects.
ERRORS = {("ecr", "GetLifecyclePolicy", "LifecyclePolicyNotFoundException"), ("ssm", "DescribeParameters", "ThrottlingException")}


class Prometheus:
    """A real Prometheus server on loopback with the project's rule files."""

    def __init__(self, targets: dict[str, str]) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is not installed: run scripts/setup.sh"
        self.tmp = tempfile.TemporaryDirectory()
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in RULE_FILES],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [address]}]} for job, address in targets.items()
            ],
        }
        path = Path(self.tmp.name) / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        self.log_path = Path(self.tmp.name) / "prometheus.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={path}",
                f"--storage.tsdb.path={self.tmp.name}/data",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self.ready, 120, "Prometheus to be ready")

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.proc.returncode}: {self.log_path.read_text()}")
        return requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200

    def api(self, path: str, **params: Any) -> Any:
        r = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=30)
        body = r.json()
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        data = self.api("query", query=expr)
        assert data["resultType"] in ("vector", "scalar"), f"{expr}: {data['resultType']}"
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def targets(self, expr: str) -> set[tuple[str, str]]:
        """The (job, instance) of the series `expr` returns."""
        return {(r["metric"]["job"], r["metric"]["instance"]) for r in self.query(expr)}

    def stop(self) -> None:
        terminate(self.proc, 20)
        self.log.close()
        self.tmp.cleanup()


# A refresh takes well under a second here; the timeout cannot exceed the interval.
FAST = {"refresh_interval": "5s", "timeout": "5s", "max_staleness": "1m", "rate_limit": 1000}
# Collector settings by exporter; an exporter not listed here still runs, with its
# collectors at their defaults (their first refresh is all these tests need).
COLLECTORS = {
    "ssm": {
        "ssm_parameters": {
            **FAST,
            "limit_overrides": {"standard_parameters": STANDARD_LIMIT},
            # One threshold override: 12 advanced parameters of 100,000 in account A,
            # eu-west-1, are far below 80% but above this warning threshold.
            "alert_thresholds": {"advanced_parameters": {"warning": ADVANCED_WARNING}},
        }
    },
    "ecr": {"ecr_repositories": FAST, "ecr_images": FAST, "ecr_lifecycle_policies": {**FAST, "enabled": True}},
    "s3": {"s3_buckets": FAST, "s3_directory_buckets": FAST, "s3_access_points": FAST},
    "servicequotas": {"servicequotas": FAST, "servicequotas_global": FAST},
}


def exporter_configs() -> dict[str, tuple[str, dict]]:
    """binary -> (Prometheus job name, config) for every exporter of the workspace."""
    # Account A is named and tagged in every exporter's config, as Organizations would
    # name a discovered account: the alerts must say the name and carry the team.
    named = {"name": ACCOUNT_A_NAME, "tags": {"team": "payments"}}
    base = {"accounts": [named, {"role_arn": ROLE_B}], "account_tags": ["team"], "regions": REGIONS, "aws": fast_retries()}
    return {e.binary: (e.short, {**base, "collectors": COLLECTORS.get(e.short, {})}) for e in EXPORTERS}


class Stack:
    def __init__(self, prometheus: Prometheus, exporters: dict[str, Exporter], targets: dict[str, str]) -> None:
        self.prometheus = prometheus
        self.exporters = exporters
        self.targets = targets  # job -> instance

    def collectors(self) -> list[Labels]:
        """The labels of every collector's series: each account, in each region or in "global"."""
        return [
            labels(account_id=account, aws_region=region, collector=collector, job=job, instance=self.targets[job])
            for job, collectors in COLLECTORS.items()
            for collector in collectors
            for account in ACCOUNT_LABELS
            for region in (["global"] if collector in GLOBAL_COLLECTORS else REGIONS)
        ]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    aws = AwsServer()
    exporters: dict[str, Exporter] = {}
    prometheus = None
    try:
        for (account, region), (standard, advanced) in PARAMETERS.items():
            aws.seed_ssm(region, standard=standard, advanced=advanced, account=account)
        for (account, region), repositories in REPOSITORIES.items():
            aws.seed_ecr(region, repositories, account=account)
        for account in BUCKETS.keys() | DIRECTORY_BUCKETS.keys() | ACCESS_POINTS.keys():
            aws.seed_s3(BUCKETS.get(account), DIRECTORY_BUCKETS.get(account), ACCESS_POINTS.get(account), account=account)
        aws.post("seed_quotas", {"account": ACCOUNT_A, "region": "eu-west-1", "quotas": [EC2]})
        # Throttling, retried, in every refresh (one in 15 calls; a refresh there pages 862
        # parameters in 18): the error panels show real errors, in under 10% of the calls,
        # so AwsQuotaApiThrottled stays quiet.
        aws.fault(operation="DescribeParameters", account=ACCOUNT_A, region="eu-west-1", code="ThrottlingException", status=400, every=15)
        configs = exporter_configs()
        for binary, (_, cfg) in configs.items():
            exporters[binary] = Exporter(binary, aws, cfg)
        for e in exporters.values():
            e.wait_ready(timeout=120)
        targets = {configs[binary][0]: e.url.removeprefix("http://") for binary, e in exporters.items()}
        prometheus = Prometheus(targets)
        every = set(targets.items())
        wait_until(lambda: prometheus.targets("up == 1") == every, 120, "every target up")
        first_scrape = time.time()
        # Five scrapes of every target (not of any one), for rates; and a refresh of every
        # collector since the first scrape, so that the request and error rates count one.
        wait_until(
            lambda: prometheus.targets("count_over_time(aws_quota_exporter_build_info[1m]) >= 5") == every,
            120,
            "five scrapes of every exporter",
        )
        wait_until(
            lambda: prometheus.query(
                f"count(aws_quota_exporter_collector_last_success_timestamp_seconds > {first_scrape})"
                " == count(aws_quota_exporter_collector_last_success_timestamp_seconds)"
            ),
            120,
            "a refresh of every collector since the first scrape",
        )
        wait_until(lambda: prometheus.query(f"{RATIO_RULE}{selector(FULL)}"), 120, "the recording rule")
        yield Stack(prometheus, exporters, targets)
    finally:
        if prometheus:
            prometheus.stop()
        for e in exporters.values():
            e.stop()
        aws.stop()


def selector(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def values(result: list[dict]) -> dict[Labels, float]:
    """{labels without __name__: value} of a query's result."""
    return {labels(**{k: v for k, v in r["metric"].items() if k != "__name__"}): float(r["value"][1]) for r in result}


def test_the_recording_rule_gives_the_ratio(stack):
    p = stack.prometheus
    # One ratio per quota, its usage over its limit as the seed and the limits make them.
    # Scrape-target labels are dropped; the data labels stay, and the account's name and
    # team come from aws_quota_account_info.
    got = values(p.query(RATIO_RULE))
    want = {q.labels(named=True): q.ratio for q in QUOTAS}
    assert set(got) == set(want), f"missing {set(want) - set(got)}, unexpected {set(got) - set(want)}"
    wrong = [f"{dict(k)}: {got[k]}, not {v}" for k, v in want.items() if got[k] != pytest.approx(v)]
    assert not wrong, "\n".join(wrong)
    # The numbers themselves, for the quotas the alerts are about.
    assert got[labels(**FULL, quota_name="Standard parameters", **ACCOUNT_LABELS[ACCOUNT_A])] == pytest.approx(0.85)
    assert got[labels(**OVERRIDDEN, quota_name="Advanced parameters", **ACCOUNT_LABELS[ACCOUNT_A])] == pytest.approx(0.00012)
    assert got[labels(**EC2_QUOTA, quota_name=EC2["quota_name"], **ACCOUNT_LABELS[ACCOUNT_A])] == pytest.approx(0.5)
    assert got[labels(**CRITICAL, quota_name="Directory buckets", **ACCOUNT_LABELS[ACCOUNT_B])] == pytest.approx(0.97)
    # Exactly two quotas above 80%.
    above = p.query(f"{RATIO_RULE} >= 0.8")
    assert sorted(({k: r["metric"][k] for k in FULL} for r in above), key=str) == sorted([FULL, CRITICAL], key=str)


def alerts(p: Prometheus) -> list[dict]:
    return p.api("alerts")["alerts"]


CRITICAL = {"account_id": ACCOUNT_B, "aws_region": "us-east-1", "service_code": "s3", "quota_code": "L-775A314D"}
OVERRIDDEN = {"account_id": ACCOUNT_A, "aws_region": "eu-west-1", "service_code": "ssm", "quota_code": "advanced_parameters"}
EC2_QUOTA = {"account_id": ACCOUNT_A, "aws_region": "eu-west-1", "service_code": "ec2", "quota_code": EC2["quota_code"]}


def almost_full(p: Prometheus, labels: dict[str, str]) -> list[dict]:
    return [
        a for a in alerts(p)
        if a["labels"]["alertname"] == "AwsQuotaAlmostFull" and all(a["labels"].get(k) == v for k, v in labels.items())
    ]


def test_almost_full_is_pending_or_firing_for_that_quota_alone(stack):
    p = stack.prometheus
    wait_until(lambda: almost_full(p, FULL), 120, "AwsQuotaAlmostFull")
    wait_until(lambda: almost_full(p, OVERRIDDEN), 120, "AwsQuotaAlmostFull on the lowered threshold")
    wait_until(lambda: len(almost_full(p, CRITICAL)) == 2, 120, "AwsQuotaAlmostFull, warning and critical, on the fullest quota")
    # The quota over the default 80%, the one over its own, lowered threshold, and the
    # one over 95% (at both severities).
    assert len(almost_full(p, {})) == 4, almost_full(p, {})
    assert sorted(a["labels"]["severity"] for a in almost_full(p, CRITICAL)) == ["critical", "warning"]
    [c] = [a for a in almost_full(p, CRITICAL) if a["labels"]["severity"] == "critical"]
    assert float(c["value"]) == pytest.approx(0.97)
    # Account B has no name but its ID, which is said once.
    assert f"in account {ACCOUNT_B}, region us-east-1, is 97% used" in c["annotations"]["description"], c["annotations"]
    [a] = almost_full(p, FULL)
    assert a["state"] in ("pending", "firing")
    assert {k: a["labels"][k] for k in FULL} == FULL
    assert a["labels"]["severity"] == "warning"
    assert float(a["value"]) == pytest.approx(0.85)
    assert "85%" in a["annotations"]["description"]
    assert f"in account {ACCOUNT_A_NAME} ({ACCOUNT_A})," in a["annotations"]["description"], a["annotations"]
    assert a["labels"]["account_name"] == ACCOUNT_A_NAME and a["labels"]["tag_team"] == "payments"
    assert a["annotations"]["runbook_url"].endswith("docs/runbook.md#awsquotaalmostfull")
    assert "threshold" not in a["annotations"]["description"]
    [o] = almost_full(p, OVERRIDDEN)
    assert o["labels"]["severity"] == "warning"
    assert float(o["value"]) == pytest.approx(12 / 100_000)
    assert "above its own warning threshold of 0.01%" in o["annotations"]["description"], o["annotations"]
    # The exporter exports the override for that quota alone (every account and region
    # of the collector), and the rules' threshold is the default elsewhere.
    exported = p.query("aws_quota_alert_threshold_ratio")
    assert {(r["metric"]["quota_code"], r["metric"]["severity"], r["value"][1]) for r in exported} == {("advanced_parameters", "warning", "0.0001")}
    assert len(exported) == 4
    in_force = p.query('quota:aws_quota_alert_threshold:ratio{severity="warning",quota_code="standard_parameters"}')
    assert in_force and {r["value"][1] for r in in_force} == {"0.8"}
    # No other quota alert, and the exporters are healthy.
    others = {x["labels"]["alertname"] for x in alerts(p)} - {"AwsQuotaAlmostFull", "AwsQuotaWatchdog"}
    assert others == set(), others


def test_the_watchdog_fires(stack):
    p = stack.prometheus
    wait_until(
        lambda: [a for a in alerts(p) if a["labels"]["alertname"] == "AwsQuotaWatchdog" and a["state"] == "firing"],
        120,
        "the watchdog to fire",
    )


# --- dashboards ----------------------------------------------------------------------


def dashboard_queries(dashboard: dict) -> Iterator[tuple[str, str]]:
    """(where, expr) for every panel target, in rows and nested panels too."""

    def walk(panels: list[dict]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            for t in panel.get("targets", []):
                if t.get("expr"):
                    yield f"{dashboard['uid']} {panel.get('title')!r} {t.get('refId')}", t["expr"]
            yield from walk(panel.get("panels", []))

    yield from walk(dashboard.get("panels", []))


def variable_queries(dashboard: dict) -> Iterator[tuple[str, str]]:
    for v in dashboard.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            yield v["name"], q["query"] if isinstance(q, dict) else q


LABEL_VALUES = re.compile(r"^\s*label_values\((?:(.*),\s*)?([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$")


def substitute(expr: str, values: dict[str, list[str]]) -> str:
    """Grafana's substitution for a multi-value variable inside a regex matcher."""
    out = expr.replace("$__rate_interval", "1m").replace("${__rate_interval}", "1m")
    for name, vals in values.items():
        # Grafana regex-escapes each value; inside a PromQL string a backslash is doubled.
        alt = "(" + "|".join(re.escape(v).replace("\\", "\\\\") for v in vals) + ")" if vals else ".*"
        out = out.replace("${" + name + "}", alt).replace("$" + name, alt)
    return out


DASHBOARD_JSON = {path.name: json.loads(path.read_text()) for path in DASHBOARDS}
PANELS = {where: (name, expr) for name, d in DASHBOARD_JSON.items() for where, expr in dashboard_queries(d)}


@pytest.fixture(scope="module")
def variables(stack) -> dict[str, dict[str, list[str]]]:
    """dashboard file -> its variables' values: in order, each fed by label_values through
    the series API, as Grafana's Prometheus data source does, all of them selected."""
    p = stack.prometheus
    out = {}
    for name, dashboard in DASHBOARD_JSON.items():
        values: dict[str, list[str]] = {}
        for var, query in variable_queries(dashboard):
            m = LABEL_VALUES.match(query)
            assert m, f"{name}: variable {var}: not a label_values query: {query!r}"
            match, label = m.group(1), m.group(2)
            if match:
                series = p.api("series", **{"match[]": substitute(match, values)})
                values[var] = sorted({s[label] for s in series if label in s})
            else:
                values[var] = p.api(f"label/{label}/values")
        out[name] = values
    return out


def test_dashboard_variables_offer_the_seeded_accounts_regions_and_services(variables):
    assert DASHBOARDS, "no dashboards"
    quotas = {
        "account_id": sorted(ACCOUNT_LABELS),
        "aws_region": sorted({q.aws_region for q in QUOTAS}),
        "service_code": sorted({q.service_code for q in QUOTAS}),
    }
    exporter = {
        "account_id": sorted(ACCOUNT_LABELS),
        "aws_region": sorted([*REGIONS, "global"]),
        "service_code": sorted({service for service, _ in REFRESH_CALLS | STARTUP_CALLS}),
    }
    want = {"headroom-overview.json": quotas, "headroom-services.json": quotas, "headroom-exporter.json": exporter}
    assert variables == want


@dataclass(frozen=True)
class Between:
    """A value the seed does not fix (a rate, a duration, an age): its bounds, inclusive."""

    low: float
    high: float

    def __call__(self, value: float) -> bool:
        return self.low <= value <= self.high


POSITIVE = Between(math.nextafter(0, 1), math.inf)
# A rate of calls made at start and then hourly: 0 unless a slow start put one in the window.
ANY_RATE = Between(0, math.inf)


def panel_expectations(stack: Stack) -> dict[str, Any]:
    """What each dashboard query shows for the seed, all variables selected: {labels:
    value or bounds}, a list of them where the order is the panel's, or a check."""
    def quota_series(code: str, value) -> dict[Labels, float]:
        return {q.labels(): value(q) for q in QUOTAS if q.quota_code == code}

    def ratios(quotas) -> dict[Labels, float]:
        return {q.labels(named=True): q.ratio for q in quotas}

    fullest = sorted(QUOTAS, key=lambda q: q.ratio, reverse=True)
    warning = [q for q in QUOTAS if q.ratio >= q.warning]
    critical = [q for q in QUOTAS if q.ratio >= 0.95]
    per_service: dict[str, Quota] = {}
    for q in fullest:
        per_service.setdefault(q.service_code, q)
    images = [q for q in fullest if q.quota_code == "L-03A36CE1"]
    repositories = {
        labels(account_id=account, aws_region=region, resource=name): 1 if r.get("lifecycle") else 0
        for (account, region), rs in REPOSITORIES.items() for name, r in rs.items()
    }
    collectors = stack.collectors()
    calls = REFRESH_CALLS | STARTUP_CALLS
    failing_calls = {(service, operation) for service, operation, _ in ERRORS}
    throttled = {(service, operation) for service, operation, code in ERRORS if code.startswith("Throttl")}

    def rates(keys) -> dict[Labels, Between]:
        return {labels(service_code=s, operation=o): POSITIVE if (s, o) in REFRESH_CALLS else ANY_RATE for s, o in keys}

    def time_to_exhaustion(got: dict[Labels, float]) -> None:
        # No quota grows: each is infinitely far from full, and bottomk keeps any 10.
        assert len(got) == 10 and set(got) <= set(ratios(QUOTAS)) and set(got.values()) == {math.inf}, got

    def build_info(got: dict[Labels, float]) -> None:
        # One row per target; the revision is the build's, whatever it is.
        assert {tuple(kv for kv in k if kv[0] != "revision"): v for k, v in got.items()} == {
            labels(job=job, instance=instance, version=VERSION): 1 for job, instance in stack.targets.items()
        }
        assert all(dict(k).get("revision") for k in got), got

    overview, services, exporter = "headroom-overview", "headroom-services", "headroom-exporter"
    table = f"{overview} 'Quotas by utilisation'"
    return {
        f"{overview} 'Quotas tracked' A": {(): len(QUOTAS)},
        f"{overview} 'Quotas at or above their warning threshold' A": {(): len(warning)},
        f"{overview} 'Quotas at or above their critical threshold' A": {(): len(critical)},
        f"{overview} 'Highest utilisation' A": {(): fullest[0].ratio},
        f"{table} A": {q.labels(): q.usage for q in QUOTAS},
        f"{table} B": {q.labels(): q.limit for q in QUOTAS},
        f"{table} C": {q.labels(): q.ratio for q in QUOTAS},
        f"{table} D": {q.labels(): min(q.warning, 2) for q in QUOTAS},
        f"{table} E": {q.labels(): 0.95 for q in QUOTAS},
        f"{table} F": {q.labels(): 2 if q in critical else 1 if q in warning else 0 for q in QUOTAS},
        f"{overview} 'The fullest quota of every service' A": [
            (q.labels(account_name=ACCOUNT_LABELS[q.account_id]["account_name"]), q.ratio) for q in per_service.values()
        ],
        f"{overview} 'Utilisation over time: the 10 fullest quotas' A": ratios(fullest[:10]),
        f"{overview} 'Time to exhaustion' A": time_to_exhaustion,
        f"{services} 'Standard parameters' A": quota_series("standard_parameters", lambda q: q.usage),
        f"{services} 'Standard parameters' B": quota_series("standard_parameters", lambda q: q.limit),
        f"{services} 'Advanced parameters' A": quota_series("advanced_parameters", lambda q: q.usage),
        f"{services} 'Advanced parameters' B": quota_series("advanced_parameters", lambda q: q.limit),
        f"{services} 'Parameter utilisation' A": ratios(q for q in QUOTAS if q.service_code == "ssm"),
        f"{services} 'Repositories closest to their image limit' A": ratios(images[:10]),
        f"{services} 'Image utilisation of the fullest repositories' A": ratios(images[:10]),
        f"{services} 'Registered repositories' A": quota_series("L-CFEB8E8D", lambda q: q.usage),
        f"{services} 'Registered repositories' B": quota_series("L-CFEB8E8D", lambda q: q.limit),
        f"{services} 'Repositories without a lifecycle policy' A": {(): list(repositories.values()).count(0)},
        f"{services} 'Lifecycle policy by repository' A": repositories,
        f"{services} 'General purpose buckets per account' A": quota_series("L-DC2B2D3D", lambda q: q.usage),
        f"{services} 'General purpose buckets per account' B": quota_series("L-DC2B2D3D", lambda q: q.limit),
        f"{services} 'Directory buckets per region' A": quota_series("L-775A314D", lambda q: q.usage),
        f"{services} 'Directory buckets per region' B": quota_series("L-775A314D", lambda q: q.limit),
        f"{services} 'Access points per region' A": quota_series("L-FAABEEBA", lambda q: q.usage),
        f"{services} 'Access points per region' B": quota_series("L-FAABEEBA", lambda q: q.limit),
        f"{exporter} 'Failing collectors' A": {(): 0},
        # Ages and durations depend on timing: bounded by max_staleness (older samples
        # are dropped) and by the refresh timeout.
        f"{exporter} 'Oldest data' A": {(): Between(0, 60)},
        f"{exporter} 'Collector success' A": {c: 1 for c in collectors},
        f"{exporter} 'Refresh duration' A": {c: Between(0, 5) for c in collectors},
        f"{exporter} 'Data age' A": {c: Between(0, 60) for c in collectors},
        # Rates depend on timing too: above 0 where every refresh calls or fails, since
        # every collector refreshed under Prometheus's eye; exactly 0 where no error is.
        f"{exporter} 'AWS API requests' A": {(): POSITIVE},
        f"{exporter} 'Throttled AWS API requests' A": {(): POSITIVE},
        f"{exporter} 'Requests by operation' A": rates(calls),
        f"{exporter} 'Errors by operation and error code' A": {
            **{labels(service_code=s, operation=o, error_code=e): POSITIVE for s, o, e in ERRORS},
            **{labels(service_code=s, operation=o): 0 for s, o in calls - failing_calls},
        },
        f"{exporter} 'Throttling by operation' A": {labels(service_code=s, operation=o): POSITIVE if (s, o) in throttled else 0 for s, o in calls},
        f"{exporter} 'Build info' A": build_info,
    }


def test_every_dashboard_query_has_an_expectation(stack):
    # Titles and refIds name the queries: each name once.
    assert len(PANELS) == sum(1 for d in DASHBOARD_JSON.values() for _ in dashboard_queries(d))
    assert set(panel_expectations(stack)) == set(PANELS)


@pytest.mark.parametrize("where", PANELS)
def test_dashboard_panel_shows_the_seeded_data(stack, variables, where):
    name, expr = PANELS[where]
    want = panel_expectations(stack).get(where)
    assert want is not None, f"{where}: no expectation for this query"
    q = substitute(expr, variables[name])
    assert not re.search(r"\$\{?[a-zA-Z_]", q), f"{where}: unknown variable in {q!r}"
    result = stack.prometheus.query(q)
    got = values(result)
    assert len(got) == len(result), f"{where}: series differ in __name__ alone: {result}"
    if callable(want):
        return want(got)
    if isinstance(want, list):
        assert list(got) == [k for k, _ in want], f"{where}: not in the panel's order"
        want = dict(want)
    assert set(got) == set(want), f"{where}: {q}\n missing {sorted(set(want) - set(got))}\n unexpected {sorted(set(got) - set(want))}"
    for k, v in want.items():
        assert v(got[k]) if isinstance(v, Between) else got[k] == pytest.approx(v), f"{where}: {dict(k)} is {got[k]}, not {v}"


# --- metric names --------------------------------------------------------------------

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not
    functions, keywords, label names (in braces, in grouping lists) or durations."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # strings
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges and subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\$\{?[a-zA-Z_][a-zA-Z0-9_]*\}?", " ", s)  # Grafana variables
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", s):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def test_metric_names_are_found_in_promql():
    expr = 'sum without (instance) (rate(foo_total{a="b c", d=~"$x"}[$__rate_interval])) / on (a) group_left (q) bar:baz:ratio > 0.8 and ignoring (z) qux offset 5m'
    assert metric_names(expr) == {"foo_total", "bar:baz:ratio", "qux"}


def recorded_names() -> set[str]:
    names = set()
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            names |= {r["record"] for r in group["rules"] if "record" in r}
    return names


def rule_exprs() -> Iterator[tuple[str, str]]:
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for r in group["rules"]:
                yield f"{path.name} {r.get('record') or r.get('alert')}", r["expr"]


def test_dashboards_and_rules_use_only_metrics_the_exporters_expose(stack):
    exposed = {name for e in stack.exporters.values() for name, _, _ in wait_until(e.samples, 60, f"{e.url}/metrics")}
    # Exposed only with an organization: section (tests/test_organizations.py scrapes it).
    allowed = exposed | recorded_names() | {"aws_quota_exporter_discovery_success"}
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        used = set()
        variables = [(name, m.group(1) or "") for name, q in variable_queries(dashboard) if (m := LABEL_VALUES.match(q))]
        for where, expr in [*dashboard_queries(dashboard), *variables]:
            names = metric_names(expr)
            assert names <= allowed, f"{path.name} {where}: {sorted(names - allowed)} not exposed by any exporter"
            used |= names
        assert used, f"{path.name}: uses no metric"
    # The rules may also use Prometheus's own `up` for a target that is down.
    for where, expr in rule_exprs():
        names = metric_names(expr)
        assert names <= allowed | {"up"}, f"{where}: {sorted(names - allowed - {'up'})} not exposed by any exporter"
