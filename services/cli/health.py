"""Health checks of the platform's components, shared by the local stack's start-up,
``mlops status`` and ``mlops probe``.

Container health checks run ``python -m services.cli.probe`` every few seconds, so this
module imports only what a check needs, and the heavy clients only inside the checks
that use them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from services.common.localstack import port_open

if TYPE_CHECKING:
    from services.common.tls import ClientTls


@dataclass(frozen=True)
class Health:
    component: str
    endpoint: str
    healthy: bool
    detail: str


def check_grpc_health(
    address: str, timeout: float = 1.0, service: str = "", tls: ClientTls | None = None
) -> tuple[bool, str]:
    """The standard gRPC health protocol: SERVING or why not (over TLS with ``tls``)."""
    import grpc
    from grpc_health.v1 import health_pb2

    from services.common.clients.health import health_stub

    host, _, port = address.rpartition(":")
    if not port_open(int(port), host or "127.0.0.1"):
        return False, "connection refused"
    from services.common.tls import sync_channel

    with sync_channel(address, tls) as channel:
        try:
            reply = health_stub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as exc:
            return False, f"{exc.code().name}: {exc.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, status


def check_http_health(url: str, timeout: float = 1.0, tls: ClientTls | None = None) -> tuple[bool, str]:
    """An HTTP readiness route: 200 or why not (the problems the service reports, when it
    does); an ``https`` URL is verified with ``tls``'s CA (the system's roots without)."""
    import httpx

    parsed = httpx.URL(url)
    if not port_open(parsed.port or (443 if parsed.scheme == "https" else 80), parsed.host):
        return False, "connection refused"
    try:
        response = httpx.get(url, timeout=timeout, verify=tls.ssl_context() if tls is not None else True)
    except httpx.HTTPError as exc:
        return False, type(exc).__name__
    detail = f"HTTP {response.status_code}"
    if response.status_code != 200:
        try:
            problems = response.json().get("problems") or []
        except (ValueError, AttributeError):
            problems = []
        if problems:
            detail += ": " + "; ".join(str(p) for p in problems)
    return response.status_code == 200, detail


def check_kafka(bootstrap: str, timeout: float = 3.0) -> tuple[bool, str]:
    """A metadata round trip with the broker, not just an open port."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def topics() -> int:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, client_id="mlops-status", request_timeout_ms=int(timeout * 1000)
        )
        await admin.start()
        try:
            return len(await admin.list_topics())
        finally:
            await admin.close()

    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if not port_open(int(port), host or "127.0.0.1"):
        return False, "connection refused"
    try:
        count = asyncio.run(asyncio.wait_for(topics(), timeout))
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return True, f"{count} topics"


def check_mongodb(uri: str, timeout: float = 3.0) -> tuple[bool, str]:
    """A ``ping`` command, not just an open port."""
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError
    from pymongo.uri_parser import parse_uri

    host, port = parse_uri(uri)["nodelist"][0]
    if not port_open(port, host):
        return False, "connection refused"
    client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=int(timeout * 1000))
    try:
        client.admin.command("ping")
        return True, f"MongoDB {client.server_info().get('version', '?')}"
    except PyMongoError as exc:
        return False, type(exc).__name__
    finally:
        client.close()
