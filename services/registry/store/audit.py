"""The ``audit_log`` collection: who did what to which resource, and how it ended. Append-only."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel

from services.common.mongo import Document
from services.common.proto.mlops.v1 import registry_pb2
from services.registry.store.documents import audit_to_proto
from services.registry.store.errors import database_call
from services.registry.store.pagination import Keyset, Page, PageRequest, SortKey, read_page
from services.registry.store.repository import Repository

AuditRecord = registry_pb2.AuditRecord


@dataclass(frozen=True)
class AuditEntry:
    """One record: ``before`` and ``after`` are the resource's relevant state (None: it did
    not exist, or the call was refused)."""

    occurred_at: datetime
    actor: str
    action: str
    resource: str
    outcome: str
    request_id: str
    transport: str
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None
    detail: str = ""


@dataclass(frozen=True)
class AuditFilter:
    """Which records a listing returns: all of these must hold (empty: no condition)."""

    actor: str = ""
    action: str = ""
    outcome: str = ""
    request_id: str = ""
    resource_prefix: str = ""
    since: datetime | None = None
    """Inclusive."""
    until: datetime | None = None
    """Exclusive."""


class AuditRepository(Repository):
    NEWEST_FIRST = Keyset(SortKey("_id", ObjectId, descending=True, token="before"))
    """Records in the order they were written, newest first."""

    async def ensure_indexes(self) -> None:
        await self._collection.create_indexes(
            [
                IndexModel([("occurred_at", DESCENDING)]),
                IndexModel([("actor", ASCENDING), ("occurred_at", DESCENDING)]),
                IndexModel([("resource", ASCENDING), ("occurred_at", DESCENDING)]),
                IndexModel([("request_id", ASCENDING)]),
            ]
        )

    @database_call
    async def add(self, entry: AuditEntry) -> None:
        document = dataclasses.asdict(entry)
        document["before"] = dict(entry.before) if entry.before else None
        document["after"] = dict(entry.after) if entry.after else None
        await self._collection.insert_one(document, session=self.session)

    @database_call
    async def page(self, where: AuditFilter, request: PageRequest) -> Page[AuditRecord]:
        query: Document = {}
        for name in ("actor", "action", "outcome", "request_id"):
            if value := getattr(where, name):
                query[name] = value
        if where.resource_prefix:
            query["resource"] = {"$regex": "^" + re.escape(where.resource_prefix)}
        bounds: Document = {}
        if where.since is not None:
            bounds["$gte"] = where.since
        if where.until is not None:
            bounds["$lt"] = where.until
        if bounds:
            query["occurred_at"] = bounds
        return await read_page(
            self._collection, query, self.NEWEST_FIRST, request, audit_to_proto, self.session
        )
