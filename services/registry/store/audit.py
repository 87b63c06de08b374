"""The ``audit_log`` collection: who did what to which resource, and how it ended.

Append-only but for two things: a record of repeated refusals counts the repeats that
came after it (see :mod:`services.registry.refusals`), and records expire after the
configured retention (a TTL index on ``occurred_at``; MongoDB sweeps about once a minute).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pymongo.errors
from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection

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
    team: str = ""
    """The team of the resource, when known."""
    count: int = 1
    """How many refusals the record stands for (see :meth:`AuditRepository.add_repeats`)."""


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
    team: str = ""


class AuditRepository(Repository):
    NEWEST_FIRST = Keyset(SortKey("_id", ObjectId, descending=True, token="before"))
    """Records in the order they were written, newest first."""

    async def ensure_indexes(self, retention_seconds: int) -> None:
        """Indexes for the listings, and records expiring ``retention_seconds`` after they
        were written."""
        await self._collection.create_indexes(
            [
                IndexModel([("actor", ASCENDING), ("occurred_at", DESCENDING)]),
                IndexModel([("resource", ASCENDING), ("occurred_at", DESCENDING)]),
                IndexModel([("team", ASCENDING), ("occurred_at", DESCENDING)]),
                IndexModel([("request_id", ASCENDING)]),
            ]
        )
        await ensure_ttl(self._collection, "occurred_at", retention_seconds)

    @database_call
    async def add(self, entry: AuditEntry) -> object:
        """Append ``entry``; returns the record's id."""
        document = dataclasses.asdict(entry)
        document["before"] = dict(entry.before) if entry.before else None
        document["after"] = dict(entry.after) if entry.after else None
        result = await self._collection.insert_one(document, session=self.session)
        return result.inserted_id

    @database_call
    async def add_repeats(self, record_id: object, count: int, last_at: datetime) -> None:
        """``count`` more refusals like the record's, the last one at ``last_at``."""
        await self._collection.update_one(
            {"_id": record_id},
            {"$inc": {"count": count}, "$max": {"last_at": last_at}},
            session=self.session,
        )

    @database_call
    async def page(self, where: AuditFilter, request: PageRequest) -> Page[AuditRecord]:
        query: Document = {}
        for name in ("actor", "action", "outcome", "request_id", "team"):
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


async def ensure_ttl(collection: AsyncCollection[Document], field: str, seconds: int) -> None:
    """A TTL index expiring documents ``seconds`` after their ``field``; an existing one with
    another period is changed in place (``collMod``) rather than refused."""
    name = f"{field}_ttl"
    try:
        await collection.create_index([(field, ASCENDING)], expireAfterSeconds=seconds, name=name)
    except pymongo.errors.OperationFailure as exc:
        if exc.code not in (85, 86):  # IndexOptionsConflict, IndexKeySpecsConflict
            raise
        await collection.database.command(
            "collMod", collection.name, index={"name": name, "expireAfterSeconds": seconds}
        )
