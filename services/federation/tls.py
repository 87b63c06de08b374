"""A local certificate authority and a SuperLink certificate, for loopback federations.

Flower's SuperLink serves its Fleet and Control APIs over TLS with a certificate; sites
verify it against a CA they were given. Production federations use their organisation's
CA; the demo and the tests make a throwaway one with the platform's
:mod:`services.common.certificates` (``cryptography`` only, which Flower itself depends
on), so that a federation on this machine runs with TLS as a real one would.
"""

from __future__ import annotations

from pathlib import Path

from services.common.certificates import issue_local_certificates
from services.federation.runtime import Certificates


def local_certificates(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Certificates:
    """A CA and a server certificate for ``hosts`` (IP addresses or DNS names), in ``directory``."""
    files = issue_local_certificates(
        directory, hosts, name="superlink", ca_name="mlops federation local CA", keep_ca=False
    )
    return Certificates(ca=files.ca, certificate=files.certificate, key=files.key)
