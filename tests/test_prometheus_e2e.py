"""The alert rules and dashboards against a real Prometheus that scrapes every exporter
of the workspace (tests/exporters.py), which count sample data on the local AWS test
server.

The data puts exactly one quota above the warning threshold: standard parameters in
eu-west-1 at 850 of a limit lowered to 1,000 by a config override (85%). Everything
else sits far below its limit.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
import yaml

from conftest import ACCOUNT_A, ACCOUNT_B, ROLE_B, RULE_FILES, AwsServer, Exporter, fast_retries, free_port, terminate, wait_until
from exporters import EXPORTERS

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
REGIONS = ["eu-west-1", "us-east-1"]
RATIO_RULE = "quota:aws_quota_usage:ratio"
# The one quota above the warning threshold.
FULL = {"account_id": ACCOUNT_A, "aws_region": "eu-west-1", "service_code": "ssm", "quota_code": "standard_parameters"}


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
        wait_until(self.ready, 60, "Prometheus to be ready")

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.proc.returncode}: {self.log_path.read_text()}")
        return requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200

    def api(self, path: str, **params: Any) -> Any:
        r = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = r.json()
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        data = self.api("query", query=expr)
        assert data["resultType"] in ("vector", "scalar"), f"{expr}: {data['resultType']}"
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def stop(self) -> None:
        terminate(self.proc, 20)
        self.log.close()
        self.tmp.cleanup()


FAST = {"refresh_interval": "5s", "timeout": "5s", "max_staleness": "1m", "rate_limit": 1000}
# Collector settings by exporter; an exporter not listed here still runs, with its
# collectors at their defaults (their first refresh is all these tests need).
COLLECTORS = {
    "ssm": {
        "ssm_parameters": {
            **FAST,
            "limit_overrides": {"standard_parameters": 1000},
            # One threshold override: 12 advanced parameters of 100,000 in account A,
            # eu-west-1, are far below 80% but above this warning threshold.
            "alert_thresholds": {"advanced_parameters": {"warning": 0.0001}},
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
    def __init__(self, prometheus: Prometheus, exporters: dict[str, Exporter]) -> None:
        self.prometheus = prometheus
        self.exporters = exporters


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    aws = AwsServer()
    exporters: dict[str, Exporter] = {}
    prometheus = None
    try:
        aws.seed_ssm("eu-west-1", standard=850, advanced=12)
        aws.seed_ssm("us-east-1", standard=40, advanced=0)
        aws.seed_ssm("eu-west-1", standard=120, advanced=3, account=ACCOUNT_B)
        aws.seed_ecr("eu-west-1", {"team/app": {"images": 30, "tags_per_image": 2, "untagged": 4}, "team/web": {"images": 5, "lifecycle": True}})
        aws.seed_ecr("us-east-1", {"team/api": {"images": 7}})
        aws.seed_s3(buckets={"eu-west-1": 12, "us-east-1": 3}, directory_buckets={"eu-west-1": 2}, access_points={"eu-west-1": 4})
        aws.seed_s3(buckets={"eu-west-1": 2}, account=ACCOUNT_B)
        # Metered quotas, half used: in every query, never above a threshold.
        aws.post("seed_quotas", {"account": ACCOUNT_A, "region": "eu-west-1", "quotas": [{
            "service_code": "ec2", "service_name": "Amazon EC2", "quota_code": "L-1216C47A",
            "quota_name": "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
            "default": 5, "applied": 640, "adjustable": True, "usage": 320,
        }]})
        # Some throttling, retried: the error panels show real errors.
        aws.fault(operation="DescribeParameters", code="ThrottlingException", status=400, every=3, times=4)
        configs = exporter_configs()
        for binary, (_, cfg) in configs.items():
            exporters[binary] = Exporter(binary, aws, cfg)
        for e in exporters.values():
            e.wait_ready(timeout=120)
        prometheus = Prometheus({configs[binary][0]: e.url.removeprefix("http://") for binary, e in exporters.items()})
        # Every target scraped, the ratio recorded, and enough samples for rates.
        wait_until(lambda: len(prometheus.query("up == 1")) == len(exporters), 60, "every target up")
        wait_until(lambda: prometheus.query(f"{RATIO_RULE}{selector(FULL)}"), 60, "the recording rule")
        wait_until(
            lambda: prometheus.query("count_over_time(aws_quota_exporter_build_info[1m]) >= 5"),
            60,
            "five scrapes of each exporter",
        )
        yield Stack(prometheus, exporters)
    finally:
        if prometheus:
            prometheus.stop()
        for e in exporters.values():
            e.stop()
        aws.stop()


def selector(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def test_the_recording_rule_gives_the_ratio(stack):
    p = stack.prometheus
    got = p.query(f"{RATIO_RULE}{selector(FULL)}")
    assert len(got) == 1
    assert float(got[0]["value"][1]) == pytest.approx(0.85)
    # Scrape-target labels are dropped; the data labels stay (an empty `resource` is
    # no label at all in Prometheus).
    # The account's name and team come from aws_quota_account_info.
    labels = set(got[0]["metric"])
    assert {"__name__", "account_id", "aws_region", "service_code", "quota_code", "quota_name", "account_name", "tag_team"} <= labels
    assert labels <= {"__name__", "account_id", "aws_region", "service_code", "quota_code", "quota_name", "resource", "account_name", "tag_team"}
    assert got[0]["metric"]["account_name"] == ACCOUNT_A_NAME and got[0]["metric"]["tag_team"] == "payments"
    [b] = p.query(f'{RATIO_RULE}{{account_id="{ACCOUNT_B}",service_code="ssm",quota_code="standard_parameters",aws_region="eu-west-1"}}')
    assert b["metric"]["account_name"] == ACCOUNT_B and "tag_team" not in b["metric"]
    # One ratio per quota series the exporters expose, each usage / limit.
    usage = p.query("aws_quota_usage")
    joined = ("__name__", "account_name", "tag_team")
    ratios = {tuple(sorted((k, v) for k, v in r["metric"].items() if k not in joined)): float(r["value"][1]) for r in p.query(RATIO_RULE)}
    assert len(ratios) == len(usage)
    for r in p.query("aws_quota_usage / ignoring (instance, job) aws_quota_limit"):
        key = tuple(sorted((k, v) for k, v in r["metric"].items() if k not in ("instance", "job")))
        assert ratios[key] == pytest.approx(float(r["value"][1]))
    # A metered quota from servicequotas_exporter, through the same rule.
    [ec2] = p.query(f'{RATIO_RULE}{{service_code="ec2",quota_code="L-1216C47A"}}')
    assert float(ec2["value"][1]) == pytest.approx(0.5) and ec2["metric"]["aws_region"] == "eu-west-1"
    # Exactly one quota above 80%.
    above = p.query(f"{RATIO_RULE} >= 0.8")
    assert [{k: r["metric"][k] for k in FULL} for r in above] == [FULL]


def alerts(p: Prometheus) -> list[dict]:
    return p.api("alerts")["alerts"]


ACCOUNT_A_NAME = "prod-payments"
OVERRIDDEN = {"account_id": ACCOUNT_A, "aws_region": "eu-west-1", "service_code": "ssm", "quota_code": "advanced_parameters"}


def almost_full(p: Prometheus, labels: dict[str, str]) -> list[dict]:
    return [
        a for a in alerts(p)
        if a["labels"]["alertname"] == "AwsQuotaAlmostFull" and all(a["labels"].get(k) == v for k, v in labels.items())
    ]


def test_almost_full_is_pending_or_firing_for_that_quota_alone(stack):
    p = stack.prometheus
    wait_until(lambda: almost_full(p, FULL), 30, "AwsQuotaAlmostFull")
    wait_until(lambda: almost_full(p, OVERRIDDEN), 30, "AwsQuotaAlmostFull on the lowered threshold")
    # The quota over the default 80%, and the one over its own, lowered threshold.
    assert len(almost_full(p, {})) == 2, almost_full(p, {})
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
        30,
        "the watchdog to fire",
    )


# --- dashboards ----------------------------------------------------------------------


def dashboard_queries(dashboard: dict) -> Iterator[tuple[str, str]]:
    """(where, expr) for every panel target, in rows and nested panels too."""

    def walk(panels: list[dict]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            for t in panel.get("targets", []):
                if t.get("expr"):
                    yield f"{dashboard['uid']} panel {panel.get('id')} {panel.get('title')!r} {t.get('refId')}", t["expr"]
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


def test_every_dashboard_query_parses_and_returns_data(stack):
    p = stack.prometheus
    assert DASHBOARDS, "no dashboards"
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        values: dict[str, list[str]] = {}
        # Variables in order, each fed by label_values through the series API, as
        # Grafana's Prometheus data source does; each must offer values.
        for name, query in variable_queries(dashboard):
            m = LABEL_VALUES.match(query)
            assert m, f"{path.name}: variable {name}: not a label_values query: {query!r}"
            match, label = m.group(1), m.group(2)
            if match:
                series = p.api("series", **{"match[]": substitute(match, values)})
                found = sorted({s[label] for s in series if label in s})
            else:
                found = p.api(f"label/{label}/values")
            assert found, f"{path.name}: variable {name} has no values"
            values[name] = found
        queries = list(dashboard_queries(dashboard))
        assert queries, f"{path.name}: no queries"
        leftover = re.compile(r"\$\{?[a-zA-Z_]")
        for where, expr in queries:
            q = substitute(expr, values)
            assert not leftover.search(q), f"{where}: unknown variable in {q!r}"
            result = p.query(q)
            assert result, f"{where}: no data for {q!r}"


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
    exposed = {name for e in stack.exporters.values() for name, _, _ in e.samples()}
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
