"""Versions: registering one with its artifact (verified while stored), finding and
searching them, downloading their artifacts, archiving them, and their lineage."""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.common.auth import Scope
from services.common.logging import get_logger
from services.common.proto.mlops.v1 import events_pb2, registry_pb2
from services.registry import access, lifecycle, validation
from services.registry.aliases import move_alias
from services.registry.changes import Actor, Change, UseCases, resource, status_name
from services.registry.errors import InvalidArgument, NotFound, PermissionDenied, PlatformError
from services.registry.store import Page
from services.registry.store.documents import summary, timestamp
from services.registry.store.versions import COMPARISONS, VersionFilter, VersionRepository

log = get_logger(__name__)

ModelVersion = registry_pb2.ModelVersion

MAX_LINEAGE_DEPTH = 100
"""Most ancestors a lineage answer lists."""
MAX_RELATED = 100
"""Most children, and most versions trained on the same data, a lineage answer lists."""


def _registered(metadata: registry_pb2.VersionMetadata, number: int, change: Change) -> ModelVersion:
    """The immutable part of a new version: what the caller declared, numbered and dated."""
    version = ModelVersion(
        model_name=metadata.model_name,
        version=number,
        team=change.team,
        artifact=metadata.artifact,
        metrics=metadata.metrics,
        params=metadata.params,
        signature=metadata.signature,
        lineage=metadata.lineage,
        gates=metadata.gates,
        gates_passed=metadata.gates_passed,
        tags=metadata.tags,
        card=metadata.card,
        created_at=timestamp(change.now),
        created_by=change.actor.subject,
    )
    if metadata.HasField("spec"):
        version.spec.CopyFrom(metadata.spec)
    if metadata.HasField("reference_profile"):
        version.reference_profile.CopyFrom(metadata.reference_profile)
    return version


def _search_filter(
    request: registry_pb2.SearchModelVersionsRequest, visible_teams: frozenset[str] | None
) -> VersionFilter:
    """The search's conditions, each checked; InvalidArgument naming the first bad one."""
    if request.team:
        access.team(request.team)
    if request.model_name:
        validation.model_name(request.model_name)
    if request.dataset:
        validation.dataset_name(request.dataset, "dataset")
    if request.content_sha256:
        validation.sha256(request.content_sha256, "content_sha256")
    if request.train_request_id:
        validation.text(request.train_request_id, "train_request_id", validation.MAX_SHORT_TEXT)
    if request.code_version:
        validation.text(request.code_version, "code_version", validation.MAX_SHORT_TEXT)
    if request.alias:
        validation.alias(request.alias)
    if request.status and request.status not in registry_pb2.VersionStatus.values():
        raise InvalidArgument("status: unknown status", field="status")
    validation.tags(request.tags, "tags")
    for i, metric in enumerate(request.metrics):
        field = f"metrics[{i}]"
        validation.key(metric.name, f"{field}.name")
        validation.finite(metric.value, f"{field}.value")
        if metric.op not in COMPARISONS:
            raise InvalidArgument(f"{field}.op: give a comparison (LT, LE, GT, GE, EQ)", field=f"{field}.op")
    return VersionFilter(
        model_name=request.model_name,
        dataset=request.dataset,
        content_sha256=request.content_sha256,
        train_request_id=request.train_request_id,
        code_version=request.code_version,
        alias=request.alias,
        status=request.status,
        tags=dict(request.tags),
        metrics=list(request.metrics),
        team=request.team,
        visible_teams=visible_teams,
    )


class VersionUseCases(UseCases):
    async def create_version(
        self, actor: Actor, metadata: registry_pb2.VersionMetadata, chunks: AsyncIterator[bytes]
    ) -> ModelVersion:
        """Store the artifact (verified), then record the version and apply the policy."""
        name = metadata.model_name
        target = resource("models", name, "versions")
        try:
            validation.version_metadata(metadata, self._settings.max_artifact_bytes)
            self._artifacts.check_format_allowed(metadata.artifact.format)
            model = await self._store.models.get(name)
            if model is None or not actor.principal.acts_for(model.team):
                raise NotFound(f"model {name!r} not found: create it first", field="metadata.model_name")
            if not actor.principal.may(Scope.WRITE, model.team):
                # Checked before a byte is stored; the transaction checks again.
                raise PermissionDenied(f"{actor.subject!r} lacks scope 'write' in team {model.team!r}")
            received = await self._artifacts.receive(metadata.artifact, metadata.signature_hmac, chunks)
        except PlatformError as exc:
            await self._refused(actor, "CreateModelVersion", target, exc)
            raise

        async def work(change: Change) -> tuple[ModelVersion, bool]:
            model = change.owned(name, await change.tx.models.next_version(name, change.now))
            number = model.latest_version
            stored = await change.tx.artifacts.register(received)
            decision = lifecycle.on_version_created(
                model.promotion_policy, number, len(metadata.gates) > 0, metadata.gates_passed
            )
            await change.tx.versions.insert(
                _registered(metadata, number, change), decision.status, change.now
            )
            await change.audit(
                resource("models", name, "versions", number),
                None,
                {
                    "status": status_name(decision.status),
                    "artifact_sha256": metadata.artifact.sha256,
                    "artifact_format": metadata.artifact.format,
                    "size_bytes": metadata.artifact.size_bytes,
                    "gates_passed": metadata.gates_passed,
                    "parent_version": metadata.lineage.parent_version,
                    "train_request_id": metadata.lineage.train_request_id,
                },
            )
            await change.emit(events_pb2.MODEL_EVENT_TYPE_VERSION_CREATED, name, version=number)
            for move in decision.moves:
                await move_alias(change, model, move.alias, move.version, move.action)
            return await change.version(name, number), stored

        try:
            version, stored = await self._change(actor, "CreateModelVersion", target, work)
        except BaseException:
            await self._artifacts.discard(received)
            raise
        if not stored:
            await self._artifacts.discard(received)
        log.info(
            "version_created",
            model=name,
            version=version.version,
            status=status_name(version.status),
            aliases=list(version.aliases),
        )
        return version

    async def _resolve_version(self, actor: Actor, name: str, version: int, alias: str) -> ModelVersion:
        """The version named by number or by alias, of a model the caller may see."""
        validation.model_name(name)
        validation.version_ref(version, alias)
        model = await self._model(actor, name)
        if alias:
            version = model.aliases.get(alias, 0)
            if not version:
                raise NotFound(f"model {name!r} has no alias {alias!r}")
        found = await self._store.versions.get(name, version)
        if found is None:
            raise NotFound(f"model {name!r} has no version {version}")
        return found

    async def get_version(self, actor: Actor, name: str, version: int = 0, alias: str = "") -> ModelVersion:
        return await self._resolve_version(actor, name, version, alias)

    async def list_versions(
        self, actor: Actor, name: str, *, page_size: int = 0, page_token: str = ""
    ) -> Page[ModelVersion]:
        validation.model_name(name)
        request = self._page(VersionRepository.NEWEST_FIRST, page_size, page_token)
        await self._model(actor, name)
        return await self._store.versions.page(name, request)

    async def search_versions(
        self, actor: Actor, request: registry_pb2.SearchModelVersionsRequest
    ) -> Page[ModelVersion]:
        """Versions of the caller's teams' models matching ``request``."""
        where = _search_filter(request, actor.visible_teams())
        page = self._page(VersionRepository.BY_MODEL, request.page_size, request.page_token)
        return await self._store.versions.search(where, page)

    async def download(
        self, actor: Actor, name: str, version: int = 0, alias: str = ""
    ) -> tuple[ModelVersion, AsyncIterator[bytes]]:
        """The version and its artifact's bytes; the stream raises at its end on corruption."""
        resolved = await self._resolve_version(actor, name, version, alias)
        return resolved, self._artifacts.read(resolved.artifact.sha256)

    async def archive(self, actor: Actor, name: str, version: int, reason: str = "") -> ModelVersion:
        target = resource("models", name, "versions", version)

        def check() -> None:
            validation.model_name(name)
            validation.version_number(version)
            validation.text(reason, "reason")

        await self._validated(actor, "ArchiveVersion", target, check)

        async def work(change: Change) -> ModelVersion:
            await change.model(name)
            found = await change.version(name, version)
            lifecycle.check_archivable(found.status, version, found.aliases)
            await change.tx.versions.set_status(name, version, lifecycle.ARCHIVED, change.now)
            await change.audit(
                target, {"status": status_name(found.status)}, {"status": "ARCHIVED"}, detail=reason
            )
            await change.emit(events_pb2.MODEL_EVENT_TYPE_VERSION_ARCHIVED, name, version=version)
            return await change.version(name, version)

        return await self._change(actor, "ArchiveVersion", target, work)

    async def lineage(
        self, actor: Actor, name: str, version: int = 0, alias: str = ""
    ) -> registry_pb2.LineageResponse:
        """What produced the version (its parent chain), what it produced (its children),
        and the versions of any model of the caller's teams trained on exactly the same data."""
        found = await self._resolve_version(actor, name, version, alias)
        response = registry_pb2.LineageResponse(version=summary(found))
        parent = found.lineage.parent_version
        seen = {found.version}
        while parent and parent not in seen and len(response.ancestors) < MAX_LINEAGE_DEPTH:
            seen.add(parent)
            ancestor = await self._store.versions.get(name, parent)
            if ancestor is None:
                break
            response.ancestors.append(summary(ancestor))
            parent = ancestor.lineage.parent_version
        response.children.extend(await self._store.versions.children(name, found.version, MAX_RELATED))
        response.same_data.extend(
            await self._store.versions.same_data(found, MAX_RELATED, actor.visible_teams())
        )
        return response
