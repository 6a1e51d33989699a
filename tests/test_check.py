"""`--check`: one collection of every target, a table or JSON sorted by utilisation,
and exit codes a pipeline can stop on (0 ok, 1 warning, 2 critical, 3 a failed
collection or a check that cannot start), against the local AWS test server."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import yaml

from conftest import ACCOUNT_A, ACCOUNT_B, BIN_DIR, ROLE_B, aws_env, fast_retries

BIN = "ssm_quota_exporter"
STD, ADV = "standard_parameters", "advanced_parameters"
ROW_KEYS = {
    "account_id", "account_name", "region", "service_code", "quota_code", "quota_name", "resource",
    "usage", "limit", "ratio", "limit_source", "adjustable", "warning", "critical", "status",
}
FAILURE_KEYS = {"collector", "account_id", "region", "error_code", "error"}


def check(aws, tmp_path: Path, config: dict | str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    path = tmp_path / "config.yml"
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    return subprocess.run(
        [str(BIN_DIR / BIN), "--check", f"--config.file={path}", *args],
        env=aws_env(aws), capture_output=True, text=True, timeout=timeout,
    )


def config(limit: int = 1000, thresholds: dict | None = None, **extra) -> dict:
    settings: dict = {"limit_overrides": {STD: limit}}
    if thresholds:
        settings["alert_thresholds"] = thresholds
    return {"regions": ["eu-west-1"], "collectors": {"ssm_parameters": settings}, "aws": fast_retries(), **extra}


def as_json(r: subprocess.CompletedProcess) -> dict:
    return json.loads(r.stdout)


def test_exit_codes_follow_the_worst_quota_and_its_thresholds(aws, tmp_path):
    aws.seed_ssm("eu-west-1", 500, 3)
    ok = check(aws, tmp_path, config())
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.splitlines()[-1] == "OK: 2 quotas, 0 failed collections"

    aws.seed_ssm("eu-west-1", 350, 0, prefix="/more")  # 850 of 1,000: above the default 80 %
    warning = check(aws, tmp_path, config())
    assert warning.returncode == 1, warning.stdout + warning.stderr
    # A raised warning threshold keeps it quiet; a lowered critical one makes it critical.
    assert check(aws, tmp_path, config(thresholds={STD: {"warning": 0.9}})).returncode == 0
    assert check(aws, tmp_path, config(thresholds={STD: {"warning": 0.5, "critical": 0.8}})).returncode == 2
    # Never alert, even at 99 %.
    assert check(aws, tmp_path, config(limit=860, thresholds={STD: {"never": True}})).returncode == 0
    critical = check(aws, tmp_path, config(limit=860))
    assert critical.returncode == 2
    report = as_json(check(aws, tmp_path, config(limit=860), "--output", "json"))
    assert report["status"] == "critical" and report["exit_code"] == 2
    # An account-level threshold wins over the collector's.
    per_account = config(limit=860, thresholds={STD: {"never": True}})
    per_account["accounts"] = [{"alert_thresholds": {STD: {"warning": 0.5, "critical": 0.99}}}]
    assert check(aws, tmp_path, per_account).returncode == 1


def test_the_table_is_sorted_by_utilisation_with_every_column(aws, tmp_path):
    aws.seed_ssm("eu-west-1", 850, 10)
    r = check(aws, tmp_path, config())
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ACCOUNT", "REGION", "SERVICE", "QUOTA", "NAME", "RESOURCE", "USAGE", "LIMIT", "USED", "SOURCE", "STATUS"]
    first, second = lines[1], lines[2]
    assert first.startswith(ACCOUNT_A) and STD in first and "850" in first and "1000" in first
    assert "85.0%" in first and "override" in first and first.endswith("warning")
    assert ADV in second and "0.0%" in second and second.endswith("ok")
    assert lines[-1] == "WARNING: 2 quotas, 0 failed collections"


def test_json_is_stable_and_exact(aws, tmp_path):
    aws.seed_ssm("eu-west-1", 850, 10)
    report = as_json(check(aws, tmp_path, config(thresholds={STD: {"warning": 0.7}}), "--output", "json"))
    assert set(report) == {"schema", "status", "exit_code", "quotas", "failures"}
    assert report["schema"] == 1 and report["failures"] == []
    assert [set(q) for q in report["quotas"]] == [ROW_KEYS, ROW_KEYS]
    std = report["quotas"][0]
    assert std == {
        "account_id": ACCOUNT_A, "account_name": ACCOUNT_A, "region": "eu-west-1", "service_code": "ssm",
        "quota_code": STD, "quota_name": std["quota_name"], "resource": "", "usage": 850.0, "limit": 1000.0,
        "ratio": 0.85, "limit_source": "override", "adjustable": False, "warning": 0.7, "critical": 0.95,
        "status": "warning",
    }
    assert report["quotas"][1]["quota_code"] == ADV and report["quotas"][1]["limit_source"] == "builtin"
    never = as_json(check(aws, tmp_path, config(thresholds={STD: {"never": True}}), "--output", "json"))
    assert never["quotas"][0]["warning"] is None and never["quotas"][0]["critical"] is None


def test_a_denied_target_is_a_failure_not_zero_usage(aws, tmp_path):
    aws.seed_ssm("eu-west-1", 100, 0)
    aws.seed_ssm("eu-west-1", 900, 0, account=ACCOUNT_B)
    aws.fault(operation="DescribeParameters", account=ACCOUNT_B, code="AccessDeniedException", status=400)
    cfg = config()
    cfg["accounts"] = [{}, {"role_arn": ROLE_B}]
    r = check(aws, tmp_path, cfg, "--output", "json")
    assert r.returncode == 3, r.stdout + r.stderr
    report = as_json(r)
    assert report["status"] == "unknown"
    assert {q["account_id"] for q in report["quotas"]} == {ACCOUNT_A}
    [failure] = report["failures"]
    assert set(failure) == FAILURE_KEYS
    assert failure["account_id"] == ACCOUNT_B and failure["error_code"] == "AccessDeniedException"
    table = check(aws, tmp_path, cfg)
    assert f"FAILED  ssm_parameters {ACCOUNT_B} eu-west-1:" in table.stdout
    assert table.stdout.splitlines()[-1] == "UNKNOWN: 2 quotas, 1 failed collections"


def test_a_bad_config_or_flag_is_unknown_with_the_key_named(aws, tmp_path):
    r = check(aws, tmp_path, {"collectors": {"ssm_parameters": {"alert_thresholds": {STD: {"warning": 0.97}}}}})
    assert r.returncode == 3 and r.stdout == ""
    assert "collectors.ssm_parameters.alert_thresholds.standard_parameters: the warning threshold (0.97) is above the critical one (0.95)" in r.stderr
    r = check(aws, tmp_path, config(), "--output", "xml")
    assert r.returncode == 3 and "xml" in r.stderr
    # Without --check, --output is a usage error as any other (clap's 2).
    plain = subprocess.run([str(BIN_DIR / BIN), "--output", "json"], capture_output=True, text=True, timeout=10)
    assert plain.returncode == 2 and "--check" in plain.stderr


def test_it_serves_nothing_and_says_how_far_it_is(aws, tmp_path):
    aws.seed_ssm("eu-west-1", 10, 0)
    aws.fault(operation="DescribeParameters", latency_ms=6000, times=1)
    with socket.socket() as held:
        # The listen address is taken: a check that tried to serve would fail.
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        r = check(aws, tmp_path, config(), f"--web.listen-address=127.0.0.1:{port}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "checking: 0 of 1 collector targets done after 5s" in r.stderr
    assert "listening" not in r.stderr
