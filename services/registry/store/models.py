"""The ``models`` collection: one document per model, holding its aliases and counters.

Every change to a model's versions, aliases or specs writes this document, so concurrent
changes to one model conflict here and the transaction retries them one after the other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import pymongo.errors
from pymongo import ASCENDING, IndexModel, ReturnDocument

from services.common.mongo import Document
from services.common.proto.mlops.v1 import registry_pb2
from services.registry.errors import AlreadyExists
from services.registry.store.documents import key_values, model_to_proto
from services.registry.store.errors import database_call
from services.registry.store.pagination import Keyset, Page, PageRequest, SortKey, read_page
from services.registry.store.repository import Repository

Model = registry_pb2.Model


@dataclass(frozen=True)
class ModelFilter:
    """Which models a list returns: all of these must hold (empty: no condition)."""

    alias: str = ""
    name_contains: str = ""
    """Case-insensitive, taken literally."""
    tags: Mapping[str, str] = field(default_factory=dict)
    team: str = ""
    visible_teams: frozenset[str] | None = None
    """The teams the caller may see (None: every team)."""


def team_conditions(team: str, visible: frozenset[str] | None) -> list[Document]:
    """Conditions matching records (models or versions) of ``team`` (empty: any) among the
    teams a caller sees (None: every team)."""
    conditions: list[Document] = []
    if team:
        conditions.append({"team": team})
    if visible is not None:
        conditions.append({"team": {"$in": sorted(visible)}})
    return conditions


def tag_conditions(tags: Mapping[str, str]) -> list[Document]:
    """Conditions matching records (models or versions) that carry every one of ``tags``."""
    return [{"tags": {"$elemMatch": {"k": k, "v": v}}} for k, v in sorted(tags.items())]


class ModelRepository(Repository):
    BY_NAME = Keyset(SortKey("_id", str, token="after"))

    async def ensure_indexes(self) -> None:
        await self._collection.create_indexes(
            [
                IndexModel([("tags.k", ASCENDING), ("tags.v", ASCENDING)]),
                IndexModel([("team", ASCENDING), ("_id", ASCENDING)]),
            ]
        )

    @database_call
    async def get(self, name: str) -> Model | None:
        doc = await self._collection.find_one({"_id": name}, session=self.session)
        return None if doc is None else model_to_proto(doc)

    @database_call
    async def exists(self, name: str) -> bool:
        return await self._collection.find_one({"_id": name}, {"_id": 1}, session=self.session) is not None

    @database_call
    async def aliases(self, name: str) -> dict[str, int] | None:
        """Where the model's aliases point; None when there is no such model."""
        doc = await self._collection.find_one({"_id": name}, {"aliases": 1}, session=self.session)
        return None if doc is None else dict(doc.get("aliases", {}))

    @database_call
    async def create(
        self,
        name: str,
        *,
        team: str,
        description: str,
        tags: Mapping[str, str],
        policy: registry_pb2.PromotionPolicy.ValueType,
        created_by: str,
        now: datetime,
    ) -> Model:
        """A new model of ``team`` without versions; AlreadyExists when the name is taken (in
        any team: names are global)."""
        doc: Document = {
            "_id": name,
            "team": team,
            "description": description,
            "tags": key_values(tags),
            "promotion_policy": policy,
            "aliases": {},
            "latest_version": 0,
            "latest_spec_version": 0,
            "created_at": now,
            "updated_at": now,
            "created_by": created_by,
        }
        try:
            await self._collection.insert_one(doc, session=self.session)
        except pymongo.errors.DuplicateKeyError as exc:
            if exc.has_error_label("TransientTransactionError"):
                raise  # a concurrent creation: the transaction retries and finds it
            raise AlreadyExists(f"model {name!r} already exists") from None
        return model_to_proto(doc)

    async def touch(self, name: str, now: datetime) -> Model | None:
        """The model, marked as changed now (None when there is no such model)."""
        return await self._updated(name, {"$set": {"updated_at": now}})

    async def next_version(self, name: str, now: datetime) -> Model | None:
        """The model with ``latest_version`` counted up: the number of the version being added."""
        return await self._updated(name, {"$inc": {"latest_version": 1}, "$set": {"updated_at": now}})

    async def next_spec_version(self, name: str, now: datetime) -> Model | None:
        """The model with ``latest_spec_version`` counted up: the number of the spec being added."""
        return await self._updated(name, {"$inc": {"latest_spec_version": 1}, "$set": {"updated_at": now}})

    @database_call
    async def _updated(self, name: str, update: Document) -> Model | None:
        doc = await self._collection.find_one_and_update(
            {"_id": name}, update, session=self.session, return_document=ReturnDocument.AFTER
        )
        return None if doc is None else model_to_proto(doc)

    @database_call
    async def update(
        self,
        name: str,
        *,
        description: str,
        tags: Mapping[str, str],
        policy: registry_pb2.PromotionPolicy.ValueType,
    ) -> None:
        await self._collection.update_one(
            {"_id": name},
            {"$set": {"tags": key_values(tags), "description": description, "promotion_policy": policy}},
            session=self.session,
        )

    @database_call
    async def point_alias(self, name: str, alias: str, version: int, now: datetime) -> None:
        """Point ``alias`` at ``version`` (0: remove it)."""
        update: Document = {"$set": {"updated_at": now}}
        if version:
            update["$set"][f"aliases.{alias}"] = version
        else:
            update["$unset"] = {f"aliases.{alias}": ""}
        await self._collection.update_one({"_id": name}, update, session=self.session)

    @database_call
    async def page(self, where: ModelFilter, request: PageRequest) -> Page[Model]:
        """Models by name."""
        query: Document = {}
        if where.alias:
            query[f"aliases.{where.alias}"] = {"$exists": True}
        if where.name_contains:
            query["_id"] = {"$regex": re.escape(where.name_contains), "$options": "i"}
        if conditions := [*tag_conditions(where.tags), *team_conditions(where.team, where.visible_teams)]:
            query["$and"] = conditions
        return await read_page(self._collection, query, self.BY_NAME, request, model_to_proto, self.session)
