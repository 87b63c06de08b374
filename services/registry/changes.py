"""How every registry change is made: one transaction holding the change, its audit
record(s) and the events to publish (the outbox), so a change is never visible without
its audit trail and its event, and a refused change leaves nothing behind. Refusals are
audited too, outside the (aborted) transaction, repeated ones aggregated (see
:mod:`.refusals`). Every record names the team of the resource.

Access to a model is checked where the model is read (see :mod:`.access`): a model of a
team the caller does not act for is NOT_FOUND, one it sees but lacks the operation's
scope for in that team PERMISSION_DENIED.

:class:`UseCases` is what the use-case modules (:mod:`.models`, :mod:`.versions`,
:mod:`.aliases`, :mod:`.specs`, :mod:`.audit`) build on.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from services.common.auth import Principal, Revocation, TokenIssuer
from services.common.logging import get_logger
from services.common.proto.mlops.v1 import events_pb2, registry_pb2
from services.common.values import printable
from services.registry import validation
from services.registry.access import ACTION_SCOPES
from services.registry.errors import NotFound, PermissionDenied, PlatformError
from services.registry.refusals import Refusals
from services.registry.settings import RegistrySettings
from services.registry.store import DATABASE_FAILURES, Store, Transaction
from services.registry.store.audit import AuditEntry
from services.registry.store.documents import timestamp
from services.registry.store.pagination import Keyset, PageRequest

log = get_logger(__name__)

T = TypeVar("T")


ANONYMOUS = "anonymous"
"""The actor of a call without a usable token, as the audit log names it."""


@dataclass(frozen=True)
class Actor:
    """Who asked (and what they may do in which team), under which request id, over which
    transport (for the audit log)."""

    principal: Principal
    request_id: str = ""
    transport: str = "grpc"

    @classmethod
    def anonymous(cls, request_id: str = "", transport: str = "grpc") -> Actor:
        return cls(Principal(ANONYMOUS, {}), request_id, transport)

    @property
    def subject(self) -> str:
        return self.principal.subject

    def visible_teams(self) -> frozenset[str] | None:
        """The teams whose resources the caller sees (None: every team)."""
        return self.principal.visible_teams()


def resource(*parts: object) -> str:
    """``models/<name>/...`` for the audit log, printable (see :func:`printable`)."""
    return printable("/".join(str(part) for part in parts))[:512]


def status_name(status: int) -> str:
    """``READY`` for ``VERSION_STATUS_READY``, as the audit log names statuses."""
    return registry_pb2.VersionStatus.Name(status).removeprefix("VERSION_STATUS_")  # type: ignore[arg-type]


def policy_name(policy: int) -> str:
    """``MANUAL`` for ``PROMOTION_POLICY_MANUAL``, as the audit log names policies."""
    return registry_pb2.PromotionPolicy.Name(policy).removeprefix("PROMOTION_POLICY_")  # type: ignore[arg-type]


def audit_entry(
    actor: Actor,
    action: str,
    target: str,
    outcome: str,
    now: datetime,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    detail: str = "",
    team: str = "",
) -> AuditEntry:
    return AuditEntry(
        occurred_at=now,
        actor=actor.subject,
        action=action,
        resource=target,
        outcome=outcome,
        request_id=actor.request_id,
        transport=actor.transport,
        before=before,
        after=after,
        detail=detail[:2000],
        team=team,
    )


def visible(actor: Actor, name: str, model: registry_pb2.Model | None) -> registry_pb2.Model:
    """``model`` if the caller may see it; NOT_FOUND, as for a model that does not exist,
    when it belongs to a team the caller does not act for."""
    if model is None or not actor.principal.acts_for(model.team):
        raise NotFound(f"model {name!r} not found")
    return model


class Change:
    """One change in progress: its transaction, and the side records it writes there."""

    def __init__(self, tx: Transaction, actor: Actor, action: str):
        self.tx = tx
        self.actor = actor
        self.action = action
        self.now = datetime.now(UTC)
        self.team = ""
        """The team of the resource changed, once known: every audit record names it."""

    async def audit(
        self, target: str, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, detail: str = ""
    ) -> None:
        await self.tx.audit.add(
            audit_entry(self.actor, self.action, target, "ok", self.now, before, after, detail, self.team)
        )

    def owned(self, name: str, model: registry_pb2.Model | None) -> registry_pb2.Model:
        """``model`` if the caller may make this change to it (see :func:`visible`, then the
        action's scope in the model's team); its team becomes the change's."""
        if model is not None:
            self.team = model.team  # named in the refusal's audit record too
        model = visible(self.actor, name, model)
        scope = ACTION_SCOPES[self.action]
        if not self.actor.principal.may(scope, model.team):
            raise PermissionDenied(
                f"{self.actor.subject!r} lacks scope {scope.value!r} in team {model.team!r}"
            )
        return model

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
        await self.tx.outbox.add(event, key=model_name, now=self.now)

    async def model(self, name: str) -> registry_pb2.Model:
        """The model, marked as changed: every change to a model's versions or aliases writes
        its document, so concurrent ones conflict and retry in turn."""
        return self.owned(name, await self.tx.models.touch(name, self.now))

    async def version(self, name: str, version: int) -> registry_pb2.ModelVersion:
        found = await self.tx.versions.get(name, version)
        if found is None:
            raise NotFound(f"model {name!r} has no version {version}")
        return found


class UseCases:
    """The store, the settings, and the way every change is made and every refusal audited."""

    def __init__(
        self,
        store: Store,
        settings: RegistrySettings,
        on_commit: Callable[[], None] = lambda: None,
        *,
        issuer: TokenIssuer | None = None,
        on_revoke: Callable[[Revocation], object] = lambda revocation: None,
    ):
        self._store = store
        self._artifacts = store.artifacts
        self._settings = settings
        self._on_commit = on_commit
        self._issuer = issuer
        """Signs the tokens this registry issues (None: it issues none)."""
        self._on_revoke = on_revoke
        """Told of each revocation at once (the registry's own revocation list)."""
        self.refusals = Refusals(store.audit, settings.refusal_window_seconds)

    async def _change(
        self, actor: Actor, action: str, target: str, work: Callable[[Change], Awaitable[T]]
    ) -> T:
        """Run ``work`` in a transaction with its audit and events; audit a refusal."""
        team = ""

        async def attempt(tx: Transaction) -> T:
            nonlocal team
            change = Change(tx, actor, action)
            try:
                return await work(change)
            finally:
                team = change.team

        try:
            result = await self._store.transaction(attempt)
        except PlatformError as exc:
            await self._refused(actor, action, target, exc, team)
            raise
        self._on_commit()
        return result

    async def record_refusal(
        self, actor: Actor, action: str, target: str, outcome: str, detail: str, team: str = ""
    ) -> None:
        """Audit a refused call (denied, invalid, conflicting ...) outside any transaction;
        repeats by the same caller within the refusal window are counted on one record."""
        await self.refusals.record(
            audit_entry(actor, action, target, outcome, datetime.now(UTC), detail=detail, team=team)
        )

    async def _refused(
        self, actor: Actor, action: str, target: str, exc: PlatformError, team: str = ""
    ) -> None:
        """Audit ``exc`` if the registry refused the call; a failing database refused nothing
        (and could not take the record)."""
        if not isinstance(exc, DATABASE_FAILURES):
            await self.record_refusal(actor, action, target, exc.kind.outcome, exc.message, team)

    async def _validated(self, actor: Actor, action: str, target: str, check: Callable[[], None]) -> None:
        try:
            check()
        except PlatformError as exc:
            await self._refused(actor, action, target, exc)
            raise

    async def _model(self, actor: Actor, name: str) -> registry_pb2.Model:
        """The model, if the caller may see it (NOT_FOUND otherwise)."""
        return visible(actor, name, await self._store.models.get(name))

    def _page(self, keyset: Keyset, page_size: int, page_token: str) -> PageRequest:
        """The page asked for, its size bounded by the settings; InvalidArgument naming
        ``page_size`` or ``page_token``."""
        size = validation.page_size(page_size, self._settings.default_page_size, self._settings.max_page_size)
        return keyset.request(size, page_token)
