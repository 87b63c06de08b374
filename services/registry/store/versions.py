"""The ``model_versions`` collection: one document per version of a model."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pymongo import ASCENDING, IndexModel

from services.common.mongo import Document
from services.common.proto.mlops.v1 import registry_pb2
from services.registry import lifecycle
from services.registry.store.documents import version_document, version_summary, version_to_proto
from services.registry.store.errors import database_call
from services.registry.store.models import tag_conditions, team_conditions
from services.registry.store.pagination import Keyset, Page, PageRequest, SortKey, read_page
from services.registry.store.repository import Repository

ModelVersion = registry_pb2.ModelVersion

_COMPARISONS = {
    registry_pb2.COMPARISON_LT: "$lt",
    registry_pb2.COMPARISON_LE: "$lte",
    registry_pb2.COMPARISON_GT: "$gt",
    registry_pb2.COMPARISON_GE: "$gte",
    registry_pb2.COMPARISON_EQ: "$eq",
}
COMPARISONS = frozenset(_COMPARISONS)
"""The metric comparisons a search can make."""


@dataclass(frozen=True)
class VersionFilter:
    """Which versions a search returns: all of these must hold (empty: no condition)."""

    model_name: str = ""
    dataset: str = ""
    content_sha256: str = ""
    train_request_id: str = ""
    code_version: str = ""
    alias: str = ""
    status: registry_pb2.VersionStatus.ValueType = registry_pb2.VERSION_STATUS_UNSPECIFIED
    tags: Mapping[str, str] = field(default_factory=dict)
    metrics: Sequence[registry_pb2.MetricFilter] = ()
    """Each with an ``op`` among :data:`COMPARISONS`."""
    team: str = ""
    visible_teams: frozenset[str] | None = None
    """The teams the caller may see (None: every team)."""


def _conditions(where: VersionFilter) -> list[Document]:
    conditions: list[Document] = []
    for name in ("model_name", "dataset", "content_sha256", "train_request_id", "code_version"):
        if value := getattr(where, name):
            conditions.append({name: value})
    if where.alias:
        conditions.append({"aliases": where.alias})
    if where.status:
        conditions.append({"status": where.status})
    conditions += tag_conditions(where.tags)
    conditions += team_conditions(where.team, where.visible_teams)
    for metric in where.metrics:
        condition = {_COMPARISONS[metric.op]: metric.value}
        conditions.append({"metrics": {"$elemMatch": {"k": metric.name, "v": condition}}})
    return conditions


class VersionRepository(Repository):
    NEWEST_FIRST = Keyset(SortKey("version", int, descending=True, token="before"))
    """A model's versions, newest first."""
    BY_MODEL = Keyset(
        SortKey("model_name", str, token="model"), SortKey("version", int, descending=True, token="version")
    )
    """Versions of any model: by model name, then newest first."""

    async def ensure_indexes(self) -> None:
        await self._collection.create_indexes(
            [
                IndexModel([("model_name", ASCENDING), ("version", ASCENDING)], unique=True),
                IndexModel([("dataset", ASCENDING)]),
                IndexModel([("content_sha256", ASCENDING)]),
                IndexModel([("train_request_id", ASCENDING)]),
                IndexModel([("model_name", ASCENDING), ("parent_version", ASCENDING)]),
                IndexModel([("tags.k", ASCENDING), ("tags.v", ASCENDING)]),
                IndexModel([("team", ASCENDING), ("model_name", ASCENDING)]),
            ]
        )

    @database_call
    async def insert(
        self, version: ModelVersion, status: registry_pb2.VersionStatus.ValueType, now: datetime
    ) -> None:
        """Store a new version (``version`` is its immutable part) in ``status``."""
        await self._collection.insert_one(version_document(version, status, now), session=self.session)

    @database_call
    async def get(self, name: str, number: int) -> ModelVersion | None:
        doc = await self._collection.find_one({"model_name": name, "version": number}, session=self.session)
        return None if doc is None else version_to_proto(doc)

    async def review(
        self,
        name: str,
        number: int,
        decision: registry_pb2.VersionStatus.ValueType,
        *,
        reviewer: str,
        comment: str,
        now: datetime,
    ) -> None:
        """Record a person's decision on a pending version, which becomes its status."""
        review = {"decision": decision, "reviewer": reviewer, "comment": comment, "reviewed_at": now}
        await self._set(name, number, {"status": decision, "review": review, "updated_at": now})

    async def set_status(
        self, name: str, number: int, status: registry_pb2.VersionStatus.ValueType, now: datetime
    ) -> None:
        await self._set(name, number, {"status": status, "updated_at": now})

    async def mark_rolled_back(self, name: str, number: int, now: datetime) -> None:
        """An alias was rolled back from this version: rollback skips it from now on."""
        await self._set(name, number, {"rolled_back": True, "updated_at": now})

    @database_call
    async def _set(self, name: str, number: int, values: Document) -> None:
        await self._collection.update_one(
            {"model_name": name, "version": number}, {"$set": values}, session=self.session
        )

    @database_call
    async def add_alias(self, name: str, number: int, alias: str, now: datetime, *, chosen: bool) -> None:
        """``alias`` now points at this version; ``chosen`` (pointed at on purpose rather than
        by a rollback) makes it eligible for rollback again."""
        update: Document = {"$addToSet": {"aliases": alias}, "$set": {"updated_at": now}}
        if chosen:
            update["$set"]["rolled_back"] = False
        await self._collection.update_one(
            {"model_name": name, "version": number}, update, session=self.session
        )

    @database_call
    async def remove_alias(self, name: str, number: int, alias: str, now: datetime) -> None:
        await self._collection.update_one(
            {"model_name": name, "version": number},
            {"$pull": {"aliases": alias}, "$set": {"updated_at": now}},
            session=self.session,
        )

    @database_call
    async def candidates(self, name: str, numbers: Iterable[int]) -> dict[int, lifecycle.Candidate]:
        """The versions ``numbers`` as rollback weighs them."""
        docs = await self._collection.find(
            {"model_name": name, "version": {"$in": sorted(set(numbers))}},
            {"version": 1, "status": 1, "rolled_back": 1},
            session=self.session,
        ).to_list()
        return {
            d["version"]: lifecycle.Candidate(d["version"], d["status"], bool(d.get("rolled_back")))
            for d in docs
        }

    @database_call
    async def children(self, name: str, number: int, limit: int) -> list[ModelVersion]:
        """Versions of the model whose parent is ``number``, oldest first (summaries)."""
        docs = (
            await self._collection.find({"model_name": name, "parent_version": number}, session=self.session)
            .sort([("version", ASCENDING)])
            .limit(limit)
            .to_list()
        )
        return [version_summary(d) for d in docs]

    @database_call
    async def same_data(
        self, version: ModelVersion, limit: int, visible_teams: frozenset[str] | None = None
    ) -> list[ModelVersion]:
        """Other versions, of any model of the teams a caller sees (None: every team), trained
        on exactly the data ``version`` was (summaries)."""
        content = version.lineage.data.content_sha256
        if not content:
            return []
        others = {"$or": [{"model_name": {"$ne": version.model_name}}, {"version": {"$ne": version.version}}]}
        query: Document = {"content_sha256": content, **others}
        if conditions := team_conditions("", visible_teams):
            query["$and"] = conditions
        docs = (
            await self._collection.find(query, session=self.session)
            .sort([("model_name", ASCENDING), ("version", ASCENDING)])
            .limit(limit)
            .to_list()
        )
        return [version_summary(d) for d in docs]

    @database_call
    async def page(self, name: str, request: PageRequest) -> Page[ModelVersion]:
        """A model's versions, newest first (summaries)."""
        return await read_page(
            self._collection, {"model_name": name}, self.NEWEST_FIRST, request, version_summary, self.session
        )

    @database_call
    async def search(self, where: VersionFilter, request: PageRequest) -> Page[ModelVersion]:
        """Versions of any model matching ``where`` (summaries)."""
        conditions = _conditions(where)
        query: Document = {"$and": conditions} if conditions else {}
        return await read_page(self._collection, query, self.BY_MODEL, request, version_summary, self.session)
