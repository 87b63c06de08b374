"""``mlops.v1.RegistryService`` over gRPC: translate requests, call the registry, map errors.

Authentication and scopes are checked before a method runs (``AuthInterceptor`` with
:data:`METHOD_SCOPES`: the scope in some team), the resource's team by the use case;
each method here only translates. A platform error ends the call
with its kind's status code, and trailing metadata carrying the kind (two kinds can share
a code) and the field to fix, so clients rebuild the same error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC

from services.common.auth import (
    AuthError,
    DenialHook,
    MethodScopes,
    Scope,
    current_principal,
    current_request_id,
)
from services.common.grpc_handlers import ServicerContext
from services.common.proto.mlops.v1 import model_pb2, registry_pb2, registry_pb2_grpc
from services.registry.access import ACTION_SCOPES
from services.registry.errors import InvalidArgument
from services.registry.metrics import ARTIFACT_BYTES, measured_call, measuring
from services.registry.registry import Actor, Registry
from services.registry.store.documents import timestamp

SERVICE_NAME = registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name

METHOD_SCOPES = MethodScopes(default=Scope.ADMIN, methods=ACTION_SCOPES)


def current_actor() -> Actor:
    principal = current_principal.get()
    if principal is None:  # the interceptor admits no call without one
        return Actor.anonymous(current_request_id.get())
    return Actor(principal, current_request_id.get(), "grpc")


def denial_recorder(registry: Registry) -> DenialHook:
    """The ``AuthInterceptor`` hook that audits a refused token or scope."""

    async def record(method: str, exc: AuthError, request_id: str) -> None:
        await registry.record_refusal(
            Actor(exc.principal, request_id) if exc.principal else Actor.anonymous(request_id),
            method_name(method),
            method,
            "denied" if exc.forbidden else "unauthenticated",
            str(exc),
        )

    return record


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self, registry: Registry):
        self._registry = registry

    async def CreateModel(
        self, request: registry_pb2.CreateModelRequest, context: ServicerContext
    ) -> registry_pb2.Model:
        return await measured_call(
            "CreateModel",
            lambda: self._registry.create_model(
                current_actor(),
                request.name,
                request.description,
                dict(request.tags),
                request.promotion_policy,
                request.team,
            ),
        )

    async def UpdateModel(
        self, request: registry_pb2.UpdateModelRequest, context: ServicerContext
    ) -> registry_pb2.Model:
        return await measured_call(
            "UpdateModel",
            lambda: self._registry.update_model(
                current_actor(),
                request.name,
                description=request.description if request.HasField("description") else None,
                set_tags=dict(request.set_tags),
                remove_tags=list(request.remove_tags),
                policy=request.promotion_policy,
            ),
        )

    async def GetModel(
        self, request: registry_pb2.GetModelRequest, context: ServicerContext
    ) -> registry_pb2.Model:
        return await measured_call(
            "GetModel", lambda: self._registry.get_model(current_actor(), request.name)
        )

    async def ListModels(
        self, request: registry_pb2.ListModelsRequest, context: ServicerContext
    ) -> registry_pb2.ListModelsResponse:
        async def run() -> registry_pb2.ListModelsResponse:
            page = await self._registry.list_models(
                current_actor(),
                alias=request.alias,
                name_contains=request.name_contains,
                tags=dict(request.tags),
                team=request.team,
                page_size=request.page_size,
                page_token=request.page_token,
            )
            return registry_pb2.ListModelsResponse(models=page.items, next_page_token=page.next_page_token)

        return await measured_call("ListModels", run)

    async def CreateModelVersion(
        self,
        request_iterator: AsyncIterator[registry_pb2.CreateModelVersionRequest],
        context: ServicerContext,
    ) -> registry_pb2.ModelVersion:
        async def run() -> registry_pb2.ModelVersion:
            messages = aiter(request_iterator)
            first = await anext(messages, None)
            if first is None or first.WhichOneof("part") != "metadata":
                raise InvalidArgument(
                    "metadata: the first message of the stream must carry the version metadata",
                    field="metadata",
                )

            async def chunks() -> AsyncIterator[bytes]:
                async for message in messages:
                    if message.WhichOneof("part") != "chunk":
                        raise InvalidArgument(
                            "chunk: only the first message may carry metadata; the rest carry artifact bytes",
                            field="chunk",
                        )
                    ARTIFACT_BYTES.labels("in").inc(len(message.chunk))
                    yield message.chunk

            return await self._registry.create_version(current_actor(), first.metadata, chunks())

        return await measured_call("CreateModelVersion", run)

    async def GetModelVersion(
        self, request: registry_pb2.GetModelVersionRequest, context: ServicerContext
    ) -> registry_pb2.ModelVersion:
        return await measured_call(
            "GetModelVersion",
            lambda: self._registry.get_version(
                current_actor(), request.model_name, request.version, request.alias
            ),
        )

    async def ListModelVersions(
        self, request: registry_pb2.ListModelVersionsRequest, context: ServicerContext
    ) -> registry_pb2.ListModelVersionsResponse:
        async def run() -> registry_pb2.ListModelVersionsResponse:
            page = await self._registry.list_versions(
                current_actor(),
                request.model_name,
                page_size=request.page_size,
                page_token=request.page_token,
            )
            return registry_pb2.ListModelVersionsResponse(
                versions=page.items, next_page_token=page.next_page_token
            )

        return await measured_call("ListModelVersions", run)

    async def SearchModelVersions(
        self, request: registry_pb2.SearchModelVersionsRequest, context: ServicerContext
    ) -> registry_pb2.ListModelVersionsResponse:
        async def run() -> registry_pb2.ListModelVersionsResponse:
            page = await self._registry.search_versions(current_actor(), request)
            return registry_pb2.ListModelVersionsResponse(
                versions=page.items, next_page_token=page.next_page_token
            )

        return await measured_call("SearchModelVersions", run)

    async def SetAlias(
        self, request: registry_pb2.SetAliasRequest, context: ServicerContext
    ) -> registry_pb2.Model:
        return await measured_call(
            "SetAlias",
            lambda: self._registry.set_alias(
                current_actor(),
                request.model_name,
                request.alias,
                request.version,
                request.expected_version,
                request.reason,
            ),
        )

    async def DeleteAlias(
        self, request: registry_pb2.DeleteAliasRequest, context: ServicerContext
    ) -> registry_pb2.Model:
        return await measured_call(
            "DeleteAlias",
            lambda: self._registry.delete_alias(
                current_actor(), request.model_name, request.alias, request.expected_version
            ),
        )

    async def DownloadArtifact(
        self, request: registry_pb2.DownloadArtifactRequest, context: ServicerContext
    ) -> AsyncIterator[registry_pb2.ArtifactChunk]:
        with measuring("DownloadArtifact", "grpc"):
            version, stream = await self._registry.download(
                current_actor(), request.model_name, request.version, request.alias
            )
            first = True
            async for data in stream:
                chunk = registry_pb2.ArtifactChunk(data=data, version=version.version)
                if first:
                    chunk.artifact.CopyFrom(version.artifact)
                    first = False
                ARTIFACT_BYTES.labels("out").inc(len(data))
                yield chunk

    async def ApproveVersion(
        self, request: registry_pb2.ReviewVersionRequest, context: ServicerContext
    ) -> registry_pb2.ModelVersion:
        return await measured_call(
            "ApproveVersion",
            lambda: self._registry.review(
                current_actor(), request.model_name, request.version, approve=True, comment=request.comment
            ),
        )

    async def RejectVersion(
        self, request: registry_pb2.ReviewVersionRequest, context: ServicerContext
    ) -> registry_pb2.ModelVersion:
        return await measured_call(
            "RejectVersion",
            lambda: self._registry.review(
                current_actor(), request.model_name, request.version, approve=False, comment=request.comment
            ),
        )

    async def ArchiveVersion(
        self, request: registry_pb2.ArchiveVersionRequest, context: ServicerContext
    ) -> registry_pb2.ModelVersion:
        return await measured_call(
            "ArchiveVersion",
            lambda: self._registry.archive(
                current_actor(), request.model_name, request.version, request.reason
            ),
        )

    async def Rollback(
        self, request: registry_pb2.RollbackRequest, context: ServicerContext
    ) -> registry_pb2.RollbackResponse:
        return await measured_call(
            "Rollback",
            lambda: self._registry.rollback(
                current_actor(), request.model_name, request.alias, request.expected_version, request.reason
            ),
        )

    async def GetLineage(
        self, request: registry_pb2.GetLineageRequest, context: ServicerContext
    ) -> registry_pb2.LineageResponse:
        return await measured_call(
            "GetLineage",
            lambda: self._registry.lineage(
                current_actor(), request.model_name, request.version, request.alias
            ),
        )

    async def ListAliasHistory(
        self, request: registry_pb2.ListAliasHistoryRequest, context: ServicerContext
    ) -> registry_pb2.ListAliasHistoryResponse:
        async def run() -> registry_pb2.ListAliasHistoryResponse:
            page = await self._registry.alias_history(
                current_actor(),
                request.model_name,
                request.alias,
                page_size=request.page_size,
                page_token=request.page_token,
            )
            return registry_pb2.ListAliasHistoryResponse(
                changes=page.items, next_page_token=page.next_page_token
            )

        return await measured_call("ListAliasHistory", run)

    async def PutModelSpec(
        self, request: registry_pb2.PutModelSpecRequest, context: ServicerContext
    ) -> model_pb2.ModelSpec:
        return await measured_call(
            "PutModelSpec", lambda: self._registry.put_spec(current_actor(), request.spec)
        )

    async def GetModelSpec(
        self, request: registry_pb2.GetModelSpecRequest, context: ServicerContext
    ) -> model_pb2.ModelSpec:
        return await measured_call(
            "GetModelSpec",
            lambda: self._registry.get_spec(current_actor(), request.model_name, request.spec_version),
        )

    async def ListModelSpecs(
        self, request: registry_pb2.ListModelSpecsRequest, context: ServicerContext
    ) -> registry_pb2.ListModelSpecsResponse:
        async def run() -> registry_pb2.ListModelSpecsResponse:
            page = await self._registry.list_specs(
                current_actor(),
                request.model_name,
                page_size=request.page_size,
                page_token=request.page_token,
            )
            return registry_pb2.ListModelSpecsResponse(specs=page.items, next_page_token=page.next_page_token)

        return await measured_call("ListModelSpecs", run)

    async def ListAuditRecords(
        self, request: registry_pb2.ListAuditRecordsRequest, context: ServicerContext
    ) -> registry_pb2.ListAuditRecordsResponse:
        async def run() -> registry_pb2.ListAuditRecordsResponse:
            page = await self._registry.audit_log(request)
            return registry_pb2.ListAuditRecordsResponse(
                records=page.items, next_page_token=page.next_page_token
            )

        return await measured_call("ListAuditRecords", run)

    # ------------------------------------------------------------- teams, tokens

    async def CreateTeam(
        self, request: registry_pb2.CreateTeamRequest, context: ServicerContext
    ) -> registry_pb2.Team:
        return await measured_call(
            "CreateTeam",
            lambda: self._registry.create_team(current_actor(), request.name, request.description),
        )

    async def GetTeam(
        self, request: registry_pb2.GetTeamRequest, context: ServicerContext
    ) -> registry_pb2.Team:
        return await measured_call("GetTeam", lambda: self._registry.get_team(current_actor(), request.name))

    async def ListTeams(
        self, request: registry_pb2.ListTeamsRequest, context: ServicerContext
    ) -> registry_pb2.ListTeamsResponse:
        async def run() -> registry_pb2.ListTeamsResponse:
            page = await self._registry.list_teams(
                current_actor(), page_size=request.page_size, page_token=request.page_token
            )
            return registry_pb2.ListTeamsResponse(teams=page.items, next_page_token=page.next_page_token)

        return await measured_call("ListTeams", run)

    async def AddTeamMember(
        self, request: registry_pb2.TeamMemberRequest, context: ServicerContext
    ) -> registry_pb2.Team:
        return await measured_call(
            "AddTeamMember",
            lambda: self._registry.set_member(
                current_actor(), request.team, request.subject, list(request.scopes)
            ),
        )

    async def RemoveTeamMember(
        self, request: registry_pb2.TeamMemberRequest, context: ServicerContext
    ) -> registry_pb2.Team:
        return await measured_call(
            "RemoveTeamMember",
            lambda: self._registry.remove_member(current_actor(), request.team, request.subject),
        )

    async def CreateToken(
        self, request: registry_pb2.CreateTokenRequest, context: ServicerContext
    ) -> registry_pb2.CreateTokenResponse:
        return await measured_call(
            "CreateToken",
            lambda: self._registry.create_token(
                current_actor(),
                request.subject,
                list(request.scopes),
                list(request.teams),
                request.ttl_seconds,
            ),
        )

    async def ListTokens(
        self, request: registry_pb2.ListTokensRequest, context: ServicerContext
    ) -> registry_pb2.ListTokensResponse:
        async def run() -> registry_pb2.ListTokensResponse:
            page = await self._registry.list_tokens(
                subject=request.subject,
                include_revoked=request.include_revoked,
                page_size=request.page_size,
                page_token=request.page_token,
            )
            return registry_pb2.ListTokensResponse(tokens=page.items, next_page_token=page.next_page_token)

        return await measured_call("ListTokens", run)

    async def RevokeToken(
        self, request: registry_pb2.RevokeTokenRequest, context: ServicerContext
    ) -> registry_pb2.TokenInfo:
        return await measured_call(
            "RevokeToken",
            lambda: self._registry.revoke_token(current_actor(), request.id, request.reason),
        )

    async def ListRevokedTokens(
        self, request: registry_pb2.ListRevokedTokensRequest, context: ServicerContext
    ) -> registry_pb2.ListRevokedTokensResponse:
        async def run() -> registry_pb2.ListRevokedTokensResponse:
            page = await self._registry.revoked_tokens(
                request.since.ToDatetime(UTC) if request.HasField("since") else None,
                page_size=request.page_size,
                page_token=request.page_token,
            )
            return registry_pb2.ListRevokedTokensResponse(
                tokens=[
                    registry_pb2.RevokedToken(
                        id=r.id, revoked_at=timestamp(r.revoked_at), expires_at=timestamp(r.expires_at)
                    )
                    for r in page.items
                ],
                next_page_token=page.next_page_token,
            )

        return await measured_call("ListRevokedTokens", run)


def method_name(full_method: str) -> str:
    """``SetAlias`` from ``/mlops.v1.RegistryService/SetAlias``."""
    return full_method.rsplit("/", 1)[-1]
