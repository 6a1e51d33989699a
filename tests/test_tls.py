"""TLS as the exporter toolkit does it (`--web.config.file` with `tls_server_config`),
checked with real TLS clients (Python's ssl, requests) against a real exporter:
certificates made here with `cryptography`, trusted and untrusted CAs, TLS versions,
mutual TLS, basic auth over TLS, certificates rotated on disk while the exporter runs,
and the errors of a bad web config."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml
from cryptography import x509

from conftest import BIN_DIR, fast_retries, wait_until
from tlsutil import CertificateAuthority, Issued, tls_get

BINARY = "ssm_quota_exporter"
# "s3cret", bcrypt with cost 4 (cheap for tests).
ALICE = "$2y$04$GUz5PuGJZDugOMo/ty.YbOBkAQamGk7w/PkuOXDcJGSKuNP6Ww4i6"
RELOADED = "TLS certificate reloaded"
RELOAD_FAILED = "cannot reload TLS certificate"


@dataclass
class Pki:
    """A web config directory: web-config.yml next to tls/ with the server's files."""

    dir: Path
    ca: CertificateAuthority  # signs the server certificate
    client_ca: CertificateAuthority  # signs client certificates
    other_ca: CertificateAuthority  # trusted by nobody here
    server: Issued
    ca_file: Path  # the server CA, for clients

    @property
    def cert(self) -> Path:
        return self.dir / "tls" / "tls.crt"

    @property
    def key(self) -> Path:
        return self.dir / "tls" / "tls.key"

    @property
    def client_ca_file(self) -> Path:
        return self.dir / "tls" / "client-ca.crt"

    def client(self, ca: CertificateAuthority, name: str = "prometheus") -> tuple[str, str]:
        """A client certificate and key from `ca`, as files, for requests' `cert`."""
        issued = ca.issue(name, client=True)
        cert, key = issued.write(self.dir / f"{name}-{issued.serial}.crt", self.dir / f"{name}-{issued.serial}.key")
        return str(cert), str(key)

    def web_config(self, **tls: object) -> Path:
        """web-config.yml with relative file names, as the toolkit resolves them."""
        config = {"tls_server_config": {"cert_file": "tls/tls.crt", "key_file": "tls/tls.key", **tls}}
        path = self.dir / "web-config.yml"
        path.write_text(yaml.safe_dump(config))
        return path


@pytest.fixture()
def pki(tmp_path: Path) -> Pki:
    (tmp_path / "tls").mkdir()
    ca = CertificateAuthority("headroom test CA")
    p = Pki(
        dir=tmp_path,
        ca=ca,
        client_ca=CertificateAuthority("headroom client CA"),
        other_ca=CertificateAuthority("unrelated CA"),
        server=ca.issue("exporter", server=True),
        ca_file=ca.write(tmp_path / "ca.crt"),
    )
    p.server.write(p.cert, p.key)
    p.client_ca.write(p.client_ca_file)
    return p


def start(aws, exporter, pki: Pki, web_config: Path, cert: tuple[str, str] | None = None, **kw):
    """The SSM exporter over TLS; its fixture waits for /healthz over HTTPS."""
    aws.seed_ssm("eu-west-1", standard=3, advanced=1)
    http = {"verify": str(pki.ca_file)}
    if cert:
        http["cert"] = cert
    return exporter(
        BINARY,
        {"regions": ["eu-west-1"], "aws": fast_retries()},
        extra_args=[f"--web.config.file={web_config}"],
        scheme="https",
        http=http,
        **kw,
    )


def context(
    ca: Path | None,
    cert: tuple[str, str] | None = None,
    maximum: ssl.TLSVersion | None = None,
    minimum: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    if cert:
        ctx.load_cert_chain(*cert)
    if maximum:
        ctx.maximum_version = maximum
    if minimum:
        ctx.minimum_version = minimum
    return ctx


def served_certificate(port: int, pki: Pki) -> x509.Certificate:
    """The certificate the server presents now (verified against the test CA)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context(pki.ca_file).wrap_socket(raw, server_hostname="localhost") as s:
            der = s.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der)


def refused(port: int, ctx: ssl.SSLContext, path: str = "/metrics") -> str:
    """The error a client gets whose handshake the server (or the client) refuses."""
    with pytest.raises((ssl.SSLError, ConnectionError)) as e:
        tls_get(port, ctx, path)
    return str(e.value)


def usage_line(text: str) -> bool:
    return 'quota_code="standard_parameters"' in text and "aws_quota_usage{" in text


# ------------------------------------------------------------------- serving over TLS


def test_scrape_over_tls_with_the_servers_ca(aws, exporter, pki):
    e = start(aws, exporter, pki, pki.web_config())
    e.wait_ready()
    assert usage_line(e.scrape())
    assert e.get("/healthz").text == "ok\n"
    assert 'href="/metrics"' in e.get("/").text
    # The default minimum is TLS 1.2: a TLS 1.2-only client is served, and a modern one
    # gets TLS 1.3.
    status, body, version = tls_get(e.port, context(pki.ca_file, maximum=ssl.TLSVersion.TLSv1_2))
    assert status == 200 and usage_line(body) and version == "TLSv1.2"
    status, body, version = tls_get(e.port, context(pki.ca_file))
    assert status == 200 and version == "TLSv1.3"
    # HTTP/2 is offered through ALPN, as in the toolkit.
    ctx = context(pki.ca_file)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", e.port), timeout=10) as raw, ctx.wrap_socket(raw, server_hostname="localhost") as s:
        assert s.selected_alpn_protocol() == "h2"


def test_a_client_that_trusts_another_ca_refuses_the_server(aws, exporter, pki):
    e = start(aws, exporter, pki, pki.web_config())
    other = pki.other_ca.write(pki.dir / "other-ca.crt")
    with pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        requests.get(f"{e.url}/metrics", verify=str(other), timeout=5)
    assert "CERTIFICATE_VERIFY_FAILED" in refused(e.port, context(other))
    # The failed handshakes closed their connections only.
    e.wait_ready()
    assert usage_line(e.scrape())


def test_plain_http_on_the_tls_port_gets_a_400_and_no_metrics(aws, exporter, pki):
    e = start(aws, exporter, pki, pki.web_config())
    r = requests.get(f"http://127.0.0.1:{e.port}/metrics", timeout=5)
    assert r.status_code == 400 and "HTTPS" in r.text and "aws_quota" not in r.text, r.text
    assert e.healthy()


def test_min_and_max_version(aws, exporter, pki):
    e = start(aws, exporter, pki, pki.web_config(min_version="TLS13"))
    assert "VERSION" in refused(e.port, context(pki.ca_file, maximum=ssl.TLSVersion.TLSv1_2)).upper()
    assert tls_get(e.port, context(pki.ca_file))[::2] == (200, "TLSv1.3")
    e.stop()
    e = start(aws, exporter, pki, pki.web_config(max_version="TLS12"))
    assert "VERSION" in refused(e.port, context(pki.ca_file, minimum=ssl.TLSVersion.TLSv1_3)).upper()
    assert tls_get(e.port, context(pki.ca_file))[::2] == (200, "TLSv1.2")


# ------------------------------------------------------------- mutual TLS, basic auth


def test_mutual_tls_requires_a_certificate_from_the_client_ca(aws, exporter, pki):
    trusted = pki.client(pki.client_ca)
    e = start(
        aws,
        exporter,
        pki,
        pki.web_config(client_auth_type="RequireAndVerifyClientCert", client_ca_file="tls/client-ca.crt"),
        cert=trusted,
    )
    e.wait_ready()
    # With a certificate of the client CA: served.
    status, body, _ = tls_get(e.port, context(pki.ca_file, cert=trusted))
    assert status == 200 and usage_line(body)
    # Without one, the handshake fails, for the metrics and the probes alike.
    assert "CERTIFICATE_REQUIRED" in refused(e.port, context(pki.ca_file)).upper()
    assert "CERTIFICATE_REQUIRED" in refused(e.port, context(pki.ca_file), "/healthz").upper()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"{e.url}/metrics", verify=str(pki.ca_file), timeout=5)
    # A certificate of another CA is refused; so is the server's own CA's.
    assert "UNKNOWN_CA" in refused(e.port, context(pki.ca_file, cert=pki.client(pki.other_ca, "stranger"))).upper()
    assert "UNKNOWN_CA" in refused(e.port, context(pki.ca_file, cert=pki.client(pki.ca, "sibling"))).upper()
    assert e.healthy()


def test_verify_client_cert_if_given(aws, exporter, pki):
    e = start(
        aws,
        exporter,
        pki,
        pki.web_config(client_auth_type="VerifyClientCertIfGiven", client_ca_file="tls/client-ca.crt"),
    )
    assert tls_get(e.port, context(pki.ca_file))[0] == 200
    assert tls_get(e.port, context(pki.ca_file, cert=pki.client(pki.client_ca)))[0] == 200
    assert "UNKNOWN_CA" in refused(e.port, context(pki.ca_file, cert=pki.client(pki.other_ca, "stranger"))).upper()


def test_basic_auth_over_mutual_tls(aws, exporter, pki):
    path = pki.web_config(client_auth_type="RequireAndVerifyClientCert", client_ca_file="tls/client-ca.crt")
    path.write_text(path.read_text() + yaml.safe_dump({"basic_auth_users": {"alice": ALICE}}))
    cert = pki.client(pki.client_ca)
    e = start(aws, exporter, pki, path, cert=cert)
    assert e.get("/metrics").status_code == 401
    assert e.get("/").status_code == 401
    assert requests.get(f"{e.url}/metrics", auth=("alice", "wrong"), timeout=5, **e.http).status_code == 401
    r = requests.get(f"{e.url}/metrics", auth=("alice", "s3cret"), timeout=5, **e.http)
    assert r.status_code == 200 and "aws_quota_exporter_build_info" in r.text
    # Basic auth never applies to the probes.
    assert e.get("/healthz").status_code == 200 and e.get("/readyz").status_code in (200, 503)


# ------------------------------------------------------------------ rotation on disk


def test_a_rotated_certificate_is_served_without_a_restart(aws, exporter, pki):
    e = start(aws, exporter, pki, pki.web_config())
    assert served_certificate(e.port, pki).serial_number == pki.server.serial
    pid = e.proc.pid
    renewed = pki.ca.issue("exporter-renewed", server=True)
    assert renewed.serial != pki.server.serial
    renewed.write(pki.cert, pki.key)
    # Within a few seconds (the files are checked at most once a second).
    served = wait_until(
        lambda: (c := served_certificate(e.port, pki)).serial_number == renewed.serial and c,
        10,
        "the renewed certificate to be served",
    )
    assert served.subject.rfc4514_string() == "CN=exporter-renewed"
    assert e.proc.pid == pid and e.proc.poll() is None
    e.wait_ready()
    assert usage_line(e.scrape())
    assert RELOADED in e.logs()


def test_a_bad_rotated_file_keeps_the_last_good_certificate(aws, exporter, pki):
    e = start(aws, exporter, pki, pki.web_config())
    # Renamed over the old file, so the exporter sees one bad file, not an empty one
    # first (which would be a second bad file to report).
    tmp = pki.cert.with_name("bad.tmp")
    tmp.write_text("-----BEGIN CERTIFICATE-----\ntruncated\n")
    os.replace(tmp, pki.cert)
    wait_until(lambda: served_certificate(e.port, pki) and RELOAD_FAILED in e.logs(), 10, "the failed reload to be logged")
    # For a few more checks of the files: the old certificate is served, and the
    # failure is logged once, not once a handshake.
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        assert served_certificate(e.port, pki).serial_number == pki.server.serial
    assert e.logs().count(RELOAD_FAILED) == 1, e.logs()
    assert tls_get(e.port, context(pki.ca_file))[0] == 200
    # A good file after the bad one is picked up.
    renewed = pki.ca.issue("exporter-renewed", server=True)
    renewed.write(pki.cert, pki.key)
    wait_until(lambda: served_certificate(e.port, pki).serial_number == renewed.serial, 10, "the renewed certificate")


def test_a_rotated_client_ca_is_picked_up(aws, exporter, pki):
    old = pki.client(pki.client_ca, "old")
    e = start(
        aws,
        exporter,
        pki,
        pki.web_config(client_auth_type="RequireAndVerifyClientCert", client_ca_file="tls/client-ca.crt"),
        cert=old,
    )
    new_ca = CertificateAuthority("headroom client CA 2")
    new = pki.client(new_ca, "new")
    assert "UNKNOWN_CA" in refused(e.port, context(pki.ca_file, cert=new)).upper()
    tmp = pki.client_ca_file.with_name("client-ca.tmp")
    new_ca.write(tmp)
    os.replace(tmp, pki.client_ca_file)

    def new_client_served() -> bool:
        try:
            return tls_get(e.port, context(pki.ca_file, cert=new))[0] == 200
        except (ssl.SSLError, ConnectionError):
            return False

    wait_until(new_client_served, 10, "a client of the new CA to be served")
    assert "UNKNOWN_CA" in refused(e.port, context(pki.ca_file, cert=old)).upper()


# ---------------------------------------------------------- connections and shutdown


def closed_by_server(s: socket.socket) -> bool:
    """Waits (up to the socket's timeout) for the server to close the connection."""
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def test_a_silent_client_neither_blocks_others_nor_stays_forever(aws, exporter, pki):
    e = start(aws, exporter, pki, pki.web_config())
    e.wait_ready()
    silent = socket.create_connection(("127.0.0.1", e.port), timeout=30)
    half = socket.create_connection(("127.0.0.1", e.port), timeout=30)
    half.sendall(b"\x16\x03\x01")  # the start of a TLS record, and no more
    try:
        # Handshakes do not hold the accept loop: others are served meanwhile.
        assert usage_line(e.scrape())
        # The handshake timeout (10 s) closes both.
        started = time.monotonic()
        assert closed_by_server(silent) and closed_by_server(half)
        assert time.monotonic() - started < 15
    finally:
        silent.close()
        half.close()


def test_sigterm_under_tls_stops_promptly(aws, exporter, pki):
    e = start(aws, exporter, pki, pki.web_config())
    e.wait_ready()
    pending = socket.create_connection(("127.0.0.1", e.port), timeout=10)  # mid-handshake
    with socket.create_connection(("127.0.0.1", e.port), timeout=10) as raw:
        with context(pki.ca_file).wrap_socket(raw, server_hostname="localhost") as idle:  # an idle TLS connection
            e.proc.send_signal(signal.SIGTERM)
            try:
                code = e.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pytest.fail("still running 5 s after SIGTERM")
    pending.close()
    assert code == 0
    e.stop()
    assert "SIGTERM received" in e.final_logs and "stopped" in e.final_logs, e.final_logs
    assert "tls=true" in e.final_logs


# ---------------------------------------------------------------- web config errors


def check(web_config: Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run(
        [str(BIN_DIR / BINARY), "--config.check", f"--web.config.file={web_config}"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=cwd,
    )


BAD_TLS = {
    "tls10": ({"min_version": "TLS10"}, "tls_server_config.min_version: TLS10 is not supported"),
    "tls11-max": ({"max_version": "TLS11"}, "tls_server_config.max_version: TLS11 is not supported"),
    "unknown-key": ({"colour": "red"}, "tls_server_config.colour: unknown field"),
    "allowed-sans": ({"client_allowed_sans": ["prometheus"]}, "tls_server_config.client_allowed_sans: not supported"),
    "unverified-clients": (
        {"client_auth_type": "RequireAnyClientCert", "client_ca_file": "tls/client-ca.crt"},
        "client_auth_type: RequireAnyClientCert is not supported",
    ),
    "mtls-without-ca": ({"client_auth_type": "RequireAndVerifyClientCert"}, "tls_server_config.client_ca_file: missing"),
    "ca-without-auth": ({"client_ca_file": "tls/client-ca.crt"}, "client_auth_type is NoClientCert"),
    "cbc-suite": ({"cipher_suites": ["TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"]}, "tls_server_config.cipher_suites[0]"),
    "p521": ({"curve_preferences": ["CurveP521"]}, "tls_server_config.curve_preferences[0]: CurveP521 is not supported"),
    "missing-file": ({"key_file": "tls/missing.key"}, "tls_server_config.key_file {dir}/tls/missing.key: cannot read"),
    "not-a-certificate": ({"cert_file": "tls/tls.key"}, "tls_server_config.cert_file {dir}/tls/tls.key: no certificate"),
    "key-of-another-cert": ({"cert_file": "tls/client-ca.crt"}, "{dir}/tls/client-ca.crt, tls_server_config.key_file {dir}/tls/tls.key: the private key does not belong to the certificate"),
}


@pytest.mark.parametrize("tls, error", BAD_TLS.values(), ids=BAD_TLS.keys())
def test_a_bad_web_config_is_refused_naming_the_key(pki, tls, error):
    r = check(pki.web_config(**tls))
    assert r.returncode != 0, r.stdout
    assert error.format(dir=pki.dir) in r.stderr, r.stderr
    assert str(pki.dir / "web-config.yml") in r.stderr, r.stderr


def test_file_names_are_relative_to_the_web_config(pki, tmp_path_factory):
    # The check runs elsewhere: tls/tls.crt resolves next to web-config.yml.
    elsewhere = tmp_path_factory.mktemp("cwd")
    r = check(pki.web_config(), cwd=elsewhere)
    assert r.returncode == 0 and "configuration is valid" in r.stdout, r.stderr
    r = check(pki.web_config(min_version="TLS13", cipher_suites=["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"], curve_preferences=["X25519", "CurveP256"], prefer_server_cipher_suites=False), cwd=elsewhere)
    assert r.returncode == 0, r.stderr
