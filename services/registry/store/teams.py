"""The ``teams`` collection: one document per team, holding its members and the scopes each
may be given in the team's tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pymongo.errors

from services.common.mongo import Document
from services.common.proto.mlops.v1 import registry_pb2
from services.registry.errors import AlreadyExists
from services.registry.store.documents import team_to_proto
from services.registry.store.errors import database_call
from services.registry.store.pagination import Keyset, Page, PageRequest, SortKey, read_page
from services.registry.store.repository import Repository

Team = registry_pb2.Team


@dataclass(frozen=True)
class Member:
    subject: str
    scopes: tuple[str, ...]
    added_at: datetime
    added_by: str


class TeamRepository(Repository):
    BY_NAME = Keyset(SortKey("_id", str, token="after"))

    @database_call
    async def ensure(self, name: str, description: str, now: datetime) -> None:
        """Create the team unless it exists (the default team, at start-up)."""
        await self._collection.update_one(
            {"_id": name},
            {
                "$setOnInsert": {
                    "description": description,
                    "members": [],
                    "created_at": now,
                    "created_by": "registry",
                }
            },
            upsert=True,
            session=self.session,
        )

    @database_call
    async def create(self, name: str, *, description: str, created_by: str, now: datetime) -> Team:
        """A new team without members; AlreadyExists when the name is taken."""
        doc: Document = {
            "_id": name,
            "description": description,
            "members": [],
            "created_at": now,
            "created_by": created_by,
        }
        try:
            await self._collection.insert_one(doc, session=self.session)
        except pymongo.errors.DuplicateKeyError as exc:
            if exc.has_error_label("TransientTransactionError"):
                raise
            raise AlreadyExists(f"team {name!r} already exists") from None
        return team_to_proto(doc)

    @database_call
    async def get(self, name: str) -> Team | None:
        doc = await self._collection.find_one({"_id": name}, session=self.session)
        return None if doc is None else team_to_proto(doc)

    @database_call
    async def replace_members(self, name: str, members: Sequence[Member]) -> None:
        await self._collection.update_one(
            {"_id": name},
            {
                "$set": {
                    "members": [
                        {
                            "subject": m.subject,
                            "scopes": list(m.scopes),
                            "added_at": m.added_at,
                            "added_by": m.added_by,
                        }
                        for m in members
                    ]
                }
            },
            session=self.session,
        )

    @database_call
    async def page(self, names: frozenset[str] | None, request: PageRequest) -> Page[Team]:
        """Teams by name: those in ``names`` (None: all)."""
        query: Document = {} if names is None else {"_id": {"$in": sorted(names)}}
        return await read_page(self._collection, query, self.BY_NAME, request, team_to_proto, self.session)
