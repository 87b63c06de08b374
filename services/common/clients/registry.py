"""Async client of the registry's gRPC API.

Usage::

    async with RegistryClient("127.0.0.1:50051", credentials) as registry:
        version, data = await registry.download_artifact("demo", alias="production")

``token`` is called before every call, so :class:`~services.common.auth.ServiceCredentials`
can renew it. Errors surface as :class:`~services.common.errors.PlatformError` of the
registry's kind (``NotFound``, ``Conflict`` for a lost compare-and-set,
``InvalidArgument`` naming the field ...). Artifacts stream both ways in chunks; a download is checked against its
SHA-256 and refused with :class:`~services.common.artifacts.DigestMismatch` on mismatch.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections.abc import AsyncIterator, Callable, Mapping

from services.common.artifacts import DigestMismatch, sha256_hex
from services.common.clients.base import GrpcClient
from services.common.errors import AlreadyExists
from services.common.proto.mlops.v1 import model_pb2, registry_pb2, registry_pb2_grpc
from services.common.tls import ClientTls

Model = registry_pb2.Model
ModelVersion = registry_pb2.ModelVersion
VersionMetadata = registry_pb2.VersionMetadata
AUTO = registry_pb2.PROMOTION_POLICY_AUTO
MANUAL = registry_pb2.PROMOTION_POLICY_MANUAL

DEFAULT_CHUNK_BYTES = 1024 * 1024
MAX_MESSAGE_BYTES = 32 * 1024 * 1024

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""What the registry accepts as a model name (``MODEL_NAME.fullmatch(name)``)."""

_METRIC_FILTER = re.compile(r"([A-Za-z0-9][A-Za-z0-9._:/-]{0,127})\s*(<=|>=|==|=|<|>)\s*(\S+)")
_COMPARISONS = {
    "<": registry_pb2.COMPARISON_LT,
    "<=": registry_pb2.COMPARISON_LE,
    ">": registry_pb2.COMPARISON_GT,
    ">=": registry_pb2.COMPARISON_GE,
    "=": registry_pb2.COMPARISON_EQ,
    "==": registry_pb2.COMPARISON_EQ,
}


def parse_metric_filter(text: str) -> registry_pb2.MetricFilter:
    """A search's metric condition written ``NAME OP NUMBER`` (``accuracy>=0.9``), as the
    CLI and the REST API take it; ``ValueError`` unless NUMBER is finite."""
    match = _METRIC_FILTER.fullmatch(text.strip())
    try:
        number = float(match.group(3)) if match else math.nan
    except ValueError:
        number = math.nan
    if match is None or not math.isfinite(number):
        raise ValueError(f"expected NAME OP NUMBER with OP one of < <= > >= ==, got {text[:64]!r}")
    return registry_pb2.MetricFilter(name=match.group(1), op=_COMPARISONS[match.group(2)], value=number)


def gate_margin(gate: model_pb2.GateResult) -> float:
    """How far the gate's value lies on the passing side of its threshold: positive by how
    much it passed, negative by how much it failed.

    Gates point both ways (a floor on the holdout metric and on the gain over production,
    a ceiling on drops and gaps); the margin reads the same for all of them.
    """
    distance = abs(gate.value - gate.threshold)
    return distance if gate.passed else -distance


class RegistryClient(GrpcClient):
    """Typed calls to ``mlops.v1.RegistryService``; one channel per client."""

    def __init__(
        self,
        address: str,
        token: Callable[[], str],
        *,
        timeout: float = 30.0,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        tls: ClientTls | None = None,
    ):
        super().__init__(address, token, max_message_bytes=MAX_MESSAGE_BYTES, tls=tls)
        self._registry = self._stub(registry_pb2_grpc.RegistryServiceStub)
        self._timeout = timeout
        self._chunk_bytes = chunk_bytes

    # ------------------------------------------------------------------ models

    async def create_model(
        self,
        name: str,
        description: str = "",
        policy: registry_pb2.PromotionPolicy.ValueType = AUTO,
        tags: Mapping[str, str] | None = None,
        exist_ok: bool = False,
        *,
        team: str = "",
        request_id: str | None = None,
    ) -> Model:
        """Create a model of ``team`` (empty: the caller's only team, else the default team);
        with ``exist_ok`` an existing model of that name is returned as is."""
        request = registry_pb2.CreateModelRequest(
            name=name, description=description, tags=dict(tags or {}), promotion_policy=policy, team=team
        )
        try:
            return await self._registry.CreateModel(
                request, metadata=self._metadata(request_id), timeout=self._timeout
            )
        except AlreadyExists:
            if exist_ok:
                return await self.get_model(name)
            raise

    async def update_model(
        self,
        name: str,
        *,
        description: str | None = None,
        set_tags: Mapping[str, str] | None = None,
        remove_tags: list[str] | None = None,
        policy: registry_pb2.PromotionPolicy.ValueType = registry_pb2.PROMOTION_POLICY_UNSPECIFIED,
        request_id: str | None = None,
    ) -> Model:
        request = registry_pb2.UpdateModelRequest(
            name=name, set_tags=dict(set_tags or {}), remove_tags=remove_tags or [], promotion_policy=policy
        )
        if description is not None:
            request.description = description
        return await self._registry.UpdateModel(
            request, metadata=self._metadata(request_id), timeout=self._timeout
        )

    async def get_model(self, name: str) -> Model:
        return await self._registry.GetModel(
            registry_pb2.GetModelRequest(name=name), metadata=self._metadata(None), timeout=self._timeout
        )

    async def list_models(
        self,
        alias: str = "",
        *,
        name_contains: str = "",
        tags: Mapping[str, str] | None = None,
        team: str = "",
    ) -> list[Model]:
        """Every model the caller sees (all pages), optionally only those with ``alias`` set
        or of ``team``."""
        models: list[Model] = []
        token = ""
        while True:
            response = await self._registry.ListModels(
                registry_pb2.ListModelsRequest(
                    alias=alias,
                    name_contains=name_contains,
                    tags=dict(tags or {}),
                    team=team,
                    page_token=token,
                ),
                metadata=self._metadata(None),
                timeout=self._timeout,
            )
            models += response.models
            token = response.next_page_token
            if not token:
                return models

    # ---------------------------------------------------------------- versions

    async def create_version(
        self, metadata: VersionMetadata, artifact: bytes, *, request_id: str | None = None
    ) -> ModelVersion:
        """Register a version, streaming ``artifact`` up in chunks.

        ``metadata.artifact.sha256`` and ``size_bytes`` are filled in from ``artifact`` when
        left empty; ``metadata.artifact.format`` (the artifact's flavor: ``skops``, ``xgboost`` ...)
        must be set.
        """
        declared = VersionMetadata()
        declared.CopyFrom(metadata)
        if not declared.artifact.sha256:
            declared.artifact.sha256 = sha256_hex(artifact)
        if not declared.artifact.size_bytes:
            declared.artifact.size_bytes = len(artifact)

        async def messages() -> AsyncIterator[registry_pb2.CreateModelVersionRequest]:
            yield registry_pb2.CreateModelVersionRequest(metadata=declared)
            view = memoryview(artifact)
            for start in range(0, len(artifact), self._chunk_bytes):
                yield registry_pb2.CreateModelVersionRequest(
                    chunk=bytes(view[start : start + self._chunk_bytes])
                )

        return await self._registry.CreateModelVersion(
            messages(), metadata=self._metadata(request_id), timeout=max(self._timeout, 300.0)
        )

    async def get_version(self, name: str, version: int = 0, alias: str = "") -> ModelVersion:
        """By number, or by alias when ``version`` is 0."""
        return await self._registry.GetModelVersion(
            registry_pb2.GetModelVersionRequest(model_name=name, version=version, alias=alias),
            metadata=self._metadata(None),
            timeout=self._timeout,
        )

    async def list_versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name``, newest first."""
        versions: list[ModelVersion] = []
        token = ""
        while True:
            response = await self._registry.ListModelVersions(
                registry_pb2.ListModelVersionsRequest(model_name=name, page_token=token),
                metadata=self._metadata(None),
                timeout=self._timeout,
            )
            versions += response.versions
            token = response.next_page_token
            if not token:
                return versions

    async def search_versions(self, request: registry_pb2.SearchModelVersionsRequest) -> list[ModelVersion]:
        """Every version matching ``request`` (all pages)."""
        versions: list[ModelVersion] = []
        query = registry_pb2.SearchModelVersionsRequest()
        query.CopyFrom(request)
        while True:
            response = await self._registry.SearchModelVersions(
                query, metadata=self._metadata(None), timeout=self._timeout
            )
            versions += response.versions
            query.page_token = response.next_page_token
            if not query.page_token:
                return versions

    async def download_artifact(
        self, name: str, version: int = 0, alias: str = ""
    ) -> tuple[ModelVersion, bytes]:
        """The version (by number, or by alias when ``version`` is 0) and its artifact's
        bytes, verified against the version's SHA-256 and size."""
        resolved = await self.get_version(name, version, alias)
        # Download the number resolved above, so a concurrent alias move cannot pair this
        # version's metadata with another version's bytes.
        call = self._registry.DownloadArtifact(
            registry_pb2.DownloadArtifactRequest(model_name=name, version=resolved.version),
            metadata=self._metadata(None),
            timeout=max(self._timeout, 300.0),
        )
        digest = hashlib.sha256()
        parts: list[bytes] = []
        async for chunk in call:
            digest.update(chunk.data)
            parts.append(chunk.data)
        data = b"".join(parts)
        if not hmac.compare_digest(digest.hexdigest(), resolved.artifact.sha256):
            raise DigestMismatch(resolved.artifact.sha256, digest.hexdigest())
        if len(data) != resolved.artifact.size_bytes:
            raise DigestMismatch(resolved.artifact.sha256, f"{digest.hexdigest()} ({len(data)} bytes)")
        return resolved, data

    # ----------------------------------------------------------------- aliases

    async def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        expected_version: int = 0,
        reason: str = "",
        *,
        request_id: str | None = None,
    ) -> Model:
        """Point ``alias`` at ``version``. ``expected_version``: 0 unconditionally, -1 only if
        the alias is unset, N only if it points at N (otherwise ABORTED, nothing changed)."""
        return await self._registry.SetAlias(
            registry_pb2.SetAliasRequest(
                model_name=name,
                alias=alias,
                version=version,
                expected_version=expected_version,
                reason=reason,
            ),
            metadata=self._metadata(request_id),
            timeout=self._timeout,
        )

    async def delete_alias(
        self, name: str, alias: str, expected_version: int = 0, *, request_id: str | None = None
    ) -> Model:
        return await self._registry.DeleteAlias(
            registry_pb2.DeleteAliasRequest(model_name=name, alias=alias, expected_version=expected_version),
            metadata=self._metadata(request_id),
            timeout=self._timeout,
        )

    async def rollback(
        self,
        name: str,
        alias: str = "production",
        expected_version: int = 0,
        reason: str = "",
        *,
        request_id: str | None = None,
    ) -> registry_pb2.RollbackResponse:
        return await self._registry.Rollback(
            registry_pb2.RollbackRequest(
                model_name=name, alias=alias, expected_version=expected_version, reason=reason
            ),
            metadata=self._metadata(request_id),
            timeout=self._timeout,
        )

    async def alias_history(
        self, name: str, alias: str = "", limit: int = 100
    ) -> list[registry_pb2.AliasChange]:
        """The latest ``limit`` alias changes of ``name``, newest first."""
        response = await self._registry.ListAliasHistory(
            registry_pb2.ListAliasHistoryRequest(model_name=name, alias=alias, page_size=limit),
            metadata=self._metadata(None),
            timeout=self._timeout,
        )
        return list(response.changes)

    # -------------------------------------------------------- approvals, archive

    async def approve(
        self, name: str, version: int, comment: str = "", *, request_id: str | None = None
    ) -> ModelVersion:
        return await self._registry.ApproveVersion(
            registry_pb2.ReviewVersionRequest(model_name=name, version=version, comment=comment),
            metadata=self._metadata(request_id),
            timeout=self._timeout,
        )

    async def reject(
        self, name: str, version: int, comment: str, *, request_id: str | None = None
    ) -> ModelVersion:
        return await self._registry.RejectVersion(
            registry_pb2.ReviewVersionRequest(model_name=name, version=version, comment=comment),
            metadata=self._metadata(request_id),
            timeout=self._timeout,
        )

    async def archive(
        self, name: str, version: int, reason: str = "", *, request_id: str | None = None
    ) -> ModelVersion:
        return await self._registry.ArchiveVersion(
            registry_pb2.ArchiveVersionRequest(model_name=name, version=version, reason=reason),
            metadata=self._metadata(request_id),
            timeout=self._timeout,
        )

    async def lineage(self, name: str, version: int = 0, alias: str = "") -> registry_pb2.LineageResponse:
        return await self._registry.GetLineage(
            registry_pb2.GetLineageRequest(model_name=name, version=version, alias=alias),
            metadata=self._metadata(None),
            timeout=self._timeout,
        )

    # ------------------------------------------------------------------- specs

    async def put_spec(
        self, spec: model_pb2.ModelSpec, *, request_id: str | None = None
    ) -> model_pb2.ModelSpec:
        """Store ``spec`` as the model's next spec version; returns it with ``spec_version`` set."""
        return await self._registry.PutModelSpec(
            registry_pb2.PutModelSpecRequest(spec=spec),
            metadata=self._metadata(request_id),
            timeout=self._timeout,
        )

    async def get_spec(self, name: str, spec_version: int = 0) -> model_pb2.ModelSpec:
        """A spec by version, or the latest when ``spec_version`` is 0."""
        return await self._registry.GetModelSpec(
            registry_pb2.GetModelSpecRequest(model_name=name, spec_version=spec_version),
            metadata=self._metadata(None),
            timeout=self._timeout,
        )

    async def list_specs(self, name: str) -> list[model_pb2.ModelSpec]:
        specs: list[model_pb2.ModelSpec] = []
        token = ""
        while True:
            response = await self._registry.ListModelSpecs(
                registry_pb2.ListModelSpecsRequest(model_name=name, page_token=token),
                metadata=self._metadata(None),
                timeout=self._timeout,
            )
            specs += response.specs
            token = response.next_page_token
            if not token:
                return specs

    # ------------------------------------------------------------------- audit

    async def audit_log(
        self, request: registry_pb2.ListAuditRecordsRequest | None = None
    ) -> registry_pb2.ListAuditRecordsResponse:
        """One page of the audit log (newest first); needs the admin scope."""
        return await self._registry.ListAuditRecords(
            request or registry_pb2.ListAuditRecordsRequest(),
            metadata=self._metadata(None),
            timeout=self._timeout,
        )
