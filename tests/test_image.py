"""The container image, built and run. The Helm chart deploys the image, so the image is
what users run: these tests build the Dockerfile's runtime stages for real (the same
stages, user, file layout, entrypoints and exposed ports users get) on a local Debian
12 image standing in for distroless, around the binaries this test run built
(tests/image_build.py, BINARIES=prebuilt), and run every exporter from them the way the
chart does: the image's own user, a read-only root file system, no capabilities,
the configuration mounted read-only, against the local AWS test server.

The release image, built from source on the public base images, is `make image`."""

from __future__ import annotations

import datetime
import ipaddress
import select
import socket
import ssl
import threading
import warnings
from pathlib import Path
from typing import Iterator

import pytest
import yaml
from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import image_build
from conftest import ACCOUNT_A, BIN_DIR, AwsServer, aws_env
from exporters import EXPORTERS, Exporter
from image_build import Container
from test_conformance import config, profile, usage

DEFAULT = "headroom"  # the Dockerfile's default stage: every exporter, the chart's image
NONROOT = "65532"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # where rustls-native-certs (openssl-probe) and SSL_CERT_FILE look
CONFIG = "/etc/headroom/config.yml"  # where the chart mounts the configuration


def stage(exp: Exporter) -> str:
    return exp.binary.replace("_", "-")


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> Iterator[dict[str, str]]:
    """The default image and every exporter's own image, by Dockerfile stage."""
    session = image_build.Session(tmp_path_factory.mktemp("image"))
    try:
        yield session.build([DEFAULT, *(stage(e) for e in EXPORTERS)], BIN_DIR, [e.binary for e in EXPORTERS])
    finally:
        session.close()


def run(images: dict[str, str], exp: Exporter, image: str, aws: AwsServer, workdir: Path, *,
        endpoint: str | None = None, mounts: dict[Path, str] | None = None) -> Container:
    """`exp` from the default image with its binary as the command (as the chart runs
    it), or from its own image through the entrypoint; the standard AWS environment
    points at the test server (or `endpoint`)."""
    config_file = workdir / "config.yml"
    config_file.write_text(yaml.safe_dump(config(profile(exp))))
    config_file.chmod(0o644)  # as a ConfigMap's files are
    env = {k: v for k, v in aws_env(aws).items() if k.startswith("AWS_")}
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    return Container(
        images[image],
        [f"--config.file={CONFIG}", "--log.level=info", "--log.format=logfmt"],
        workdir,
        entrypoint=[f"/usr/local/bin/{exp.binary}"] if image == DEFAULT else None,
        env=env,
        mounts={config_file: CONFIG, **(mounts or {})},
    )


@pytest.mark.parametrize("image", ["default", "own"])
@pytest.mark.parametrize("exp", EXPORTERS, ids=str)
def test_each_exporter_runs_from_the_image_as_the_nonroot_user(images, aws: AwsServer, tmp_path, exp, image):
    """Starts (every shared library there), counts what the test server holds, is ready,
    runs as 65532 from /usr/local/bin without writing anywhere, and stops on SIGTERM
    as PID 1 with exit code 0."""
    p = profile(exp)
    p.seed(aws, ACCOUNT_A, 3)
    c = run(images, exp, DEFAULT if image == "default" else stage(exp), aws, tmp_path)
    try:
        c.wait_ready()
        assert usage(c, p) == 3, c.logs()
        proc = c.process()
        assert proc["exe"] == f"/usr/local/bin/{exp.binary}"
        assert proc["Uid"].split() == [NONROOT] * 4, f"the exporter runs as uid {proc['Uid']}"
        assert proc["Gid"].split() == [NONROOT] * 4, f"the exporter runs as gid {proc['Gid']}"
        assert proc["CapEff"] == "0000000000000000"
    finally:
        code = c.stop()
    assert code == 0, f"exit code {code} after SIGTERM: {c.logs()}"


@pytest.mark.parametrize("image", [DEFAULT, *(stage(e) for e in EXPORTERS)])
def test_the_built_image_runs_as_nonroot_with_its_ports_and_command(images, image):
    cfg = image_build.inspect_image(images[image])["Config"]
    assert cfg["User"] == f"{NONROOT}:{NONROOT}"
    ports = {f"{e.default_port}/tcp" for e in EXPORTERS}
    if image == DEFAULT:
        assert set(cfg["ExposedPorts"]) == ports
        assert not cfg.get("Entrypoint") and cfg["Cmd"] == [f"/usr/local/bin/{EXPORTERS[0].binary}"]
    else:
        exp = next(e for e in EXPORTERS if stage(e) == image)
        assert set(cfg["ExposedPorts"]) == {f"{exp.default_port}/tcp"}
        assert cfg["Entrypoint"] == [f"/usr/local/bin/{exp.binary}"]


def test_the_image_holds_the_ca_certificates_aws_endpoints_chain_to(images):
    """The CA bundle where the TLS stack reads it (rustls-native-certs: $SSL_CERT_FILE,
    else openssl-probe's first candidate, this same file), readable by everyone, with
    the roots AWS's endpoints chain to."""
    with image_build.mounted(images[DEFAULT]) as root:
        bundle = image_build.resolve(root, CA_BUNDLE)
        assert bundle.is_file(), f"{CA_BUNDLE} is not in the image"
        assert bundle.stat().st_mode & 0o004, f"{CA_BUNDLE} is not readable by user {NONROOT}"
        for parent in bundle.relative_to(root).parents:
            assert (root / parent).stat().st_mode & 0o001, f"/{parent} is not searchable by user {NONROOT}"
        with warnings.catch_warnings():
            # Some roots of Mozilla's list have a negative serial number, which
            # cryptography warns about; rustls does not mind.
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            certs = x509.load_pem_x509_certificates(bundle.read_bytes())
    names = {a.value for c in certs for a in c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
    assert len(certs) > 100, f"{CA_BUNDLE} holds {len(certs)} certificates"
    # AWS's endpoints present Amazon Trust Services certificates, which chain to Amazon
    # Root CA 1 (or, cross-signed, to Starfield Services Root Certificate Authority - G2).
    assert {"Amazon Root CA 1", "Starfield Services Root Certificate Authority - G2"} <= names


def test_https_from_the_image_verifies_with_the_ca_bundle_at_its_path(images, aws: AwsServer, tmp_path):
    """An HTTPS call to AWS from the image, with the TLS stack as built (rustls with
    aws-lc, native roots), verifies the server against the CA bundle at its path: with a
    test CA mounted there, the exporter reaches an HTTPS endpoint whose certificate that
    CA signed and counts as over plain HTTP."""
    exp = EXPORTERS[0]
    p = profile(exp)
    p.seed(aws, ACCOUNT_A, 2)
    with TlsProxy(aws.url, tmp_path) as proxy:
        c = run(images, exp, DEFAULT, aws, tmp_path, endpoint=proxy.url, mounts={proxy.ca_file: CA_BUNDLE})
        try:
            c.wait_ready()
            assert usage(c, p) == 2, c.logs()
            assert proxy.connections > 0
        finally:
            c.stop()


class TlsProxy:
    """HTTPS in front of the test server, with a certificate for 127.0.0.1 from a CA of
    its own (`ca_file`)."""

    def __init__(self, upstream: str, workdir: Path) -> None:
        host, port = upstream.removeprefix("http://").rstrip("/").rsplit(":", 1)
        self.upstream = (host, int(port))
        self.ca_file, cert_file, key_file = workdir / "ca.pem", workdir / "server.pem", workdir / "server.key"
        write_test_pki(self.ca_file, cert_file, key_file)
        self.ca_file.chmod(0o644)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert_file, key_file)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.server.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError):
            conn.close()
            return
        self.connections += 1
        up = socket.create_connection(self.upstream)
        try:
            while True:
                ready, _, _ = select.select([tls, up], [], [], 60)
                if not ready:
                    return
                for s in ready:
                    data = s.recv(65536)
                    # Decrypted bytes may wait in the TLS layer, where select cannot see them.
                    while s is tls and data and tls.pending():
                        data += tls.recv(tls.pending())
                    if not data:
                        return
                    (up if s is tls else tls).sendall(data)
        except OSError:
            return
        finally:
            up.close()
            tls.close()

    def __enter__(self) -> "TlsProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.server.close()


def write_test_pki(ca_file: Path, cert_file: Path, key_file: Path) -> None:
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = {"not_valid_before": now - datetime.timedelta(minutes=5), "not_valid_after": now + datetime.timedelta(days=1)}
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "headroom test CA")])
    ca = (
        x509.CertificateBuilder(subject_name=ca_name, issuer_name=ca_name, public_key=ca_key.public_key(), serial_number=x509.random_serial_number(), **valid)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder(subject_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), issuer_name=ca_name,
                                public_key=key.public_key(), serial_number=x509.random_serial_number(), **valid)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
