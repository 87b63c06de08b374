"""Aliases and promotion: pointing an alias at a version (compare-and-set), removing it,
rolling it back, the history of its moves, and the approvals of manual models."""

from __future__ import annotations

from services.common.aliases import PRODUCTION
from services.common.proto.mlops.v1 import events_pb2, registry_pb2
from services.registry import lifecycle, validation
from services.registry.changes import Actor, Change, UseCases, resource, status_name
from services.registry.errors import InvalidArgument, NotFound, PermissionDenied
from services.registry.store import Page
from services.registry.store.aliases import AliasHistoryRepository
from services.registry.store.documents import timestamp

Model = registry_pb2.Model

MAX_ROLLBACK_HISTORY = 500
"""How far back in an alias's history rollback looks for a version to return to."""


async def move_alias(
    change: Change, model: Model, alias: str, version: int, action: str, reason: str = ""
) -> int:
    """Point ``alias`` at ``version`` (0: remove it), with history, audit and event; returns
    where it pointed before.

    ``model`` is the model as read in this transaction; its aliases are updated in place so
    later moves in the same transaction see this one.
    """
    name = model.name
    previous = model.aliases.get(alias, 0)
    if previous == version:
        return previous
    tx, now = change.tx, change.now
    if version:
        model.aliases[alias] = version
    else:
        del model.aliases[alias]
    await tx.models.point_alias(name, alias, version, now)
    if previous:
        await tx.versions.remove_alias(name, previous, alias, now)
    if version:
        # Pointed at again on purpose: rollback may return to it later.
        await tx.versions.add_alias(name, version, alias, now, chosen=action == "set")
    await tx.alias_history.record(
        name,
        registry_pb2.AliasChange(
            alias=alias,
            version=version,
            previous_version=previous,
            actor=change.actor.subject,
            changed_at=timestamp(now),
            reason=reason,
            request_id=change.actor.request_id,
            action=action,
        ),
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


def _check_alias_of(name: str, alias: str, expected_version: int) -> None:
    """A model's alias, expected to point anywhere (0) or at a version (for a delete or a rollback)."""
    validation.model_name(name)
    validation.alias(alias)
    if expected_version < 0:
        raise InvalidArgument("expected_version: 0 (any) or a version number", field="expected_version")


class AliasUseCases(UseCases):
    async def set_alias(
        self, actor: Actor, name: str, alias: str, version: int, expected_version: int = 0, reason: str = ""
    ) -> Model:
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

        async def work(change: Change) -> Model:
            model = await change.model(name)
            lifecycle.check_expected(alias, model.aliases.get(alias, 0), expected_version)
            found = await change.version(name, version)
            lifecycle.check_alias_target(alias, version, found.status, model.promotion_policy)
            await move_alias(change, model, alias, version, "set", reason)
            return model

        return await self._change(actor, "SetAlias", target, work)

    async def delete_alias(self, actor: Actor, name: str, alias: str, expected_version: int = 0) -> Model:
        target = resource("models", name, "aliases", alias)

        def check() -> None:
            _check_alias_of(name, alias, expected_version)

        await self._validated(actor, "DeleteAlias", target, check)

        async def work(change: Change) -> Model:
            model = await change.model(name)
            current = model.aliases.get(alias, 0)
            if not current:
                raise NotFound(f"model {name!r} has no alias {alias!r}")
            lifecycle.check_expected(alias, current, expected_version)
            await move_alias(change, model, alias, 0, "delete")
            return model

        return await self._change(actor, "DeleteAlias", target, work)

    async def rollback(
        self, actor: Actor, name: str, alias: str = "", expected_version: int = 0, reason: str = ""
    ) -> registry_pb2.RollbackResponse:
        alias = alias or PRODUCTION
        target = resource("models", name, "aliases", alias)

        def check() -> None:
            _check_alias_of(name, alias, expected_version)
            validation.text(reason, "reason")

        await self._validated(actor, "Rollback", target, check)

        async def work(change: Change) -> registry_pb2.RollbackResponse:
            model = await change.model(name)
            current = model.aliases.get(alias, 0)
            if current:
                lifecycle.check_expected(alias, current, expected_version)
            history = await change.tx.alias_history.targets(name, alias, MAX_ROLLBACK_HISTORY)
            candidates = await change.tx.versions.candidates(name, history)
            to_version = lifecycle.rollback_target(alias, current, history, candidates)
            await change.tx.versions.mark_rolled_back(name, current, change.now)
            await move_alias(change, model, alias, to_version, "rollback", reason)
            return registry_pb2.RollbackResponse(
                model=model, alias=alias, from_version=current, to_version=to_version
            )

        return await self._change(actor, "Rollback", target, work)

    async def alias_history(
        self, actor: Actor, name: str, alias: str = "", *, page_size: int = 0, page_token: str = ""
    ) -> Page[registry_pb2.AliasChange]:
        validation.model_name(name)
        if alias:
            validation.alias(alias)
        request = self._page(AliasHistoryRepository.NEWEST_FIRST, page_size, page_token)
        await self._model(actor, name)
        return await self._store.alias_history.page(name, alias, request)

    async def review(
        self, actor: Actor, name: str, version: int, *, approve: bool, comment: str = ""
    ) -> registry_pb2.ModelVersion:
        """Approve or reject a version waiting for approval; approving moves production to it."""
        action = "ApproveVersion" if approve else "RejectVersion"
        target = resource("models", name, "versions", version)

        def check() -> None:
            validation.model_name(name)
            validation.version_number(version)
            validation.text(comment, "comment", required=not approve)

        await self._validated(actor, action, target, check)

        async def work(change: Change) -> registry_pb2.ModelVersion:
            model = await change.model(name)
            found = await change.version(name, version)
            if approve and self._settings.require_distinct_approver and found.created_by == actor.subject:
                raise PermissionDenied(
                    f"{actor.subject!r} registered version {version} and may not approve it too (four-eyes rule)"
                )
            moves = lifecycle.on_review(found.status, version, approve, model.aliases)
            decision = lifecycle.APPROVED if approve else lifecycle.REJECTED
            await change.tx.versions.review(
                name, version, decision, reviewer=actor.subject, comment=comment, now=change.now
            )
            await change.audit(
                target,
                {"status": status_name(found.status)},
                {"status": status_name(decision), "comment": comment},
            )
            kind = (
                events_pb2.MODEL_EVENT_TYPE_VERSION_APPROVED
                if approve
                else events_pb2.MODEL_EVENT_TYPE_VERSION_REJECTED
            )
            await change.emit(kind, name, version=version)
            for move in moves:
                await move_alias(change, model, move.alias, move.version, move.action, comment)
            return await change.version(name, version)

        return await self._change(actor, action, target, work)
