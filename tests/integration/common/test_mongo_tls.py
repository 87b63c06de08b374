"""The MongoDB TLS settings (``MLOPS_MONGODB_TLS_CA_FILE``,
``MLOPS_MONGODB_TLS_CERTIFICATE_KEY_FILE``) against a real MongoDB-wire server that accepts
TLS only, and then only clients with a certificate (SecantusDB's --tls-* options)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo.errors import PyMongoError

from services.common.certificates import CertificateFiles, issue_local_certificates
from services.common.localstack import ManagedProcess, free_port, start_mongo
from services.common.mongo import create_client
from services.common.settings import ServiceSettings
from tests.helpers.keys import KEYS


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> CertificateFiles:
    return issue_local_certificates(tmp_path_factory.mktemp("mongo-pki"))


def settings(port: int, ca: Path | None = None, client: Path | None = None) -> ServiceSettings:
    return ServiceSettings(
        **KEYS.settings(),
        mongodb_uri=f"mongodb://127.0.0.1:{port}",
        mongodb_tls_ca_file=ca,
        mongodb_tls_certificate_key_file=client,
    )


async def ping(settings: ServiceSettings) -> bool:
    client = create_client(settings, "test")
    try:
        await client.admin.command("ping", maxTimeMS=2000)
        return True
    except PyMongoError:
        return False
    finally:
        await client.close()


@pytest.fixture
def database(pki: CertificateFiles, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[int]:
    port = free_port()
    require_client_certificate: bool = request.param
    process: ManagedProcess = start_mongo(
        port,
        log_path=tmp_path / "mongodb.log",
        tls=(pki.certificate, pki.key),
        client_ca=pki.ca if require_client_certificate else None,
    )
    try:
        yield port
    finally:
        process.stop()


@pytest.mark.parametrize("database", [False], indirect=True)
async def test_tls_with_the_ca_and_plaintext_refused(database: int, pki: CertificateFiles) -> None:
    assert await ping(settings(database, ca=pki.ca))
    assert not await ping(settings(database))


@pytest.fixture
def client_pem(pki: CertificateFiles, tmp_path: Path) -> Path:
    """The certificate and its key in one file, as MongoDB's tlsCertificateKeyFile wants."""
    pem = tmp_path / "client.pem"
    pem.write_bytes(pki.certificate.read_bytes() + pki.key.read_bytes())
    pem.chmod(0o600)
    return pem


@pytest.mark.parametrize("database", [True], indirect=True, ids=["client-certificate-required"])
async def test_a_client_certificate_when_the_server_requires_one(
    database: int, pki: CertificateFiles, client_pem: Path
) -> None:
    assert await ping(settings(database, ca=pki.ca, client=client_pem))
    assert not await ping(settings(database, ca=pki.ca))
