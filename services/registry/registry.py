"""The registry's use cases, shared by the gRPC API, the REST mirror and tests.

Every change runs in one MongoDB transaction that also writes its audit record(s) and
the events to publish (the outbox), so a change is never visible without its audit
trail and its event, and a refused change leaves nothing behind. Refusals are audited
too, outside the (aborted) transaction.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pymongo.errors
from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.asynchronous.client_session import AsyncClientSession

from services.common.logging import get_logger
from services.common.proto.mlops.v1 import events_pb2, model_pb2, registry_pb2
from services.registry import lifecycle, validation
from services.registry.artifact_store import ArtifactStore, ReceivedArtifact
from services.registry.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RegistryError,
)
from services.registry.settings import RegistrySettings
from services.registry.store import (
    Store,
    alias_change_to_proto,
    audit_to_proto,
    decode_page_token,
    encode_page_token,
    key_values,
    model_to_proto,
    spec_to_proto,
    timestamp,
    version_document,
    version_summary,
    version_to_proto,
)

log = get_logger(__name__)

Document = dict[str, Any]

MAX_LINEAGE_DEPTH = 100
MAX_RELATED = 100
MAX_ROLLBACK_HISTORY = 500

_COMPARISONS = {
    registry_pb2.COMPARISON_LT: "$lt",
    registry_pb2.COMPARISON_LE: "$lte",
    registry_pb2.COMPARISON_GT: "$gt",
    registry_pb2.COMPARISON_GE: "$gte",
    registry_pb2.COMPARISON_EQ: "$eq",
}
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


@dataclass(frozen=True)
class Actor:
    """Who asked, under which request id, over which transport (for the audit log)."""

    subject: str
    request_id: str = ""
    transport: str = "grpc"


def resource(*parts: object) -> str:
    """``models/<name>/...`` for the audit log; anything unprintable a caller sent is escaped."""
    text = "/".join(str(part) for part in parts)
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)[:512]


class Change:
    """The side records of one transaction: audit entries and outbox events."""

    def __init__(self, store: Store, session: AsyncClientSession, actor: Actor, action: str):
        self.store = store
        self.session = session
        self.actor = actor
        self.action = action
        self.now = datetime.now(UTC)

    async def audit(
        self, target: str, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, detail: str = ""
    ) -> None:
        await self.store.audit.insert_one(
            audit_document(self.actor, self.action, target, "ok", self.now, before, after, detail),
            session=self.session,
        )

    async def emit(
        self,
        kind: events_pb2.ModelEventType.ValueType,
        model_name: str,
        version: int = 0,
        alias: str = "",
        previous_version: int = 0,
    ) -> None:
        event = events_pb2.ModelEvent(
            event_id=uuid.uuid4().hex,
            type=kind,
            model_name=model_name,
            version=version,
            alias=alias,
            previous_version=previous_version,
            actor=self.actor.subject,
            occurred_at=timestamp(self.now),
            request_id=self.actor.request_id,
        )
        await self.store.outbox.insert_one(
            {
                "event_id": event.event_id,
                "key": model_name,
                "payload": event.SerializeToString(),
                "created_at": self.now,
                "relayed_at": None,
            },
            session=self.session,
        )


def audit_document(
    actor: Actor,
    action: str,
    target: str,
    outcome: str,
    now: datetime,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    detail: str = "",
) -> Document:
    return {
        "occurred_at": now,
        "actor": actor.subject,
        "action": action,
        "resource": target,
        "before": dict(before) if before else None,
        "after": dict(after) if after else None,
        "outcome": outcome,
        "request_id": actor.request_id,
        "transport": actor.transport,
        "detail": detail[:2000],
    }


def status_name(status: int) -> str:
    return registry_pb2.VersionStatus.Name(status).removeprefix("VERSION_STATUS_")  # type: ignore[arg-type]


@dataclass(frozen=True)
class Page:
    """One page of results and the token of the next one ("" on the last page)."""

    items: list[Any]
    next_page_token: str


class Registry:
    """Models, versions, aliases, specs, lineage and the audit log."""

    def __init__(
        self,
        store: Store,
        artifacts: ArtifactStore,
        settings: RegistrySettings,
        on_commit: Callable[[], None] = lambda: None,
    ):
        self._store = store
        self._artifacts = artifacts
        self._settings = settings
        self._on_commit = on_commit

    # ----------------------------------------------------------------- plumbing

    async def _change(self, actor: Actor, action: str, target: str, work: Callable[[Change], Any]) -> Any:
        """Run ``work`` in a transaction with its audit and events; audit a refusal."""

        async def attempt(session: AsyncClientSession) -> Any:
            return await work(Change(self._store, session, actor, action))

        try:
            result = await self._store.transaction(attempt)
        except RegistryError as exc:
            await self.record_refusal(actor, action, target, exc.outcome, exc.message)
            raise
        self._on_commit()
        return result

    async def record_refusal(self, actor: Actor, action: str, target: str, outcome: str, detail: str) -> None:
        """Audit a refused call (denied, invalid, conflicting ...) outside any transaction."""
        try:
            await self._store.audit.insert_one(
                audit_document(actor, action, target, outcome, datetime.now(UTC), detail=detail)
            )
        except pymongo.errors.PyMongoError as exc:
            log.error("audit_write_failed", action=action, resource=target, error=repr(exc))

    async def _refuse_invalid(self, actor: Actor, action: str, target: str, exc: RegistryError) -> None:
        await self.record_refusal(actor, action, target, exc.outcome, exc.message)

    async def _validated(self, actor: Actor, action: str, target: str, check: Callable[[], None]) -> None:
        try:
            check()
        except RegistryError as exc:
            await self._refuse_invalid(actor, action, target, exc)
            raise

    async def _model_in(self, change: Change, name: str) -> Document:
        doc = await self._store.models.find_one_and_update(
            {"_id": name},
            {"$set": {"updated_at": change.now}},
            session=change.session,
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            raise NotFound(f"model {name!r} not found")
        return doc

    async def _version_in(self, change: Change, name: str, version: int) -> Document:
        doc = await self._store.versions.find_one(
            {"model_name": name, "version": version}, session=change.session
        )
        if doc is None:
            raise NotFound(f"model {name!r} has no version {version}")
        return doc

    async def _move_alias(
        self, change: Change, model: Document, alias: str, version: int, action: str, reason: str = ""
    ) -> int:
        """Point ``alias`` at ``version`` (0: remove it), with history, audit and event.

        ``model`` is the model document read in this transaction; its aliases are updated
        in place so later moves in the same transaction see this one.
        """
        name = model["_id"]
        aliases: dict[str, int] = model.setdefault("aliases", {})
        previous = aliases.get(alias, 0)
        if previous == version:
            return previous
        session = change.session
        update: Document = {"$set": {"updated_at": change.now}}
        if version:
            update["$set"][f"aliases.{alias}"] = version
            aliases[alias] = version
        else:
            update["$unset"] = {f"aliases.{alias}": ""}
            aliases.pop(alias, None)
        await self._store.models.update_one({"_id": name}, update, session=session)
        if previous:
            await self._store.versions.update_one(
                {"model_name": name, "version": previous},
                {"$pull": {"aliases": alias}, "$set": {"updated_at": change.now}},
                session=session,
            )
        if version:
            target_update: Document = {"$addToSet": {"aliases": alias}, "$set": {"updated_at": change.now}}
            if action == "set":
                # Pointed at again on purpose: rollback may return to it later.
                target_update["$set"]["rolled_back"] = False
            await self._store.versions.update_one(
                {"model_name": name, "version": version}, target_update, session=session
            )
        await self._store.alias_history.insert_one(
            {
                "model_name": name,
                "alias": alias,
                "version": version,
                "previous_version": previous,
                "actor": change.actor.subject,
                "changed_at": change.now,
                "reason": reason,
                "request_id": change.actor.request_id,
                "action": action,
            },
            session=session,
        )
        await change.audit(
            resource("models", name, "aliases", alias),
            {"version": previous} if previous else None,
            {"version": version} if version else None,
            detail=action if not reason else f"{action}: {reason}",
        )
        kind = events_pb2.MODEL_EVENT_TYPE_ALIAS_SET if version else events_pb2.MODEL_EVENT_TYPE_ALIAS_DELETED
        await change.emit(kind, name, version=version or previous, alias=alias, previous_version=previous)
        return previous

    # ------------------------------------------------------------------- models

    async def create_model(
        self,
        actor: Actor,
        name: str,
        description: str = "",
        tags: Mapping[str, str] | None = None,
        policy: registry_pb2.PromotionPolicy.ValueType = registry_pb2.PROMOTION_POLICY_AUTO,
    ) -> registry_pb2.Model:
        tags = dict(tags or {})
        target = resource("models", name)

        def check() -> None:
            validation.model_name(name, "name")
            validation.text(description, "description")
            validation.tags(tags)
            if policy not in registry_pb2.PromotionPolicy.values():
                raise InvalidArgument("promotion_policy: unknown policy", field="promotion_policy")

        await self._validated(actor, "CreateModel", target, check)

        async def work(change: Change) -> Document:
            if await self._store.models.find_one({"_id": name}, {"_id": 1}, session=change.session):
                raise AlreadyExists(f"model {name!r} already exists")
            doc: Document = {
                "_id": name,
                "description": description,
                "tags": key_values(tags),
                "promotion_policy": lifecycle.effective_policy(policy),
                "aliases": {},
                "latest_version": 0,
                "latest_spec_version": 0,
                "created_at": change.now,
                "updated_at": change.now,
                "created_by": actor.subject,
            }
            await self._store.models.insert_one(doc, session=change.session)
            await change.audit(
                target,
                None,
                {"description": description, "tags": tags, "promotion_policy": policy_name(doc)},
            )
            await change.emit(events_pb2.MODEL_EVENT_TYPE_MODEL_CREATED, name)
            return doc

        try:
            return model_to_proto(await self._change(actor, "CreateModel", target, work))
        except pymongo.errors.DuplicateKeyError:
            # Lost a race with a concurrent creation of the same name.
            exc = AlreadyExists(f"model {name!r} already exists")
            await self.record_refusal(actor, "CreateModel", target, exc.outcome, exc.message)
            raise exc from None

    async def update_model(
        self,
        actor: Actor,
        name: str,
        *,
        description: str | None = None,
        set_tags: Mapping[str, str] | None = None,
        remove_tags: Sequence[str] = (),
        policy: registry_pb2.PromotionPolicy.ValueType = registry_pb2.PROMOTION_POLICY_UNSPECIFIED,
    ) -> registry_pb2.Model:
        set_tags = dict(set_tags or {})
        target = resource("models", name)

        def check() -> None:
            validation.model_name(name, "name")
            if description is not None:
                validation.text(description, "description")
            validation.tags(set_tags, "set_tags")
            for i, key in enumerate(remove_tags):
                validation.key(key, f"remove_tags[{i}]")
            if policy not in registry_pb2.PromotionPolicy.values():
                raise InvalidArgument("promotion_policy: unknown policy", field="promotion_policy")

        await self._validated(actor, "UpdateModel", target, check)

        async def work(change: Change) -> Document:
            doc = await self._model_in(change, name)
            before = {
                "description": doc["description"],
                "tags": dict(sorted((p["k"], p["v"]) for p in doc["tags"])),
                "promotion_policy": policy_name(doc),
            }
            tags = {p["k"]: p["v"] for p in doc["tags"]}
            tags.update(set_tags)
            for key in remove_tags:
                tags.pop(key, None)
            if len(tags) > validation.MAX_TAGS:
                raise InvalidArgument(
                    f"set_tags: a model has at most {validation.MAX_TAGS} tags", field="set_tags"
                )
            doc["tags"] = key_values(tags)
            if description is not None:
                doc["description"] = description
            if policy:
                doc["promotion_policy"] = policy
            await self._store.models.update_one(
                {"_id": name},
                {"$set": {k: doc[k] for k in ("tags", "description", "promotion_policy")}},
                session=change.session,
            )
            after = {
                "description": doc["description"],
                "tags": dict(sorted(tags.items())),
                "promotion_policy": policy_name(doc),
            }
            await change.audit(target, before, after)
            await change.emit(events_pb2.MODEL_EVENT_TYPE_MODEL_UPDATED, name)
            return doc

        return model_to_proto(await self._change(actor, "UpdateModel", target, work))

    async def get_model(self, name: str) -> registry_pb2.Model:
        validation.model_name(name, "name")
        doc = await self._store.models.find_one({"_id": name})
        if doc is None:
            raise NotFound(f"model {name!r} not found")
        return model_to_proto(doc)

    async def list_models(
        self,
        *,
        alias: str = "",
        name_contains: str = "",
        tags: Mapping[str, str] | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> Page:
        query: Document = {}
        if alias:
            validation.alias(alias)
            query[f"aliases.{alias}"] = {"$exists": True}
        if name_contains:
            validation.text(name_contains, "name_contains", 128)
            query["_id"] = {"$regex": re.escape(name_contains), "$options": "i"}
        conditions = tag_conditions(tags or {}, "tags")
        size = validation.page_size(page_size, self._settings.default_page_size, self._settings.max_page_size)
        position = decode_page_token(page_token, {"after": str})
        if position:
            conditions.append({"_id": {"$gt": position["after"]}})
        if conditions:
            query["$and"] = conditions
        docs = await self._store.models.find(query).sort([("_id", ASCENDING)]).limit(size + 1).to_list()
        token = encode_page_token({"after": docs[size - 1]["_id"]}) if len(docs) > size else ""
        return Page([model_to_proto(d) for d in docs[:size]], token)

    # ----------------------------------------------------------------- versions

    async def create_version(
        self, actor: Actor, metadata: registry_pb2.VersionMetadata, chunks: AsyncIterator[bytes]
    ) -> registry_pb2.ModelVersion:
        """Store the artifact (verified), then record the version and apply the policy."""
        name = metadata.model_name
        target = resource("models", name, "versions")
        try:
            validation.version_metadata(metadata, self._settings.max_artifact_bytes)
            self._artifacts.check_format_allowed(metadata.artifact.format)
            if await self._store.models.find_one({"_id": name}, {"_id": 1}) is None:
                raise NotFound(f"model {name!r} not found: create it first", field="metadata.model_name")
            received = await self._artifacts.receive(metadata.artifact, metadata.signature_hmac, chunks)
        except RegistryError as exc:
            await self._refuse_invalid(actor, "CreateModelVersion", target, exc)
            raise

        async def work(change: Change) -> tuple[registry_pb2.ModelVersion, bool]:
            model = await self._store.models.find_one_and_update(
                {"_id": name},
                {"$inc": {"latest_version": 1}, "$set": {"updated_at": change.now}},
                session=change.session,
                return_document=ReturnDocument.AFTER,
            )
            if model is None:
                raise NotFound(f"model {name!r} not found", field="metadata.model_name")
            number = int(model["latest_version"])
            stored = await self._artifacts.register(received, change.session)
            version = registry_pb2.ModelVersion(
                model_name=name,
                version=number,
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
                created_by=actor.subject,
            )
            if metadata.HasField("spec"):
                version.spec.CopyFrom(metadata.spec)
            if metadata.HasField("reference_profile"):
                version.reference_profile.CopyFrom(metadata.reference_profile)
            decision = lifecycle.on_version_created(
                model.get("promotion_policy", lifecycle.AUTO),
                number,
                len(metadata.gates) > 0,
                metadata.gates_passed,
            )
            await self._store.versions.insert_one(
                version_document(version, decision.status, change.now), session=change.session
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
                await self._move_alias(change, model, move.alias, move.version, move.action)
            stored_doc = await self._version_in(change, name, number)
            return version_to_proto(stored_doc), stored

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

    async def _resolve_version(self, name: str, version: int, alias: str) -> Document:
        validation.model_name(name)
        validation.version_ref(version, alias)
        if alias:
            model = await self._store.models.find_one({"_id": name}, {"aliases": 1})
            if model is None:
                raise NotFound(f"model {name!r} not found")
            version = model.get("aliases", {}).get(alias, 0)
            if not version:
                raise NotFound(f"model {name!r} has no alias {alias!r}")
        doc = await self._store.versions.find_one({"model_name": name, "version": version})
        if doc is None:
            if await self._store.models.find_one({"_id": name}, {"_id": 1}) is None:
                raise NotFound(f"model {name!r} not found")
            raise NotFound(f"model {name!r} has no version {version}")
        return doc

    async def get_version(self, name: str, version: int = 0, alias: str = "") -> registry_pb2.ModelVersion:
        return version_to_proto(await self._resolve_version(name, version, alias))

    async def list_versions(self, name: str, *, page_size: int = 0, page_token: str = "") -> Page:
        validation.model_name(name)
        size = validation.page_size(page_size, self._settings.default_page_size, self._settings.max_page_size)
        position = decode_page_token(page_token, {"before": int})
        if await self._store.models.find_one({"_id": name}, {"_id": 1}) is None:
            raise NotFound(f"model {name!r} not found")
        query: Document = {"model_name": name}
        if position:
            query["version"] = {"$lt": position["before"]}
        docs = (
            await self._store.versions.find(query).sort([("version", DESCENDING)]).limit(size + 1).to_list()
        )
        token = encode_page_token({"before": docs[size - 1]["version"]}) if len(docs) > size else ""
        return Page([version_summary(d) for d in docs[:size]], token)

    async def search_versions(self, request: registry_pb2.SearchModelVersionsRequest) -> Page:
        conditions: list[Document] = []
        if request.model_name:
            validation.model_name(request.model_name)
            conditions.append({"model_name": request.model_name})
        if request.dataset:
            validation.dataset_name(request.dataset, "dataset")
            conditions.append({"dataset": request.dataset})
        if request.content_sha256:
            validation.sha256(request.content_sha256, "content_sha256")
            conditions.append({"content_sha256": request.content_sha256})
        if request.train_request_id:
            validation.text(request.train_request_id, "train_request_id", validation.MAX_SHORT_TEXT)
            conditions.append({"train_request_id": request.train_request_id})
        if request.code_version:
            validation.text(request.code_version, "code_version", validation.MAX_SHORT_TEXT)
            conditions.append({"code_version": request.code_version})
        if request.alias:
            validation.alias(request.alias)
            conditions.append({"aliases": request.alias})
        if request.status:
            if request.status not in registry_pb2.VersionStatus.values():
                raise InvalidArgument("status: unknown status", field="status")
            conditions.append({"status": request.status})
        conditions += tag_conditions(request.tags, "tags")
        for i, metric in enumerate(request.metrics):
            field = f"metrics[{i}]"
            validation.key(metric.name, f"{field}.name")
            validation.finite(metric.value, f"{field}.value")
            if metric.op not in _COMPARISONS:
                raise InvalidArgument(
                    f"{field}.op: give a comparison (LT, LE, GT, GE, EQ)", field=f"{field}.op"
                )
            conditions.append(
                {"metrics": {"$elemMatch": {"k": metric.name, "v": {_COMPARISONS[metric.op]: metric.value}}}}
            )
        size = validation.page_size(
            request.page_size, self._settings.default_page_size, self._settings.max_page_size
        )
        position = decode_page_token(request.page_token, {"model": str, "version": int})
        if position:
            conditions.append(
                {
                    "$or": [
                        {"model_name": {"$gt": position["model"]}},
                        {"model_name": position["model"], "version": {"$lt": position["version"]}},
                    ]
                }
            )
        query: Document = {"$and": conditions} if conditions else {}
        docs = (
            await self._store.versions.find(query)
            .sort([("model_name", ASCENDING), ("version", DESCENDING)])
            .limit(size + 1)
            .to_list()
        )
        token = ""
        if len(docs) > size:
            last = docs[size - 1]
            token = encode_page_token({"model": last["model_name"], "version": last["version"]})
        return Page([version_summary(d) for d in docs[:size]], token)

    async def download(
        self, name: str, version: int = 0, alias: str = ""
    ) -> tuple[registry_pb2.ModelVersion, AsyncIterator[bytes]]:
        """The version and its artifact's bytes; the stream raises at its end on corruption."""
        resolved = version_to_proto(await self._resolve_version(name, version, alias))
        return resolved, self._artifacts.read(resolved.artifact.sha256)

    # ------------------------------------------------------------------ aliases

    async def set_alias(
        self, actor: Actor, name: str, alias: str, version: int, expected_version: int = 0, reason: str = ""
    ) -> registry_pb2.Model:
        target = resource("models", name, "aliases", alias)

        def check() -> None:
            validation.model_name(name)
            validation.alias(alias)
            validation.version_number(version)
            if expected_version < lifecycle.EXPECT_UNSET:
                raise InvalidArgument(
                    "expected_version: 0 (any), -1 (unset) or a version number", field="expected_version"
                )
            validation.text(reason, "reason", validation.MAX_TEXT)

        await self._validated(actor, "SetAlias", target, check)

        async def work(change: Change) -> Document:
            model = await self._model_in(change, name)
            lifecycle.check_expected(alias, model.get("aliases", {}).get(alias, 0), expected_version)
            doc = await self._version_in(change, name, version)
            lifecycle.check_alias_target(alias, version, doc["status"], model.get("promotion_policy", 0))
            await self._move_alias(change, model, alias, version, "set", reason)
            return model

        return model_to_proto(await self._change(actor, "SetAlias", target, work))

    async def delete_alias(
        self, actor: Actor, name: str, alias: str, expected_version: int = 0
    ) -> registry_pb2.Model:
        target = resource("models", name, "aliases", alias)

        def check() -> None:
            validation.model_name(name)
            validation.alias(alias)
            if expected_version < 0:
                raise InvalidArgument(
                    "expected_version: 0 (any) or a version number", field="expected_version"
                )

        await self._validated(actor, "DeleteAlias", target, check)

        async def work(change: Change) -> Document:
            model = await self._model_in(change, name)
            current = model.get("aliases", {}).get(alias, 0)
            if not current:
                raise NotFound(f"model {name!r} has no alias {alias!r}")
            lifecycle.check_expected(alias, current, expected_version)
            await self._move_alias(change, model, alias, 0, "delete")
            return model

        return model_to_proto(await self._change(actor, "DeleteAlias", target, work))

    async def rollback(
        self, actor: Actor, name: str, alias: str = "", expected_version: int = 0, reason: str = ""
    ) -> registry_pb2.RollbackResponse:
        alias = alias or lifecycle.PRODUCTION
        target = resource("models", name, "aliases", alias)

        def check() -> None:
            validation.model_name(name)
            validation.alias(alias)
            if expected_version < 0:
                raise InvalidArgument(
                    "expected_version: 0 (any) or a version number", field="expected_version"
                )
            validation.text(reason, "reason")

        await self._validated(actor, "Rollback", target, check)

        async def work(change: Change) -> registry_pb2.RollbackResponse:
            model = await self._model_in(change, name)
            current = model.get("aliases", {}).get(alias, 0)
            if current:
                lifecycle.check_expected(alias, current, expected_version)
            history = await (
                self._store.alias_history.find(
                    {"model_name": name, "alias": alias, "version": {"$gt": 0}},
                    {"version": 1},
                    session=change.session,
                )
                .sort([("_id", DESCENDING)])
                .limit(MAX_ROLLBACK_HISTORY)
                .to_list()
            )
            numbers = [h["version"] for h in history]
            docs = await self._store.versions.find(
                {"model_name": name, "version": {"$in": sorted(set(numbers))}}, session=change.session
            ).to_list()
            candidates = {
                d["version"]: lifecycle.Candidate(d["version"], d["status"], bool(d.get("rolled_back")))
                for d in docs
            }
            to_version = lifecycle.rollback_target(alias, current, numbers, candidates)
            await self._store.versions.update_one(
                {"model_name": name, "version": current},
                {"$set": {"rolled_back": True, "updated_at": change.now}},
                session=change.session,
            )
            await self._move_alias(change, model, alias, to_version, "rollback", reason)
            return registry_pb2.RollbackResponse(
                model=model_to_proto(model), alias=alias, from_version=current, to_version=to_version
            )

        result: registry_pb2.RollbackResponse = await self._change(actor, "Rollback", target, work)
        return result

    async def alias_history(
        self, name: str, alias: str = "", *, page_size: int = 0, page_token: str = ""
    ) -> Page:
        validation.model_name(name)
        query: Document = {"model_name": name}
        if alias:
            validation.alias(alias)
            query["alias"] = alias
        size = validation.page_size(page_size, self._settings.default_page_size, self._settings.max_page_size)
        position = decode_page_token(page_token, {"before": str})
        if position:
            query["_id"] = {"$lt": object_id(position["before"])}
        if await self._store.models.find_one({"_id": name}, {"_id": 1}) is None:
            raise NotFound(f"model {name!r} not found")
        docs = (
            await self._store.alias_history.find(query).sort([("_id", DESCENDING)]).limit(size + 1).to_list()
        )
        token = encode_page_token({"before": str(docs[size - 1]["_id"])}) if len(docs) > size else ""
        return Page([alias_change_to_proto(d) for d in docs[:size]], token)

    # ------------------------------------------------------- approvals, archive

    async def review(
        self, actor: Actor, name: str, version: int, *, approve: bool, comment: str = ""
    ) -> registry_pb2.ModelVersion:
        action = "ApproveVersion" if approve else "RejectVersion"
        target = resource("models", name, "versions", version)

        def check() -> None:
            validation.model_name(name)
            validation.version_number(version)
            validation.text(comment, "comment", required=not approve)

        await self._validated(actor, action, target, check)

        async def work(change: Change) -> registry_pb2.ModelVersion:
            model = await self._model_in(change, name)
            doc = await self._version_in(change, name, version)
            if approve and self._settings.require_distinct_approver and doc["created_by"] == actor.subject:
                raise PermissionDenied(
                    f"{actor.subject!r} registered version {version} and may not approve it too (four-eyes rule)"
                )
            moves = lifecycle.on_review(doc["status"], version, approve, model.get("aliases", {}))
            decision = lifecycle.APPROVED if approve else lifecycle.REJECTED
            review = {
                "decision": decision,
                "reviewer": actor.subject,
                "comment": comment,
                "reviewed_at": change.now,
            }
            await self._store.versions.update_one(
                {"_id": doc["_id"]},
                {"$set": {"status": decision, "review": review, "updated_at": change.now}},
                session=change.session,
            )
            await change.audit(
                target,
                {"status": status_name(doc["status"])},
                {"status": status_name(decision), "comment": comment},
            )
            kind = (
                events_pb2.MODEL_EVENT_TYPE_VERSION_APPROVED
                if approve
                else events_pb2.MODEL_EVENT_TYPE_VERSION_REJECTED
            )
            await change.emit(kind, name, version=version)
            for move in moves:
                await self._move_alias(change, model, move.alias, move.version, move.action, comment)
            return version_to_proto(await self._version_in(change, name, version))

        result: registry_pb2.ModelVersion = await self._change(actor, action, target, work)
        return result

    async def archive(
        self, actor: Actor, name: str, version: int, reason: str = ""
    ) -> registry_pb2.ModelVersion:
        target = resource("models", name, "versions", version)

        def check() -> None:
            validation.model_name(name)
            validation.version_number(version)
            validation.text(reason, "reason")

        await self._validated(actor, "ArchiveVersion", target, check)

        async def work(change: Change) -> registry_pb2.ModelVersion:
            await self._model_in(change, name)
            doc = await self._version_in(change, name, version)
            lifecycle.check_archivable(doc["status"], version, doc.get("aliases", ()))
            await self._store.versions.update_one(
                {"_id": doc["_id"]},
                {"$set": {"status": lifecycle.ARCHIVED, "updated_at": change.now}},
                session=change.session,
            )
            await change.audit(
                target, {"status": status_name(doc["status"])}, {"status": "ARCHIVED"}, detail=reason
            )
            await change.emit(events_pb2.MODEL_EVENT_TYPE_VERSION_ARCHIVED, name, version=version)
            return version_to_proto(await self._version_in(change, name, version))

        result: registry_pb2.ModelVersion = await self._change(actor, "ArchiveVersion", target, work)
        return result

    # ------------------------------------------------------------------ lineage

    async def lineage(self, name: str, version: int = 0, alias: str = "") -> registry_pb2.LineageResponse:
        doc = await self._resolve_version(name, version, alias)
        response = registry_pb2.LineageResponse(version=version_summary(doc))
        parent = doc.get("parent_version", 0)
        seen = {doc["version"]}
        while parent and parent not in seen and len(response.ancestors) < MAX_LINEAGE_DEPTH:
            seen.add(parent)
            ancestor = await self._store.versions.find_one({"model_name": name, "version": parent})
            if ancestor is None:
                break
            response.ancestors.append(version_summary(ancestor))
            parent = ancestor.get("parent_version", 0)
        children = (
            await self._store.versions.find({"model_name": name, "parent_version": doc["version"]})
            .sort([("version", ASCENDING)])
            .limit(MAX_RELATED)
            .to_list()
        )
        response.children.extend(version_summary(c) for c in children)
        if doc.get("content_sha256"):
            same = (
                await self._store.versions.find(
                    {"content_sha256": doc["content_sha256"], "_id": {"$ne": doc["_id"]}}
                )
                .sort([("model_name", ASCENDING), ("version", ASCENDING)])
                .limit(MAX_RELATED)
                .to_list()
            )
            response.same_data.extend(version_summary(s) for s in same)
        return response

    # -------------------------------------------------------------------- specs

    async def put_spec(self, actor: Actor, spec: model_pb2.ModelSpec) -> model_pb2.ModelSpec:
        name = spec.model_name
        target = resource("models", name, "specs")
        await self._validated(actor, "PutModelSpec", target, lambda: validation.spec(spec))

        async def work(change: Change) -> model_pb2.ModelSpec:
            model = await self._store.models.find_one_and_update(
                {"_id": name},
                {"$inc": {"latest_spec_version": 1}, "$set": {"updated_at": change.now}},
                session=change.session,
                return_document=ReturnDocument.AFTER,
            )
            if model is None:
                raise NotFound(f"model {name!r} not found: create it first", field="spec.model_name")
            number = int(model["latest_spec_version"])
            stored = model_pb2.ModelSpec()
            stored.CopyFrom(spec)
            stored.spec_version = number
            await self._store.specs.insert_one(
                {
                    "model_name": name,
                    "spec_version": number,
                    "proto": stored.SerializeToString(),
                    "created_at": change.now,
                    "created_by": actor.subject,
                },
                session=change.session,
            )
            await change.audit(
                resource("models", name, "specs", number),
                {"spec_version": number - 1} if number > 1 else None,
                {"spec_version": number, "dataset": spec.dataset, "metric": spec.metric},
            )
            await change.emit(events_pb2.MODEL_EVENT_TYPE_MODEL_UPDATED, name)
            return stored

        result: model_pb2.ModelSpec = await self._change(actor, "PutModelSpec", target, work)
        return result

    async def get_spec(self, name: str, spec_version: int = 0) -> model_pb2.ModelSpec:
        validation.model_name(name)
        if spec_version < 0:
            raise InvalidArgument("spec_version: must be >= 1 (or 0 for the latest)", field="spec_version")
        query: Document = {"model_name": name}
        if spec_version:
            query["spec_version"] = spec_version
        docs = await self._store.specs.find(query).sort([("spec_version", DESCENDING)]).limit(1).to_list()
        if not docs:
            if await self._store.models.find_one({"_id": name}, {"_id": 1}) is None:
                raise NotFound(f"model {name!r} not found")
            which = f"spec version {spec_version}" if spec_version else "spec"
            raise NotFound(f"model {name!r} has no {which}")
        return spec_to_proto(docs[0])

    async def list_specs(self, name: str, *, page_size: int = 0, page_token: str = "") -> Page:
        validation.model_name(name)
        size = validation.page_size(page_size, self._settings.default_page_size, self._settings.max_page_size)
        position = decode_page_token(page_token, {"before": int})
        if await self._store.models.find_one({"_id": name}, {"_id": 1}) is None:
            raise NotFound(f"model {name!r} not found")
        query: Document = {"model_name": name}
        if position:
            query["spec_version"] = {"$lt": position["before"]}
        docs = (
            await self._store.specs.find(query).sort([("spec_version", DESCENDING)]).limit(size + 1).to_list()
        )
        token = encode_page_token({"before": docs[size - 1]["spec_version"]}) if len(docs) > size else ""
        return Page([spec_to_proto(d) for d in docs[:size]], token)

    # -------------------------------------------------------------------- audit

    async def audit_log(self, request: registry_pb2.ListAuditRecordsRequest) -> Page:
        query: Document = {}
        for field in ("actor", "action", "outcome", "request_id"):
            value = getattr(request, field)
            if value:
                validation.text(value, field, validation.MAX_SHORT_TEXT)
                query[field] = value
        if request.resource_prefix:
            validation.text(request.resource_prefix, "resource_prefix", 512)
            query["resource"] = {"$regex": "^" + re.escape(request.resource_prefix)}
        bounds: Document = {}
        if request.HasField("since"):
            bounds["$gte"] = request.since.ToDatetime(UTC)
        if request.HasField("until"):
            bounds["$lt"] = request.until.ToDatetime(UTC)
        if bounds:
            query["occurred_at"] = bounds
        size = validation.page_size(
            request.page_size, self._settings.default_page_size, self._settings.max_page_size
        )
        position = decode_page_token(request.page_token, {"before": str})
        if position:
            query["_id"] = {"$lt": object_id(position["before"])}
        docs = await self._store.audit.find(query).sort([("_id", DESCENDING)]).limit(size + 1).to_list()
        token = encode_page_token({"before": str(docs[size - 1]["_id"])}) if len(docs) > size else ""
        return Page([audit_to_proto(d) for d in docs[:size]], token)


def policy_name(doc: Mapping[str, Any]) -> str:
    policy = doc.get("promotion_policy", registry_pb2.PROMOTION_POLICY_AUTO)
    return registry_pb2.PromotionPolicy.Name(policy).removeprefix("PROMOTION_POLICY_")


def tag_conditions(tags: Mapping[str, str], field: str) -> list[Document]:
    validation.tags(tags, field)
    return [{"tags": {"$elemMatch": {"k": k, "v": v}}} for k, v in sorted(tags.items())]


def object_id(text: str) -> ObjectId:
    try:
        return ObjectId(text)
    except (InvalidId, TypeError):
        raise InvalidArgument("page_token: not a token this API returned", field="page_token") from None


__all__ = ["Actor", "FailedPrecondition", "Page", "Registry", "ReceivedArtifact"]
