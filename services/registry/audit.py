"""Reading the audit log (it is written by every change, see :mod:`services.registry.changes`)."""

from __future__ import annotations

from datetime import UTC

from services.common.proto.mlops.v1 import registry_pb2
from services.registry import access, validation
from services.registry.changes import UseCases
from services.registry.store import Page
from services.registry.store.audit import AuditFilter, AuditRepository


class AuditUseCases(UseCases):
    async def audit_log(
        self, request: registry_pb2.ListAuditRecordsRequest
    ) -> Page[registry_pb2.AuditRecord]:
        """The records ``request`` asks for, newest first (admins only: the edge checks)."""
        if request.team:
            access.team(request.team)
        for field in ("actor", "action", "outcome", "request_id"):
            value = getattr(request, field)
            if value:
                validation.text(value, field, validation.MAX_SHORT_TEXT)
        if request.resource_prefix:
            validation.text(request.resource_prefix, "resource_prefix", 512)
        where = AuditFilter(
            actor=request.actor,
            action=request.action,
            outcome=request.outcome,
            request_id=request.request_id,
            resource_prefix=request.resource_prefix,
            since=request.since.ToDatetime(UTC) if request.HasField("since") else None,
            until=request.until.ToDatetime(UTC) if request.HasField("until") else None,
            team=request.team,
        )
        page = self._page(AuditRepository.NEWEST_FIRST, request.page_size, request.page_token)
        return await self._store.audit.page(where, page)
