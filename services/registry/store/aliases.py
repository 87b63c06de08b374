"""The ``alias_history`` collection: every move of every alias, append-only."""

from __future__ import annotations

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING

from services.common.mongo import Document
from services.common.proto.mlops.v1 import registry_pb2
from services.registry.store.documents import alias_change_document, alias_change_to_proto
from services.registry.store.errors import database_call
from services.registry.store.pagination import Keyset, Page, PageRequest, SortKey, read_page
from services.registry.store.repository import Repository

AliasChange = registry_pb2.AliasChange


class AliasHistoryRepository(Repository):
    NEWEST_FIRST = Keyset(SortKey("_id", ObjectId, descending=True, token="before"))
    """Moves in the order they were recorded, newest first."""

    async def ensure_indexes(self) -> None:
        await self._collection.create_index(
            [("model_name", ASCENDING), ("alias", ASCENDING), ("changed_at", DESCENDING)]
        )

    @database_call
    async def record(self, model_name: str, change: AliasChange) -> None:
        await self._collection.insert_one(alias_change_document(model_name, change), session=self.session)

    @database_call
    async def targets(self, model_name: str, alias: str, limit: int) -> list[int]:
        """The versions ``alias`` was pointed at (removals left out), newest first."""
        docs = (
            await self._collection.find(
                {"model_name": model_name, "alias": alias, "version": {"$gt": 0}},
                {"version": 1},
                session=self.session,
            )
            .sort([("_id", DESCENDING)])
            .limit(limit)
            .to_list()
        )
        return [doc["version"] for doc in docs]

    @database_call
    async def page(self, model_name: str, alias: str, request: PageRequest) -> Page[AliasChange]:
        """The moves of one of the model's aliases (all of them when ``alias`` is empty)."""
        query: Document = {"model_name": model_name}
        if alias:
            query["alias"] = alias
        return await read_page(
            self._collection, query, self.NEWEST_FIRST, request, alias_change_to_proto, self.session
        )
