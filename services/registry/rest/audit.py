"""The audit log (admin scope)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from services.common.proto.mlops.v1 import registry_pb2
from services.registry import rest_models as shapes
from services.registry.errors import InvalidArgument
from services.registry.rest.deps import Admin, RegistryDep
from services.registry.rest.params import PageSize, PageToken

router = APIRouter(tags=["audit"])


@router.get("/audit", name="ListAuditRecords", response_model=shapes.AuditLog)
async def audit_log(
    registry: RegistryDep,
    admin: Admin,
    actor: Annotated[str, Query(max_length=1024)] = "",
    action: Annotated[str, Query(max_length=1024)] = "",
    resource_prefix: Annotated[str, Query(max_length=1024, description="e.g. models/demo")] = "",
    outcome: Annotated[str, Query(max_length=1024)] = "",
    request_id: Annotated[str, Query(max_length=1024)] = "",
    team: Annotated[str, Query(max_length=1024)] = "",
    since: AwareDatetime | None = None,
    until: AwareDatetime | None = None,
    page_size: PageSize = 0,
    page_token: PageToken = "",
) -> Any:
    """The append-only audit log, newest first: who did what to which resource, the state
    before and after, the outcome (denials included) and the request id."""
    query = registry_pb2.ListAuditRecordsRequest(
        actor=actor,
        action=action,
        resource_prefix=resource_prefix,
        outcome=outcome,
        request_id=request_id,
        team=team,
        page_size=page_size,
        page_token=page_token,
    )
    try:
        if since is not None:
            query.since.FromDatetime(since)
        if until is not None:
            query.until.FromDatetime(until)
    except (ValueError, OverflowError) as exc:
        raise InvalidArgument(f"since/until: {exc}", field="since") from None
    page = await registry.audit_log(query)
    return shapes.paged(shapes.AuditLog, registry_pb2.ListAuditRecordsResponse, "records", page)
