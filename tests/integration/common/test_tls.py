"""TLS on the shared gRPC and HTTP servers and clients: plaintext refused, the CA accepted,
mutual TLS enforced, and a renewed certificate served without a restart."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2

from services.common.certificates import CertificateFiles, issue_local_certificates
from services.common.clients.base import open_channel
from services.common.clients.health import health_stub
from services.common.grpc_server import GrpcServer
from services.common.http import HttpServer, create_app
from services.common.settings import PlatformSettings
from services.common.tls import ClientTls, ServerTls, TlsConfigError, client_tls, server_tls
from tests.helpers.waiting import eventually


@pytest.fixture
def certificates(tmp_path: Path) -> CertificateFiles:
    return issue_local_certificates(tmp_path / "pki")


async def health(address: str, tls: ClientTls | None) -> int:
    async with open_channel(address, tls=tls) as channel:
        stub = health_stub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return int(response.status)


@pytest.fixture
async def tls_server(certificates: CertificateFiles) -> AsyncIterator[str]:
    server = GrpcServer("127.0.0.1:0", tls=ServerTls(certificates.certificate, certificates.key))
    await server.start()
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        await server.stop(0)


async def test_grpc_over_tls_accepts_the_ca_and_refuses_plaintext(
    tls_server: str, certificates: CertificateFiles, tmp_path: Path
) -> None:
    assert (
        await health(tls_server, ClientTls(ca_file=certificates.ca)) == health_pb2.HealthCheckResponse.SERVING
    )
    with pytest.raises(grpc.aio.AioRpcError) as plaintext:
        await health(tls_server, None)
    assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE
    stranger = issue_local_certificates(tmp_path / "other-ca")
    with pytest.raises(grpc.aio.AioRpcError) as untrusted:
        await health(tls_server, ClientTls(ca_file=stranger.ca))
    assert untrusted.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_grpc_mutual_tls_requires_a_client_certificate(certificates: CertificateFiles) -> None:
    server = GrpcServer(
        "127.0.0.1:0", tls=ServerTls(certificates.certificate, certificates.key, client_ca=certificates.ca)
    )
    await server.start()
    address = f"127.0.0.1:{server.port}"
    try:
        with pytest.raises(grpc.aio.AioRpcError):
            await health(address, ClientTls(ca_file=certificates.ca))
        mutual = ClientTls(
            ca_file=certificates.ca, cert_file=certificates.certificate, key_file=certificates.key
        )
        assert await health(address, mutual) == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(0)


def replace_with(renewed: CertificateFiles, serving: CertificateFiles) -> None:
    """Renew the way cert-manager or an operator would: new files in place."""
    shutil.copyfile(renewed.certificate, serving.certificate)
    shutil.copyfile(renewed.key, serving.key)


async def test_grpc_serves_a_renewed_certificate_without_a_restart(
    tls_server: str, certificates: CertificateFiles, tmp_path: Path
) -> None:
    old_ca = ClientTls(ca_file=certificates.ca)
    assert await health(tls_server, old_ca) == health_pb2.HealthCheckResponse.SERVING
    renewed = issue_local_certificates(tmp_path / "new-ca")
    replace_with(renewed, certificates)
    # The next handshake presents the new certificate: clients of the new CA get in, the old CA's no longer.
    assert await health(tls_server, ClientTls(ca_file=renewed.ca)) == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError):
        await health(tls_server, old_ca)


async def test_http_over_tls_accepts_the_ca_refuses_plaintext_and_reloads(
    certificates: CertificateFiles, tmp_path: Path
) -> None:
    tls = ServerTls(certificates.certificate, certificates.key)
    server = HttpServer(create_app("t", "1"), "127.0.0.1", 0, tls=tls, reload_seconds=0.05)
    await server.start()
    url = f"https://127.0.0.1:{server.port}/health/live"
    try:
        async with httpx.AsyncClient(verify=ClientTls(ca_file=certificates.ca).ssl_context()) as client:
            assert (await client.get(url)).status_code == 200
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.HTTPError):
                await client.get(f"http://127.0.0.1:{server.port}/health/live")
        renewed = issue_local_certificates(tmp_path / "new-ca")
        replace_with(renewed, certificates)

        async def renewed_ca_accepted() -> bool:
            try:
                async with httpx.AsyncClient(verify=ClientTls(ca_file=renewed.ca).ssl_context()) as client:
                    return (await client.get(url)).status_code == 200
            except httpx.ConnectError:
                return False

        assert await eventually(renewed_ca_accepted, bool, within=10)
    finally:
        await server.stop()


def test_settings_missing_a_file_name_the_variable(certificates: CertificateFiles) -> None:
    assert server_tls(PlatformSettings()) is None and client_tls(PlatformSettings()) is None
    with pytest.raises(TlsConfigError, match="MLOPS_TLS_CERT_FILE"):
        server_tls(PlatformSettings(tls_enabled=True))
    with pytest.raises(TlsConfigError, match="MLOPS_TLS_CA_FILE"):
        server_tls(
            PlatformSettings(
                tls_enabled=True,
                tls_cert_file=certificates.certificate,
                tls_key_file=certificates.key,
                tls_client_auth=True,
            )
        )
    with pytest.raises(TlsConfigError, match="are not a certificate and its key"):
        ServerTls(certificates.ca, certificates.key)  # the CA's certificate with the server's key
    mutual = client_tls(
        PlatformSettings(
            tls_enabled=True,
            tls_ca_file=certificates.ca,
            tls_cert_file=certificates.certificate,
            tls_key_file=certificates.key,
            tls_client_auth=True,
        )
    )
    assert mutual == ClientTls(certificates.ca, certificates.certificate, certificates.key)


async def test_a_renewal_reaches_the_grpc_and_http_servers_sharing_one_certificate(
    certificates: CertificateFiles, tmp_path: Path
) -> None:
    """As in every service with both: one ServerTls, whichever server notices first."""
    tls = ServerTls(certificates.certificate, certificates.key)
    grpc_server = GrpcServer("127.0.0.1:0", tls=tls)
    http_server = HttpServer(create_app("t", "1"), "127.0.0.1", 0, tls=tls, reload_seconds=0.05)
    await grpc_server.start()
    await http_server.start()
    try:
        renewed = issue_local_certificates(tmp_path / "new-ca")
        replace_with(renewed, certificates)
        new_ca = ClientTls(ca_file=renewed.ca)
        address = f"127.0.0.1:{grpc_server.port}"
        assert await health(address, new_ca) == health_pb2.HealthCheckResponse.SERVING

        async def http_renewed() -> bool:
            try:
                async with httpx.AsyncClient(verify=new_ca.ssl_context()) as client:
                    url = f"https://127.0.0.1:{http_server.port}/health/live"
                    return (await client.get(url)).status_code == 200
            except httpx.ConnectError:
                return False

        assert await eventually(http_renewed, bool, within=10)
    finally:
        await http_server.stop()
        await grpc_server.stop(0)
