"""Access across the platform, against real services: a revoked token is refused by every
service within seconds; a single sign-on token from the test's own identity provider is
admitted with the teams its groups map to, one from an unknown issuer is not; rotating
the signing key keeps tokens of the previous key valid while it is still trusted."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import httpx
import jwt
import pytest

from services.common.auth import Scope, SigningKey, TokenIssuer, bearer_metadata, jwks_json
from services.common.clients.access import AccessClient
from services.common.clients.datasets import DatasetClient
from services.common.clients.registry import RegistryClient
from services.common.errors import Kind, NotFound, PermissionDenied, PlatformError, Unauthenticated
from services.common.proto.inference import grpc_service_pb2 as oip
from services.common.proto.inference import grpc_service_pb2_grpc as oip_grpc
from services.ingest.app import IngestApp
from services.ingest.settings import IngestSettings
from services.monitor.app import MonitorApp
from services.monitor.settings import MonitorSettings
from services.registry.app import RegistryApp
from services.serving.app import ServingApp
from services.serving.settings import ServingSettings
from tests.conftest import Infra
from tests.helpers.apps import app_settings, registry_settings, started

REVOKED_WITHIN = 10.0


async def refused(call: Callable[[], Awaitable[Any]]) -> bool:
    """Whether the call is refused for its token (gRPC UNAUTHENTICATED, raised by a shared
    client as the platform error, or HTTP 401)."""
    try:
        answer = await call()
    except Unauthenticated:
        return True
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            return True
        raise
    return isinstance(answer, httpx.Response) and answer.status_code == 401


async def accepted(call: Callable[[], Awaitable[Any]]) -> None:
    answer = await call()
    if isinstance(answer, httpx.Response):
        assert answer.status_code == 200, answer.text


async def test_a_revoked_token_is_refused_by_every_service_within_seconds(infra: Infra, unique: str) -> None:
    async with AsyncExitStack() as running:
        registry = await running.enter_async_context(started(RegistryApp(registry_settings(infra, unique))))
        address = f"127.0.0.1:{registry.grpc_port}"
        ingest = await running.enter_async_context(
            started(IngestApp(app_settings(IngestSettings, infra, unique, registry_address=address)))
        )
        serving = await running.enter_async_context(
            started(ServingApp(app_settings(ServingSettings, infra, unique, registry_address=address)))
        )
        monitor = await running.enter_async_context(
            started(
                MonitorApp(
                    app_settings(
                        MonitorSettings, infra, unique, registry_address=address, training_reference=False
                    )
                )
            )
        )
        admin = await running.enter_async_context(AccessClient(address, lambda: infra.token(Scope.ADMIN)))
        created = await admin.create_token("app:everywhere", ["read", "predict"])
        token = created.token
        http = await running.enter_async_context(httpx.AsyncClient(timeout=10))
        reader = await running.enter_async_context(RegistryClient(address, lambda: token))
        datasets = await running.enter_async_context(
            DatasetClient(f"127.0.0.1:{ingest.grpc_port}", lambda: token)
        )
        channel = await running.enter_async_context(
            grpc.aio.insecure_channel(f"127.0.0.1:{serving.grpc_port}")
        )
        inference = oip_grpc.GRPCInferenceServiceStub(channel)
        headers = {"authorization": f"Bearer {token}"}
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "registry grpc": lambda: reader.list_models(),
            "registry http": lambda: http.get(
                f"http://127.0.0.1:{registry.http_port}/v1/models", headers=headers
            ),
            "ingest grpc": lambda: datasets.list_schemas(),
            "ingest http": lambda: http.get(
                f"http://127.0.0.1:{ingest.http_port}/v1/datasets", headers=headers
            ),
            "serving grpc": lambda: inference.ServerMetadata(
                oip.ServerMetadataRequest(), metadata=bearer_metadata(token), timeout=5
            ),
            "serving http": lambda: http.get(f"http://127.0.0.1:{serving.http_port}/v2", headers=headers),
            "monitor http": lambda: http.get(
                f"http://127.0.0.1:{monitor.http_port}/v1/status", headers=headers
            ),
        }
        for call in calls.values():
            await accepted(call)

        revoked_at = time.monotonic()
        await admin.revoke_token(created.info.id, "leaked in a log")
        took: dict[str, float] = {}
        async with asyncio.timeout(REVOKED_WITHIN + 5):
            while len(took) < len(calls):
                for where, call in calls.items():
                    if where not in took and await refused(call):
                        took[where] = time.monotonic() - revoked_at
                await asyncio.sleep(0.1)
        assert max(took.values()) <= REVOKED_WITHIN, took
        # The trainer's HTTP port serves health and metrics only: no token is checked there.


class IdentityProvider:
    """An OpenID Connect provider's signing side: its key, its JWKS over HTTP on a free port."""

    issuer = "https://idp.example.test"

    def __init__(self) -> None:
        self.key = SigningKey.generate("ES256", kid="idp-2026")
        self.jwks_fetches = 0
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.jwks_fetches += 1
                body = jwks_json([provider.key]).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.jwks_url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks"

    def token(
        self, subject: str, groups: list[str], *, issuer: str = "", key: SigningKey | None = None
    ) -> str:
        now = int(time.time())
        signer = key or self.key
        claims = {
            "iss": issuer or self.issuer,
            "aud": "mlops-platform",
            "sub": subject,
            "groups": groups,
            "iat": now,
            "exp": now + 300,
        }
        return jwt.encode(claims, signer.key, algorithm=signer.algorithm, headers={"kid": signer.kid})


@contextmanager
def identity_provider() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    thread = threading.Thread(target=provider.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        provider.server.shutdown()
        provider.server.server_close()


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    with identity_provider() as provider:
        yield provider


@pytest.fixture
async def sso_registry(infra: Infra, unique: str, idp: IdentityProvider) -> AsyncIterator[RegistryApp]:
    settings = registry_settings(
        infra,
        unique,
        oidc_issuer=idp.issuer,
        oidc_audience="mlops-platform",
        oidc_jwks_url=idp.jwks_url,
        oidc_group_grants={
            "ml-alpha": {"team": "alpha", "scopes": ["read", "write"]},
            "ml-admins": {"scopes": ["admin"]},
        },
    )
    async with started(RegistryApp(settings)) as registry:
        yield registry


async def test_a_single_sign_on_token_is_admitted_with_the_teams_its_groups_map_to(
    infra: Infra, sso_registry: RegistryApp, idp: IdentityProvider
) -> None:
    address = f"127.0.0.1:{sso_registry.grpc_port}"
    async with AccessClient(address, lambda: idp.token("ops@example.test", ["ml-admins"])) as sso_admin:
        await sso_admin.create_team("alpha")
        await sso_admin.create_team("beta")
    async with RegistryClient(address, lambda: infra.token(Scope.ADMIN)) as admin:
        await admin.create_model("beta-model", team="beta")
    alice = idp.token("alice@example.test", ["ml-alpha", "sales"])
    async with RegistryClient(address, lambda: alice) as client:
        made = await client.create_model("alice-model")
        assert (made.team, made.created_by) == ("alpha", "alice@example.test")
        assert {m.name for m in await client.list_models()} == {"alice-model"}
        with pytest.raises(NotFound):
            await client.get_model("beta-model")
    assert idp.jwks_fetches == 1, "the provider's keys are fetched once and cached"

    refusals = {
        "unknown issuer": (
            idp.token("mallory", ["ml-admins"], issuer="https://evil.example.test"),
            "not trusted",
        ),
        "unknown key": (
            idp.token("mallory", ["ml-admins"], key=SigningKey.generate("ES256", kid="other")),
            "signing key",
        ),
        "no mapped group": (idp.token("bob@example.test", ["sales"]), "none of its groups"),
    }
    for case, (token, message) in refusals.items():
        async with RegistryClient(address, lambda token=token: token) as client:  # type: ignore[misc]
            with pytest.raises(PlatformError) as refused_call:
                await client.list_models()
        assert message in refused_call.value.message, case
        expected = PermissionDenied if case == "no mapped group" else Unauthenticated
        assert type(refused_call.value) is expected, case


async def test_rotating_the_signing_key_keeps_the_previous_keys_tokens_valid_until_retired(
    infra: Infra, unique: str
) -> None:
    old, new = SigningKey.generate(), SigningKey.generate("ES256")

    def settings(signing: SigningKey, *trusted: SigningKey) -> Any:
        public = jwks_json([*trusted, infra.keys.service])
        return registry_settings(infra, unique, signing_key=signing.private_pem(), auth_public_keys=public)

    def admin(key: SigningKey) -> str:
        return TokenIssuer(key).mint("operator", [Scope.ADMIN], ttl_seconds=600).token

    async def list_with(registry: RegistryApp, token: str) -> Kind | None:
        """The kind of error listing models with ``token`` ends in, None when it works."""
        async with RegistryClient(f"127.0.0.1:{registry.grpc_port}", lambda: token) as client:
            try:
                await client.list_models()
            except PlatformError as exc:
                return exc.kind
        return None

    async def issue(registry: RegistryApp, operator: str) -> str:
        async with AccessClient(f"127.0.0.1:{registry.grpc_port}", lambda: operator) as access:
            return (await access.create_token("app:" + uuid.uuid4().hex[:6], ["read"], ttl_seconds=600)).token

    async with started(RegistryApp(settings(old, old))) as registry:
        before = await issue(registry, admin(old))
    assert jwt.get_unverified_header(before)["kid"] == old.kid

    # Step 1 of a rotation: every service trusts both keys, the registry signs with the new one.
    async with started(RegistryApp(settings(new, old, new))) as registry:
        assert await list_with(registry, before) is None
        after = await issue(registry, admin(old))
        assert jwt.get_unverified_header(after)["kid"] == new.kid
        assert await list_with(registry, after) is None

    # Step 2, once every token of the old key has expired: it is no longer trusted.
    async with started(RegistryApp(settings(new, new))) as registry:
        assert await list_with(registry, before) is Kind.UNAUTHENTICATED
        assert await list_with(registry, after) is None

    with pytest.raises(ValueError, match="REGISTRY_SIGNING_KEY"):
        await RegistryApp(settings(new, old)).start()


def test_jwks_is_the_shape_an_oidc_client_reads() -> None:
    document = json.loads(jwks_json([SigningKey.generate()]))
    assert set(document["keys"][0]) == {"kty", "crv", "x", "kid", "alg", "use"}
