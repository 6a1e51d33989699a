"""The exporters' landing page in a real headless browser (Debian's chromium): it
renders with the exporter's name and version, and its links lead to the metrics, the
health and the readiness endpoints, also under a custom telemetry path and over TLS."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser

import pytest
import yaml

from conftest import fast_retries
from tlsutil import CertificateAuthority

BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def render(url: str, *flags: str) -> str:
    """The DOM of `url` after chromium has loaded it."""
    binary = shutil.which("chromium")
    assert binary, "chromium is not installed: run scripts/setup.sh"
    with tempfile.TemporaryDirectory() as profile:
        r = subprocess.run(
            [binary, *BROWSER_FLAGS, *flags, f"--user-data-dir={profile}", "--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


class Page(HTMLParser):
    def __init__(self, dom: str) -> None:
        super().__init__()
        self.links: dict[str, str] = {}
        self.title = ""
        self.h1 = ""
        self.text: list[str] = []
        self._tag = None
        self._href = None
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        self._tag = tag
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_endtag(self, tag):
        self._tag = None

    def handle_data(self, data):
        self.text.append(data)
        if self._tag == "title":
            self.title += data
        elif self._tag == "h1":
            self.h1 += data
        elif self._tag == "a" and self._href is not None:
            self.links[data.strip()] = self._href


@pytest.mark.parametrize("telemetry_path", ["/metrics", "/custom/metrics"])
def test_the_landing_page_links_to_the_metrics(aws, exporter, telemetry_path):
    aws.seed_ssm("eu-west-1", standard=3, advanced=1)
    config = {"regions": ["eu-west-1"], "aws": fast_retries()}
    e = exporter("ssm_quota_exporter", config, extra_args=[f"--web.telemetry-path={telemetry_path}"])
    e.wait_ready()
    check_landing_page(e.url, telemetry_path)


def test_the_landing_page_over_tls(aws, exporter, tmp_path):
    """The same over HTTPS, with the exporter's certificate from a test CA. Chromium is
    told to accept it (--ignore-certificate-errors): trusting a CA in headless chromium
    needs an NSS database; test_tls.py verifies the chain with real TLS clients."""
    ca = CertificateAuthority("headroom browser test CA")
    ca.issue("exporter", server=True).write(tmp_path / "tls.crt", tmp_path / "tls.key")
    web = tmp_path / "web-config.yml"
    web.write_text(yaml.safe_dump({"tls_server_config": {"cert_file": "tls.crt", "key_file": "tls.key"}}))
    aws.seed_ssm("eu-west-1", standard=3, advanced=1)
    config = {"regions": ["eu-west-1"], "aws": fast_retries()}
    e = exporter(
        "ssm_quota_exporter",
        config,
        extra_args=[f"--web.config.file={web}"],
        scheme="https",
        http={"verify": str(ca.write(tmp_path / "ca.crt"))},
    )
    e.wait_ready()
    assert e.url.startswith("https://")
    check_landing_page(e.url, "/metrics", "--ignore-certificate-errors")


def check_landing_page(url: str, telemetry_path: str, *flags: str) -> None:
    page = Page(render(url + "/", *flags))
    assert page.title == "ssm_quota_exporter" and page.h1 == "ssm_quota_exporter"
    assert re.search(r"Version \d+\.\d+\.\d+", " ".join(page.text))
    assert page.links == {"Metrics": telemetry_path, "Health": "/healthz", "Readiness": "/readyz"}
    # Following each link in the browser reaches the endpoint; chromium shows plain
    # text inside <pre>.
    metrics = html.unescape(render(url + page.links["Metrics"], *flags))
    assert re.search(r'\naws_quota_usage\{[^}]*quota_code="standard_parameters"[^}]*\} 3\n', metrics), metrics[-3000:]
    assert "aws_quota_exporter_build_info" in metrics
    assert "ok" in render(url + page.links["Health"], *flags)
    assert "ready" in render(url + page.links["Readiness"], *flags)
