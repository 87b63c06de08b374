"""Artifact downloads, by version number or by alias, verified while they stream."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from services.common.http_errors import problem_responses
from services.registry.registry import Actor, Registry
from services.registry.rest.deps import Reader, RegistryDep
from services.registry.rest.params import AliasName, ModelName, VersionNumber

ARTIFACT_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "description": "The artifact's bytes; `Repr-Digest` and `X-Artifact-Sha256` carry its SHA-256.",
    },
    **problem_responses({500: "The stored bytes no longer match their digest."}),
}

router = APIRouter()


async def _artifact(
    registry: Registry, actor: Actor, name: str, version: int = 0, alias: str = ""
) -> StreamingResponse:
    resolved, stream = await registry.download(actor, name, version, alias)
    iterator = aiter(stream)
    # Read the first chunk here, so that a missing or damaged file is a proper error
    # response rather than a broken stream.
    first = await anext(iterator, b"")

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for chunk in iterator:
            yield chunk

    digest = bytes.fromhex(resolved.artifact.sha256)
    return StreamingResponse(
        body(),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(resolved.artifact.size_bytes),
            "Repr-Digest": f"sha-256=:{base64.b64encode(digest).decode()}:",
            "X-Artifact-Sha256": resolved.artifact.sha256,
            "X-Artifact-Format": resolved.artifact.format,
            "X-Model-Version": str(resolved.version),
        },
    )


@router.get(
    "/models/{name}/versions/{version}/artifact",
    name="DownloadArtifact",
    response_class=StreamingResponse,
    responses=ARTIFACT_RESPONSE,
    tags=["versions"],
)
async def download(
    name: ModelName, version: VersionNumber, registry: RegistryDep, actor: Reader
) -> StreamingResponse:
    """The artifact's bytes, verified against its digest while they stream (a damaged
    file breaks the stream rather than delivering wrong bytes)."""
    return await _artifact(registry, actor, name, version)


@router.get(
    "/models/{name}/aliases/{alias}/artifact",
    name="DownloadArtifactByAlias",
    response_class=StreamingResponse,
    responses=ARTIFACT_RESPONSE,
    tags=["aliases"],
)
async def download_by_alias(
    name: ModelName, alias: AliasName, registry: RegistryDep, actor: Reader
) -> StreamingResponse:
    return await _artifact(registry, actor, name, alias=alias)
