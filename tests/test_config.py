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
