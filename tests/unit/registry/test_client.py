"""The client's own check: bytes that do not hash to the version's digest are refused,
whatever the server sends (a stand-in registry serves them over real gRPC here)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from services.common.artifacts import DigestMismatch, sha256_hex
from services.common.clients.registry import RegistryClient
from services.common.grpc_handlers import ServicerContext
from services.common.proto.mlops.v1 import registry_pb2, registry_pb2_grpc

GOOD = b"the artifact the registry recorded"


class StandInRegistry(registry_pb2_grpc.RegistryServiceServicer):
    """Records the version for ``GOOD`` but serves ``served`` for it."""

    def __init__(self, served: bytes):
        self.served = served
        self.tokens: list[str] = []

    async def GetModelVersion(
        self, request: registry_pb2.GetModelVersionRequest, context: ServicerContext
    ) -> registry_pb2.ModelVersion:
        token = dict(context.invocation_metadata() or ())["authorization"]
        assert isinstance(token, str)
        self.tokens.append(token)
        return registry_pb2.ModelVersion(
            model_name=request.model_name,
            version=4,
            artifact=registry_pb2.Artifact(sha256=sha256_hex(GOOD), size_bytes=len(GOOD), format="skops"),
        )

    async def DownloadArtifact(
        self, request: registry_pb2.DownloadArtifactRequest, context: ServicerContext
    ) -> AsyncIterator[registry_pb2.ArtifactChunk]:
        assert request.version == 4, "the client downloads the version it resolved, not the alias"
        for start in range(0, len(self.served), 5):
            yield registry_pb2.ArtifactChunk(data=self.served[start : start + 5], version=4)


async def serve(servicer: StandInRegistry) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    registry_pb2_grpc.add_RegistryServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest.mark.parametrize("served", [GOOD[:-1] + b"!", GOOD[:-3], GOOD + b"extra"])
async def test_download_refuses_bytes_that_do_not_match_the_digest(served: bytes) -> None:
    server, address = await serve(StandInRegistry(served))  # type: ignore[abstract]  # the rest answer UNIMPLEMENTED
    try:
        async with RegistryClient(address, lambda: "token") as client:
            with pytest.raises(DigestMismatch):
                await client.download_artifact("demo", alias="production")
    finally:
        await server.stop(None)


async def test_download_returns_matching_bytes_and_asks_for_a_fresh_token_per_call() -> None:
    servicer = StandInRegistry(GOOD)  # type: ignore[abstract]  # the rest answer UNIMPLEMENTED
    server, address = await serve(servicer)
    issued = iter(["t1", "t2", "t3"])
    try:
        async with RegistryClient(address, lambda: next(issued)) as client:
            version, data = await client.download_artifact("demo", alias="production")
            await client.get_version("demo", 4)
    finally:
        await server.stop(None)
    assert (version.version, data) == (4, GOOD)
    assert servicer.tokens == ["Bearer t1", "Bearer t3"]
