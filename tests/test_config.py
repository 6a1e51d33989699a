"""Bad configuration stops start-up with a message naming the file and the key."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import BIN_DIR

BIN = str(BIN_DIR / "ssm_quota_exporter")

BAD = [
    ("unknown key", "regoins: [eu-west-1]\n", ["regoins", "unknown field"]),
    ("unknown nested key", "accounts:\n  - role_arn: arn:aws:iam::111111111111:role/x\n    rolearn: y\n", ["accounts[0]", "rolearn", "line 3"]),
    ("wrong type", "collectors:\n  ssm_parameters:\n    rate_limit: fast\n", ["collectors.ssm_parameters.rate_limit", "invalid type"]),
    ("malformed ARN", "accounts:\n  - role_arn: arn:aws:iam::1234:role/x\n", ["accounts[0].role_arn", "malformed role ARN", "line 2"]),
    ("empty region list", "regions: []\n", ["regions", "at least one"]),
    ("bad region", "regions: [eu-west-1, Frankfurt]\n", ["regions[1]", "invalid region"]),
    ("bad duration", "collectors:\n  ssm_parameters:\n    refresh_interval: 5 minutes\n", ["collectors.ssm_parameters.refresh_interval", "invalid duration"]),
    ("unknown collector", "collectors:\n  ecr_images: {}\n", ["collectors.ecr_images", "unknown collector", "ssm_parameters"]),
    ("unknown quota override", "collectors:\n  ssm_parameters:\n    limit_overrides: {L-NOPE: 1}\n", ["limit_overrides.L-NOPE", "standard_parameters"]),
    ("short account ID", "accounts:\n  - account_id: 12345678901\n", ["accounts[0].account_id", "12 digits", "line 2"]),
    ("not YAML", "regions: [eu-west-1\n", ["did not find expected"]),
    ("duplicate collector", "collectors:\n  ssm_parameters:\n    rate_limit: 1\n  ssm_parameters:\n    rate_limit: 2\n", ["collectors.ssm_parameters", "given twice, at line 2 and line 4"]),
    ("duplicate override", "collectors:\n  ssm_parameters:\n    limit_overrides:\n      standard_parameters: 1\n      standard_parameters: 2\n", ["limit_overrides.standard_parameters", "line 4 and line 5"]),
    ("duration past any clock", "collectors:\n  ssm_parameters:\n    limits_refresh_interval: 99999999999999999h\n", ["collectors.ssm_parameters.limits_refresh_interval", "at most 720h"]),
    ("attempt timeout past any clock", "aws:\n  attempt_timeout: 5124095576030431h\n", ["aws.attempt_timeout", "at most 720h"]),
    ("numbers as names", "collectors:\n  ssm_parameters:\n    rate_limit: 1\nregions: [1, 2]\n", ["regions[0]", "expected a string"]),
    ("YAML tag", "regions: !evil [eu-west-1]\n", ["regions", "YAML tags are not accepted"]),
    ("NUL byte", "regions:\n  - eu-west-1\u0000\n", ["line 2, column 14", "control character U+0000"]),
    ("per-resource key on a collector without resources", "collectors:\n  ssm_parameters:\n    include: [\"a\"]\n", ["collectors.ssm_parameters.include", "counts no single resources"]),
    ("external ID AWS refuses", "accounts:\n  - role_arn: arn:aws:iam::111111111111:role/x\n    external_id: \"a b\"\n", ["accounts[0].external_id", "only letters"]),
    ("deep nesting", "regions: " + "[" * 40_000 + "\n", ["nested deeper than 32 levels"]),
    ("warning above critical", "collectors:\n  ssm_parameters:\n    alert_thresholds:\n      standard_parameters: {warning: 0.9, critical: 0.85}\n", ["collectors.ssm_parameters.alert_thresholds.standard_parameters", "warning threshold (0.9) is above the critical one (0.85)"]),
    ("threshold ratio above 1", "collectors:\n  ssm_parameters:\n    alert_thresholds:\n      standard_parameters: {critical: 95}\n", ["alert_thresholds.standard_parameters.critical", "invalid ratio 95"]),
    ("threshold pattern with nothing to match", "collectors:\n  ssm_parameters:\n    alert_thresholds:\n      standard_parameters:\n        resources: [{match: \"prod-*\", warning: 0.5}]\n", ["alert_thresholds.standard_parameters.resources", "no resources for a pattern to match"]),
    ("threshold for an unknown quota", "collectors:\n  ssm_parameters:\n    alert_thresholds: {L-NOPE: {warning: 0.5}}\n", ["alert_thresholds.L-NOPE", "unknown quota code"]),
    ("account warning above the collector's critical", "accounts:\n  - alert_thresholds: {standard_parameters: {warning: 0.9}}\ncollectors:\n  ssm_parameters:\n    alert_thresholds: {standard_parameters: {critical: 0.85}}\n", ["accounts[0].alert_thresholds.standard_parameters", "above the critical one (0.85)"]),
]


@pytest.mark.parametrize("name,text,needles", BAD, ids=[b[0] for b in BAD])
def test_bad_config_exits_non_zero_naming_the_key(tmp_path: Path, name: str, text: str, needles: list[str]):
    path = tmp_path / "bad.yml"
    path.write_text(text)
    for args in (["--config.check"], ["--web.listen-address=127.0.0.1:0"]):
        r = subprocess.run([BIN, f"--config.file={path}", *args], capture_output=True, text=True, timeout=30)
        assert r.returncode != 0, (name, r.stdout, r.stderr)
        assert str(path) in r.stderr, r.stderr
        for n in needles:
            assert n in r.stderr, (n, r.stderr)


def test_huge_and_endless_files_are_refused_without_echoing_them(tmp_path: Path):
    """A 10 MB value is not repeated in the message; a device that never ends (or a
    huge file) is refused after the first MiB instead of read until memory runs out."""
    path = tmp_path / "huge.yml"
    path.write_text("regions: [eu-" + "a" * 500_000 + "-1]\n")
    r = subprocess.run([BIN, f"--config.file={path}", "--config.check"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "regions[0]" in r.stderr and len(r.stderr) < 2000, r.stderr[:500]
    path.write_text("regions: [" + "a" * 10_000_000 + "]\n")
    r = subprocess.run([BIN, f"--config.file={path}", "--config.check"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "larger than 1024 KiB" in r.stderr and len(r.stderr) < 2000, r.stderr[:500]
    r = subprocess.run([BIN, "--config.file=/dev/urandom", "--config.check"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "/dev/urandom" in r.stderr and len(r.stderr) < 2000, r.stderr[:500]


def test_unquoted_account_id_keeps_its_leading_zero(tmp_path: Path):
    path = tmp_path / "ok.yml"
    path.write_text("accounts:\n  - account_id: 012345678901\n")
    r = subprocess.run([BIN, f"--config.file={path}", "--config.check"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_missing_config_file(tmp_path: Path):
    r = subprocess.run([BIN, f"--config.file={tmp_path}/nope.yml", "--config.check"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "nope.yml" in r.stderr and "cannot read" in r.stderr


def test_good_config_checks_clean(tmp_path: Path):
    path = tmp_path / "good.yml"
    path.write_text(
        "accounts:\n  - {}\n  - role_arn: arn:aws:iam::111111111111:role/headroom\n    external_id: abc\n"
        "regions: [eu-west-1, us-east-1]\ncollectors:\n  ssm_parameters:\n    refresh_interval: 10m\n"
        "    limit_overrides: {standard_parameters: 9000}\n"
    )
    r = subprocess.run([BIN, f"--config.file={path}", "--config.check"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "valid" in r.stdout


def test_bad_web_config(tmp_path: Path):
    path = tmp_path / "web.yml"
    path.write_text("basic_auth_users:\n  alice: plaintext\n")
    r = subprocess.run([BIN, f"--web.config.file={path}", "--config.check"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "basic_auth_users.alice" in r.stderr


def test_unknown_flag_is_an_error():
    r = subprocess.run([BIN, "--no-such-flag"], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "--no-such-flag" in r.stderr
