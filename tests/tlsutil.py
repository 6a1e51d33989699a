"""For the TLS tests: certificates made on the spot with `cryptography` (certificate
authorities, server certificates for 127.0.0.1 and localhost, client certificates), and
a TLS client that tells what was negotiated.

    ca = CertificateAuthority("test CA")
    server = ca.issue("exporter", server=True)
    server.write(tmp_path / "tls.crt", tmp_path / "tls.key")
    status, body, version = tls_get(port, ssl.create_default_context(cafile=...))
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return builder.not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _pem_key(self.key)

    @property
    def serial(self) -> int:
        return self.cert.serial_number

    def write(self, cert_path: Path, key_path: Path) -> tuple[Path, Path]:
        """Writes the files by renaming a complete file over each, as cert-manager's
        kubelet volume update and `mv` do: a reader sees the old file or the new one."""
        for path, data in ((cert_path, self.cert_pem), (key_path, self.key_pem)):
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return cert_path, key_path


class CertificateAuthority:
    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (
            _validity(x509.CertificateBuilder())
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
        )
        self.cert = builder.sign(self.key, hashes.SHA256())

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, path: Path) -> Path:
        path.write_bytes(self.cert_pem)
        return path

    def issue(self, name: str, server: bool = False, client: bool = False, dns: tuple[str, ...] = ()) -> Issued:
        """A leaf certificate; a server one is valid for 127.0.0.1, localhost and `dns`."""
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            _validity(x509.CertificateBuilder())
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName(d) for d in ("localhost", *dns)] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return Issued(builder.sign(self.key, hashes.SHA256()), key)


def tls_get(port: int, ctx: ssl.SSLContext, path: str = "/metrics", host: str = "localhost") -> tuple[int, str, str]:
    """One HTTP/1.1 request to 127.0.0.1:port over a fresh TLS connection, the server's
    certificate checked for `host`: status, body, TLS version."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            version = s.version()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(errors="replace"), version
