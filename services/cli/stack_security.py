"""The local stack's secrets and TLS material, kept in its working directory.

Keys are random, made on first use and kept (mode 0600) so a stack restarted on the same
directory reads what it stored: pseudonyms stay comparable, sessions survive, and artifacts
encrypted at rest stay readable. With ``mlops up --tls`` a private CA and one certificate
for the loopback addresses are made under ``<workdir>/tls/``; every service serves and
calls with them, and the CLI, the demo and the tests find the CA through ``stack.json``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from pathlib import Path

from services.common.certificates import CertificateFiles, issue_local_certificates
from services.common.settings import PlatformSettings
from services.common.tls import ClientTls, client_tls

ARTIFACT_KEY_ID = "local"
TLS_HOSTS = ("127.0.0.1", "localhost")


def persistent_key(path: Path) -> str:
    """A random key kept in ``path`` (mode 0600), made the first time it is asked for."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key


def artifact_keys(workdir: Path) -> str:
    """``REGISTRY_ARTIFACT_KEYS`` for the stack: one AES-256 key derived from a kept random secret."""
    secret = persistent_key(workdir / "artifact.key")
    key = hashlib.sha256(secret.encode()).digest()
    return json.dumps({ARTIFACT_KEY_ID: base64.b64encode(key).decode()})


def issue_tls(workdir: Path) -> CertificateFiles:
    """The stack's CA (kept across restarts) and a fresh certificate for the loopback addresses."""
    return issue_local_certificates(workdir / "tls", TLS_HOSTS, ca_name="mlops local stack CA")


def tls_env(files: CertificateFiles) -> dict[str, str]:
    """What every service needs to serve and call with TLS only."""
    return {
        "MLOPS_TLS": "true",
        "MLOPS_TLS_CERT_FILE": str(files.certificate.resolve()),
        "MLOPS_TLS_KEY_FILE": str(files.key.resolve()),
        "MLOPS_TLS_CA_FILE": str(files.ca.resolve()),
    }


def platform_tls(stack_ca: str = "") -> ClientTls | None:
    """TLS for a client of the platform (the CLI, the SDK): the ``MLOPS_TLS*`` variables
    when ``MLOPS_TLS`` is set, else the local stack's CA when it runs with TLS (``stack_ca``,
    from stack.json), else none (plaintext)."""
    settings = PlatformSettings()
    if settings.tls_enabled:
        return client_tls(settings)
    return ClientTls(ca_file=Path(stack_ca)) if stack_ca else None
