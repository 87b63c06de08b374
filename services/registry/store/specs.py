"""The ``model_specs`` collection: the numbered training specs of each model."""

from __future__ import annotations

from datetime import datetime

from pymongo import ASCENDING, DESCENDING

from services.common.mongo import Document
from services.common.proto.mlops.v1 import model_pb2
from services.registry.store.documents import spec_to_proto
from services.registry.store.errors import database_call
from services.registry.store.pagination import Keyset, Page, PageRequest, SortKey, read_page
from services.registry.store.repository import Repository

ModelSpec = model_pb2.ModelSpec


class SpecRepository(Repository):
    NEWEST_FIRST = Keyset(SortKey("spec_version", int, descending=True, token="before"))

    async def ensure_indexes(self) -> None:
        await self._collection.create_index(
            [("model_name", ASCENDING), ("spec_version", ASCENDING)], unique=True
        )

    @database_call
    async def insert(self, spec: ModelSpec, *, created_by: str, now: datetime) -> None:
        """Store ``spec`` under its ``spec_version``."""
        await self._collection.insert_one(
            {
                "model_name": spec.model_name,
                "spec_version": spec.spec_version,
                "proto": spec.SerializeToString(),
                "created_at": now,
                "created_by": created_by,
            },
            session=self.session,
        )

    @database_call
    async def get(self, model_name: str, spec_version: int = 0) -> ModelSpec | None:
        """Spec ``spec_version`` of the model (0: its latest)."""
        query: Document = {"model_name": model_name}
        if spec_version:
            query["spec_version"] = spec_version
        docs = (
            await self._collection.find(query, session=self.session)
            .sort([("spec_version", DESCENDING)])
            .limit(1)
            .to_list()
        )
        return spec_to_proto(docs[0]) if docs else None

    @database_call
    async def page(self, model_name: str, request: PageRequest) -> Page[ModelSpec]:
        """The model's specs, newest first."""
        return await read_page(
            self._collection,
            {"model_name": model_name},
            self.NEWEST_FIRST,
            request,
            spec_to_proto,
            self.session,
        )
