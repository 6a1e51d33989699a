"""The rule files in alerts/: promtool checks and unit tests, and the conventions every
alert follows (annotations, severity, a runbook section of its own, tests that show
it firing and not firing)."""

from __future__ import annotations

import re
import shutil

import pytest
import yaml

from conftest import ROOT, RULE_FILES, promtool

ALERTS = ROOT / "alerts"
TEST_FILES = sorted(ALERTS.glob("*.test.yml"))
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/headroom-exporters/headroom/blob/main/docs/runbook.md#"
SEVERITIES = {"critical", "warning", "info", "none"}


def rules() -> list[dict]:
    return [r for p in RULE_FILES for g in yaml.safe_load(p.read_text())["groups"] for r in g["rules"]]


def alert_rules() -> list[dict]:
    return [r for r in rules() if "alert" in r]


def test_there_are_rule_files_and_tests():
    assert RULE_FILES and TEST_FILES
    names = {r["alert"] for r in alert_rules()}
    for expected in ("AwsQuotaAlmostFull", "AwsQuotaFillingUp", "AwsQuotaExporterDown", "AwsQuotaWatchdog"):
        assert expected in names


def test_promtool_check_rules_is_clean():
    r = promtool("check", "rules", *[p.name for p in RULE_FILES], cwd=ALERTS)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_unit_tests_pass():
    r = promtool("test", "rules", *[p.name for p in TEST_FILES], cwd=ALERTS)
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_unit_tests_catch_a_broken_rule(tmp_path):
    """The unit tests are not vacuous: with the default warning threshold moved, they fail."""
    for p in [*RULE_FILES, *TEST_FILES]:
        shutil.copy(p, tmp_path / p.name)
    main = tmp_path / "headroom.rules.yml"
    text = main.read_text()
    assert text.count("aws_quota_usage * 0 + 0.80") == 1
    # Only the test group of the thresholds, to keep it quick.
    tests = yaml.safe_load((ALERTS / "headroom.rules.test.yml").read_text())
    tests["tests"] = [t for t in tests["tests"] if t["name"] == "ratio and almost full"]
    assert tests["tests"]
    (tmp_path / "one.test.yml").write_text(yaml.safe_dump(tests))
    main.write_text(text)
    r = promtool("test", "rules", "one.test.yml", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    main.write_text(text.replace("aws_quota_usage * 0 + 0.80", "aws_quota_usage * 0 + 0.90"))
    r = promtool("test", "rules", "one.test.yml", cwd=tmp_path)
    assert r.returncode != 0, r.stdout
    assert "AwsQuotaAlmostFull" in r.stdout + r.stderr


# Breakages of the per-quota thresholds (quota:aws_quota_alert_threshold:ratio and the
# alerts on it) that the "thresholds: ..." unit tests must catch: (what, the rule text,
# its replacement, the test groups that show it, the alert that goes wrong).
THRESHOLD_MUTATIONS = [
    (
        "the ratio averages the replicas",
        "or on (account_id)\nmax without (instance, job, pod, namespace, service, endpoint, container) (aws_quota_usage)",
        "or on (account_id)\navg without (instance, job, pod, namespace, service, endpoint, container) (aws_quota_usage)",
        ["replicas that disagree, exactly at the thresholds"],
        "AwsQuotaAlmostFull",
    ),
    (
        "a quota exactly at its threshold does not alert",
        '>= ignoring (severity, account_name, tag_team, tag_env) group_left ()\n(quota:aws_quota_alert_threshold:ratio{severity="critical"} <= 1)',
        '> ignoring (severity, account_name, tag_team, tag_env) group_left ()\n(quota:aws_quota_alert_threshold:ratio{severity="critical"} <= 1)',
        ["replicas that disagree, exactly at the thresholds"],
        "AwsQuotaAlmostFull",
    ),
    (
        "no fallback to the default",
        'aws_quota_alert_threshold_ratio{severity="warning"}\n  or ignoring (severity)\n  aws_quota_usage * 0 + 0.80\n',
        'aws_quota_alert_threshold_ratio{severity="warning"}\n',
        ["thresholds: replicas", "thresholds: stale"],
        "AwsQuotaAlmostFull",
    ),
    (
        "the default even where a threshold exists",
        'aws_quota_alert_threshold_ratio{severity="warning"}\n  or ignoring (severity)\n',
        'aws_quota_alert_threshold_ratio{severity="warning"}\n  or\n',
        ["thresholds: per quota"],
        "AwsQuotaAlmostFull",
    ),
    (
        "the highest threshold of the replicas wins",
        'min without (instance, job, pod, namespace, service, endpoint, container, severity) (\n  aws_quota_alert_threshold_ratio{severity="warning"}',
        'max without (instance, job, pod, namespace, service, endpoint, container, severity) (\n  aws_quota_alert_threshold_ratio{severity="warning"}',
        ["thresholds: replicas"],
        "AwsQuotaAlmostFull",
    ),
    (
        "a threshold that stopped is held for an hour",
        'aws_quota_alert_threshold_ratio{severity="warning"}\n  or ignoring (severity)',
        'last_over_time(aws_quota_alert_threshold_ratio{severity="warning"}[1h])\n  or ignoring (severity)',
        ["thresholds: stale"],
        "AwsQuotaAlmostFull",
    ),
    (
        '"never" compared as a level',
        '(quota:aws_quota_alert_threshold:ratio{severity="critical"} <= 1)',
        'quota:aws_quota_alert_threshold:ratio{severity="critical"}',
        ["thresholds: per quota"],
        "AwsQuotaAlmostFull",
    ),
    (
        '"never" does not silence the forecast',
        'quota:aws_quota_usage:ratio offset 1d\nunless ignoring (severity, account_name, tag_team, tag_env)\nquota:aws_quota_alert_threshold:ratio{severity="warning"} > 1\n',
        "quota:aws_quota_usage:ratio offset 1d\n",
        ["thresholds: never silences the forecast"],
        "AwsQuotaFillingUp",
    ),
    (
        "an account without aws_quota_account_info loses its ratios",
        "or on (account_id)\n",
        "and on (account_id)\n",
        ["account names"],
        "AwsQuotaAlmostFull",
    ),
    (
        "exporters that disagree on an account's labels break the join",
        "topk by (account_id) (1,\n",
        "(\n",
        ["account names"],
        "quota:aws_quota_usage:ratio",
    ),
    (
        "the name and team are not carried to the alerts",
        "group_left (account_name, tag_team, tag_env)",
        "group_left ()",
        ["account names"],
        "AwsQuotaAlmostFull",
    ),
]


def replace_in_one_rule(path, old: str, new: str) -> None:
    """Replaces `old` by `new` in the one rule expression of the rule file at `path` that
    holds it (once)."""
    doc = yaml.safe_load(path.read_text())
    hits = [r for g in doc["groups"] for r in g["rules"] if old in r["expr"]]
    assert len(hits) == 1 and hits[0]["expr"].count(old) == 1, f"{old!r} is not in exactly one rule"
    hits[0]["expr"] = hits[0]["expr"].replace(old, new)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.mark.parametrize(("what", "old", "new", "groups", "alert"), THRESHOLD_MUTATIONS, ids=[m[0] for m in THRESHOLD_MUTATIONS])
def test_promtool_unit_tests_catch_a_broken_threshold(tmp_path, what, old, new, groups, alert):
    """The per-quota threshold tests are not vacuous: with the `or` fallback to the
    default removed or applied everywhere, the replicas' highest threshold winning, a
    vanished threshold held, "never" compared as a level, or "never" not silencing the
    forecast, they fail; the mutated rules themselves are valid."""
    main = tmp_path / "headroom.rules.yml"
    shutil.copy(ALERTS / "headroom.rules.yml", main)
    tests = yaml.safe_load((ALERTS / "headroom.rules.test.yml").read_text())
    tests["tests"] = [t for t in tests["tests"] if t["name"] in groups]
    assert len(tests["tests"]) == len(groups), groups
    (tmp_path / "one.test.yml").write_text(yaml.safe_dump(tests))
    r = promtool("test", "rules", "one.test.yml", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    replace_in_one_rule(main, old, new)
    r = promtool("check", "rules", main.name, cwd=tmp_path)
    assert r.returncode == 0, f"{what}: the mutant is not a valid rule file: {r.stdout + r.stderr}"
    r = promtool("test", "rules", "one.test.yml", cwd=tmp_path)
    assert r.returncode != 0, f"{what}: the unit tests still pass: {r.stdout}"
    # The alert that went wrong, or the rule that failed to evaluate.
    out = r.stdout + r.stderr
    assert f"alertname: {alert}" in out or f"rule: {alert}," in out, out


def test_every_alert_has_severity_annotations_and_its_runbook_section():
    headings = {m.group(1).lower() for m in re.finditer(r"^## (\S+)\s*$", RUNBOOK.read_text(), re.M)}
    for rule in alert_rules():
        name = rule["alert"]
        assert re.fullmatch(r"AwsQuota[A-Z][A-Za-z]+", name), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        ann = rule["annotations"]
        assert ann["summary"].strip() and ann["description"].strip(), name
        assert ann["runbook_url"] == RUNBOOK_URL + name.lower(), name
        assert name.lower() in headings, f"docs/runbook.md has no section ## {name}"
        if name != "AwsQuotaWatchdog":
            assert "for" in rule, f"{name} has no for: and would flap"


def test_every_alert_is_tested_firing_and_not_firing():
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in TEST_FILES:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for t in group.get("alert_rule_test", []):
                (fired if t.get("exp_alerts") else quiet).add(t["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names - fired == set(), f"never tested firing: {sorted(names - fired)}"
    # The watchdog always fires; every other alert must be shown quiet somewhere.
    assert names - quiet - {"AwsQuotaWatchdog"} == set(), f"never tested quiet: {sorted(names - quiet)}"


def test_quota_alerts_describe_where_and_how_full():
    for rule in alert_rules():
        if "quota:aws_quota_usage:ratio" not in rule["expr"]:
            continue
        d = rule["annotations"]["description"]
        for label in ("account_id", "aws_region", "service_code", "quota_code", "quota_name", "resource"):
            assert f"$labels.{label}" in d, f"{rule['alert']}: description lacks {label}"
        assert "humanizePercentage" in d, rule["alert"]


def test_throttling_alert_and_panels_match_every_code_the_exporter_counts_as_throttling():
    """The exporter maps AWS error codes to labels in common/src/api/error.rs; every code of
    its throttling group must be caught by the alert's and the dashboards' matchers."""
    source = (ROOT / "common" / "src" / "api" / "error.rs").read_text()
    block = source.split("// Throttling", 1)[1].split("//", 1)[0]
    codes = re.findall(r'"(\w+)"', block)
    assert "ThrottlingException" in codes and "SlowDown" in codes, codes
    texts = [p.read_text() for p in RULE_FILES] + [p.read_text() for p in sorted((ROOT / "dashboards").glob("*.json"))]
    matchers = {m for t in texts for m in re.findall(r'error_code=~\\?"([^"\\]+)\\?"', t)}
    assert len(matchers) == 1, f"the throttling matchers differ: {matchers}"
    [matcher] = matchers
    missed = [c for c in codes if not re.fullmatch(matcher, c)]
    assert missed == [], f"{matcher!r} misses throttling codes {missed}"
    assert not re.fullmatch(matcher, "AccessDeniedException")
