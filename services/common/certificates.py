"""A private certificate authority and the certificates signed by it, for the local stack,
tests and loopback deployments (``mlops up --tls``).

Production uses the organisation's CA (cert-manager on Kubernetes, see docs/security.md);
this makes a throwaway one with ``cryptography`` so that everything on one machine runs
with TLS as it would there: one CA, one server certificate for the listed hosts (also
usable as a client certificate under mutual TLS). Keys are ECDSA P-256, written 0600.

Examples
--------
>>> import tempfile, ssl
>>> with tempfile.TemporaryDirectory() as directory:
...     files = issue_local_certificates(Path(directory), ("127.0.0.1", "localhost"))
...     context = ssl.create_default_context(cafile=str(files.ca))
...     context.load_cert_chain(files.certificate, files.key)
...     sorted(p.name for p in Path(directory).iterdir())
['ca.key', 'ca.pem', 'server.key', 'server.pem']
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 365


@dataclass(frozen=True)
class CertificateFiles:
    """Where a CA certificate and a certificate with its key are."""

    ca: Path
    certificate: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def _subject_names(hosts: tuple[str, ...]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        ca = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    if ca.not_valid_after_utc < datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1):
        return None
    return ca, key


def _new_ca(
    directory: Path, name: str, now: datetime.datetime, keep_key: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    if keep_key:
        _write_key(directory / "ca.key", key)
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return ca, key


def issue_local_certificates(
    directory: Path,
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
    *,
    name: str = "server",
    ca_name: str = "mlops local CA",
    keep_ca: bool = True,
) -> CertificateFiles:
    """A CA in ``directory`` and a fresh certificate ``<name>.pem``/``<name>.key`` for
    ``hosts`` (IP addresses or DNS names), good for servers and, under mutual TLS, clients.

    With ``keep_ca`` the CA's key is kept (``ca.key``) and a CA valid for another day is
    reused, so clients that trust it keep working across restarts; without, a new CA signs
    the certificate and its key is thrown away, so it can never sign anything else."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca, ca_key = (_load_ca(directory) if keep_ca else None) or _new_ca(directory, ca_name, now, keep_ca)
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(_subject_names(hosts)), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = CertificateFiles(
        ca=directory / "ca.pem", certificate=directory / f"{name}.pem", key=directory / f"{name}.key"
    )
    _write_key(files.key, key)
    files.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return files
