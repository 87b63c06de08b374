"""The ``tokens`` collection: every token the registry issued (never the token itself), and
the revocations every service reads. A record expires with its token (a TTL index): a
token past its expiry is refused anyway, so nothing needs to remember it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pymongo.errors
from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument

from services.common.mongo import Document
from services.common.proto.mlops.v1 import registry_pb2
from services.registry.store.documents import token_to_proto
from services.registry.store.errors import database_call
from services.registry.store.pagination import Keyset, Page, PageRequest, SortKey, read_page
from services.registry.store.repository import Repository

TokenInfo = registry_pb2.TokenInfo


@dataclass(frozen=True)
class IssuedToken:
    id: str
    subject: str
    scopes: tuple[str, ...]
    teams: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime
    issued_by: str
    key_id: str


@dataclass(frozen=True)
class RevokedToken:
    id: str
    revoked_at: datetime
    expires_at: datetime


class TokenRepository(Repository):
    NEWEST_FIRST = Keyset(
        SortKey("issued_at", datetime, descending=True, token="issued"),
        SortKey("_id", str, descending=True, token="id"),
    )
    OLDEST_REVOCATION_FIRST = Keyset(
        SortKey("revoked_at", datetime, token="at"), SortKey("_id", str, token="id")
    )

    async def ensure_indexes(self) -> None:
        await self._collection.create_indexes(
            [
                IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0, name="expires_at_ttl"),
                IndexModel([("revoked_at", ASCENDING), ("_id", ASCENDING)]),
                IndexModel([("subject", ASCENDING), ("issued_at", DESCENDING)]),
                IndexModel([("issued_at", DESCENDING), ("_id", DESCENDING)]),
            ]
        )

    @database_call
    async def record(self, token: IssuedToken) -> None:
        await self._collection.insert_one(
            {
                "_id": token.id,
                "subject": token.subject,
                "scopes": list(token.scopes),
                "teams": list(token.teams),
                "issued_at": token.issued_at,
                "expires_at": token.expires_at,
                "issued_by": token.issued_by,
                "key_id": token.key_id,
                "revoked_at": None,
            },
            session=self.session,
        )

    @database_call
    async def get(self, token_id: str) -> TokenInfo | None:
        doc = await self._collection.find_one({"_id": token_id}, session=self.session)
        return None if doc is None else token_to_proto(doc)

    @database_call
    async def revoke(
        self, token_id: str, *, now: datetime, by: str, reason: str, unknown_expires_at: datetime
    ) -> TokenInfo:
        """Mark the token revoked (once: a second revocation changes nothing). An id this
        registry did not issue is recorded as revoked until ``unknown_expires_at``."""
        revoked = {"revoked_at": now, "revoked_by": by, "revoke_reason": reason}
        doc = await self._collection.find_one_and_update(
            {"_id": token_id, "revoked_at": None},
            {"$set": revoked},
            session=self.session,
            return_document=ReturnDocument.AFTER,
        )
        if doc is None:
            doc = await self._collection.find_one({"_id": token_id}, session=self.session)
        if doc is None:
            doc = {"_id": token_id, "expires_at": unknown_expires_at, "issued_by": "", **revoked}
            try:
                await self._collection.insert_one(doc, session=self.session)
            except pymongo.errors.DuplicateKeyError as exc:
                if exc.has_error_label("TransientTransactionError"):
                    raise
                found = await self._collection.find_one({"_id": token_id}, session=self.session)
                doc = found or doc
        return token_to_proto(doc)

    @database_call
    async def page(self, subject: str, include_revoked: bool, request: PageRequest) -> Page[TokenInfo]:
        """Issued tokens not expired yet (the TTL sweep may lag a minute), newest first."""
        query: Document = {"issued_at": {"$exists": True}}
        if subject:
            query["subject"] = subject
        if not include_revoked:
            query["revoked_at"] = None
        return await read_page(
            self._collection, query, self.NEWEST_FIRST, request, token_to_proto, self.session
        )

    @database_call
    async def revoked_since(self, since: datetime | None, request: PageRequest) -> Page[RevokedToken]:
        """Revocations made at or after ``since`` (None: all), oldest first."""
        query: Document = {"revoked_at": {"$ne": None} if since is None else {"$gte": since}}
        return await read_page(
            self._collection,
            query,
            self.OLDEST_REVOCATION_FIRST,
            request,
            lambda d: RevokedToken(d["_id"], d["revoked_at"], d["expires_at"]),
            self.session,
        )
