"""Reloading the configuration without a restart: SIGHUP and POST /-/reload, as
Prometheus, Alertmanager and blackbox_exporter do. A valid file replaces targets and
settings (tasks whose settings did not change keep running and are not refreshed
again); an invalid one is refused, logged and counted, and the running one stays."""

from __future__ import annotations

import signal
from pathlib import Path

import requests
import yaml

from conftest import ACCOUNT_A, fast_retries, wait_until

BIN = "ssm_quota_exporter"
STD = "standard_parameters"
OK = "aws_quota_exporter_config_last_reload_successful"
WHEN = "aws_quota_exporter_config_last_reload_success_timestamp_seconds"
# "s3cret", bcrypt with cost 4 (cheap for tests).
ALICE = "$2y$04$GUz5PuGJZDugOMo/ty.YbOBkAQamGk7w/PkuOXDcJGSKuNP6Ww4i6"


def config(regions: list[str], **collector) -> dict:
    # A long interval: any refresh seen after a reload is the reload's doing.
    settings = {"refresh_interval": "1h", "max_staleness": "2h", **collector}
    return {"regions": regions, "collectors": {"ssm_parameters": settings}, "aws": fast_retries()}


def rewrite(e, cfg: dict | str) -> None:
    text = cfg if isinstance(cfg, str) else yaml.safe_dump(cfg)
    (Path(e.tmp.name) / "config.yml").write_text(text)


def calls(aws, region: str) -> int:
    return sum(1 for r in aws.log() if r["operation"] == "DescribeParameters" and r["region"] == region)


def usage(e, region: str) -> float | None:
    return e.value("aws_quota_usage", account_id=ACCOUNT_A, aws_region=region, quota_code=STD)


def limit(e, region: str) -> float | None:
    return e.value("aws_quota_limit", account_id=ACCOUNT_A, aws_region=region, quota_code=STD)


def reloaded_after(e, t: float) -> None:
    wait_until(lambda: (e.value(WHEN) or 0) > t, 20, "a successful reload")
    assert e.value(OK) == 1


def test_sighup_adds_and_removes_targets_and_leaves_the_unchanged_one_running(aws, exporter):
    aws.seed_ssm("eu-west-1", 120, 0)
    aws.seed_ssm("us-east-1", 340, 0)
    e = exporter(BIN, config(["eu-west-1"]))
    e.wait_ready()
    assert e.value(OK) == 1
    started = e.value(WHEN)
    assert started and started > 0
    assert usage(e, "eu-west-1") == 120
    eu_calls = calls(aws, "eu-west-1")

    rewrite(e, config(["eu-west-1", "us-east-1"]))
    e.proc.send_signal(signal.SIGHUP)
    reloaded_after(e, started)
    wait_until(lambda: usage(e, "us-east-1") == 340, 20, "the added region's count")
    assert e.healthy(), "SIGHUP must not stop the exporter"
    assert usage(e, "eu-west-1") == 120
    assert calls(aws, "eu-west-1") == eu_calls, "an unchanged target is not refreshed again by a reload"
    assert "configuration reloaded" in e.logs()
    assert "kept=1" in e.logs() and "started=1" in e.logs()
    assert e.ready()

    second = e.value(WHEN)
    rewrite(e, config(["us-east-1"]))
    e.proc.send_signal(signal.SIGHUP)
    reloaded_after(e, second)
    # The removed region's series go at once, and it is not called again.
    assert usage(e, "eu-west-1") is None
    assert e.value("aws_quota_exporter_collector_success", aws_region="eu-west-1") is None
    assert usage(e, "us-east-1") == 340
    assert calls(aws, "eu-west-1") == eu_calls


def test_changed_settings_restart_the_task_with_its_samples_carried_over(aws, exporter):
    aws.seed_ssm("eu-west-1", 120, 0)
    e = exporter(BIN, config(["eu-west-1"], limit_overrides={STD: 1000}))
    e.wait_ready()
    assert limit(e, "eu-west-1") == 1000
    before = calls(aws, "eu-west-1")
    last_success = e.value("aws_quota_exporter_collector_last_success_timestamp_seconds", aws_region="eu-west-1")

    rewrite(e, config(["eu-west-1"], limit_overrides={STD: 500}))
    r = requests.post(f"{e.url}/-/reload", timeout=30)
    assert r.status_code == 200, r.text
    assert "1 restarted" in r.text, r.text
    # Right after the reload, before the restarted task refreshes, the samples are there.
    assert usage(e, "eu-west-1") == 120
    assert (
        e.value("aws_quota_exporter_collector_last_success_timestamp_seconds", aws_region="eu-west-1")
        >= last_success
    )
    wait_until(lambda: limit(e, "eu-west-1") == 500, 20, "the new override in force")
    wait_until(lambda: calls(aws, "eu-west-1") > before, 20, "the restarted task's refresh")
    assert e.ready()


def test_an_invalid_config_is_refused_logged_and_counted_and_the_running_one_stays(aws, exporter):
    aws.seed_ssm("eu-west-1", 120, 0)
    e = exporter(BIN, config(["eu-west-1"]))
    e.wait_ready()
    started = e.value(WHEN)

    rewrite(e, {"regions": ["eu-west-1"], "collectors": {"ssm_parameters": {"refresh_intervall": "5m"}}})
    e.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: e.value(OK) == 0, 20, "the failed reload to be counted")
    assert e.value(WHEN) == started
    assert "configuration reload failed" in e.logs()
    assert "refresh_intervall" in e.logs()
    assert e.healthy() and e.ready()
    assert usage(e, "eu-west-1") == 120

    # Over HTTP the reason comes back with a 500, as Prometheus answers.
    rewrite(e, "regions: [eu-west-1]\ncollectors:\n  ssm_parameters:\n    timeout: 2000h\n")
    r = requests.post(f"{e.url}/-/reload", timeout=30)
    assert r.status_code == 500
    assert "timeout" in r.text and "720h" in r.text, r.text
    assert e.value(OK) == 0

    rewrite(e, config(["eu-west-1"]))
    r = requests.put(f"{e.url}/-/reload", timeout=30)
    assert r.status_code == 200, r.text
    assert "1 kept" in r.text, r.text
    assert e.value(OK) == 1 and e.value(WHEN) > started


def test_reload_is_post_or_put_and_behind_basic_auth(aws, exporter, tmp_path):
    web = tmp_path / "web.yml"
    web.write_text(yaml.safe_dump({"basic_auth_users": {"alice": ALICE}}))
    e = exporter(BIN, config(["eu-west-1"]), extra_args=[f"--web.config.file={web}"], http={"auth": ("alice", "s3cret")})
    e.wait_ready()
    assert requests.get(f"{e.url}/-/reload", auth=("alice", "s3cret"), timeout=5).status_code == 405
    assert requests.post(f"{e.url}/-/reload", timeout=5).status_code == 401
    assert requests.post(f"{e.url}/-/reload", auth=("alice", "wrong"), timeout=5).status_code == 401
    assert e.value(WHEN) is not None
    r = requests.post(f"{e.url}/-/reload", auth=("alice", "s3cret"), timeout=30)
    assert r.status_code == 200, r.text
