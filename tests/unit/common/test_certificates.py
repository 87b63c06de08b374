"""The private CA behind ``mlops up --tls``: kept across restarts so clients keep trusting
it, or thrown away; certificates that name their hosts; keys only the owner reads."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

from cryptography import x509

from services.common.certificates import issue_local_certificates


def names(path: Path) -> list[str]:
    certificate = x509.load_pem_x509_certificate(path.read_bytes())
    alternative = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(n) for n in alternative.get_values_for_type(x509.DNSName)] + [
        str(n) for n in alternative.get_values_for_type(x509.IPAddress)
    ]


def test_a_kept_ca_signs_the_next_certificate_too(tmp_path: Path) -> None:
    first = issue_local_certificates(tmp_path, ("127.0.0.1", "serving"))
    ca, certificate = first.ca.read_bytes(), first.certificate.read_bytes()
    second = issue_local_certificates(tmp_path, ("127.0.0.1", "serving"))
    assert second.ca.read_bytes() == ca  # clients given the CA once keep trusting the stack
    assert second.certificate.read_bytes() != certificate
    context = ssl.create_default_context(cafile=str(second.ca))
    context.load_cert_chain(second.certificate, second.key)
    assert sorted(names(second.certificate)) == sorted(["serving", str(ipaddress.ip_address("127.0.0.1"))])
    for key in (second.key, tmp_path / "ca.key"):
        assert key.stat().st_mode & 0o077 == 0, key


def test_a_throwaway_ca_leaves_no_key(tmp_path: Path) -> None:
    first = issue_local_certificates(tmp_path, keep_ca=False)
    ca = first.ca.read_bytes()
    assert not (tmp_path / "ca.key").exists()
    assert issue_local_certificates(tmp_path, keep_ca=False).ca.read_bytes() != ca
