"""The registry's database: a repository per collection, and transactions over them."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import pymongo
from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from services.common import mongo
from services.common.auth import DEFAULT_TEAM
from services.common.mongo import Document
from services.registry.settings import RegistrySettings
from services.registry.store.aliases import AliasHistoryRepository
from services.registry.store.artifacts import ArtifactRepository
from services.registry.store.audit import AuditRepository
from services.registry.store.encryption import KeyRing
from services.registry.store.errors import translated
from services.registry.store.models import ModelRepository
from services.registry.store.outbox import OutboxRepository
from services.registry.store.runs import RunRepository
from services.registry.store.sessions import NOTE_LIFETIME_SECONDS, Owner, SessionRepository
from services.registry.store.specs import SpecRepository
from services.registry.store.teams import TeamRepository
from services.registry.store.tokens import TokenRepository
from services.registry.store.versions import VersionRepository

T = TypeVar("T")


class Repositories:
    """One repository per collection."""

    models: ModelRepository
    versions: VersionRepository
    specs: SpecRepository
    alias_history: AliasHistoryRepository
    audit: AuditRepository
    outbox: OutboxRepository
    artifacts: ArtifactRepository
    teams: TeamRepository
    tokens: TokenRepository
    runs: RunRepository


class Transaction(Repositories):
    """The repositories inside one transaction: what goes through them commits together, or
    not at all."""

    def __init__(self, store: Store, session: AsyncClientSession):
        self.models = store.models.bound(session)
        self.versions = store.versions.bound(session)
        self.specs = store.specs.bound(session)
        self.alias_history = store.alias_history.bound(session)
        self.audit = store.audit.bound(session)
        self.outbox = store.outbox.bound(session)
        self.artifacts = store.artifacts.bound(session)
        self.teams = store.teams.bound(session)
        self.tokens = store.tokens.bound(session)
        self.runs = store.runs.bound(session)


class Store(Repositories):
    """The repositories, each call standing alone, and :meth:`transaction` to group calls."""

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        db: AsyncDatabase[Document],
        *,
        transaction_timeout: float = 10.0,
        artifact_chunk_bytes: int,
        signing_key: bytes | None,
        artifact_keys: KeyRing | None = None,
    ):
        self.client = client
        self.db = db
        self._transaction_timeout = transaction_timeout
        self.models = ModelRepository(db["models"])
        self.versions = VersionRepository(db["model_versions"])
        self.specs = SpecRepository(db["model_specs"])
        self.alias_history = AliasHistoryRepository(db["alias_history"])
        self.audit = AuditRepository(db["audit_log"])
        self.outbox = OutboxRepository(db["outbox"])
        self.artifacts = ArtifactRepository(
            db, chunk_bytes=artifact_chunk_bytes, signing_key=signing_key, keys=artifact_keys
        )
        self.teams = TeamRepository(db["teams"])
        self.tokens = TokenRepository(db["tokens"])
        self.runs = RunRepository(db["train_runs"])
        self.sessions = SessionRepository(db["transaction_sessions"])
        self.owner = Owner.this_process()
        self._noted: dict[bytes, float] = {}

    @classmethod
    def open(cls, settings: RegistrySettings) -> Store:
        """The store of the database ``settings`` name (connections open on first use)."""
        client = mongo.create_client(settings, "mlops-registry")
        key = settings.artifact_signing_key
        return cls(
            client,
            mongo.database(client, settings),
            transaction_timeout=settings.transaction_timeout_seconds,
            artifact_chunk_bytes=settings.artifact_chunk_bytes,
            signing_key=key.get_secret_value().encode() if key is not None else None,
            artifact_keys=KeyRing.from_settings(settings.artifact_keys, settings.artifact_key_id),
        )

    async def close(self) -> None:
        await self.client.close()

    async def ensure_indexes(self, outbox_retention_seconds: int, audit_retention_seconds: int) -> None:
        with translated():
            await self.models.ensure_indexes()
            await self.versions.ensure_indexes()
            await self.specs.ensure_indexes()
            await self.alias_history.ensure_indexes()
            await self.audit.ensure_indexes(audit_retention_seconds)
            await self.outbox.ensure_indexes(outbox_retention_seconds)
            await self.tokens.ensure_indexes()
            await self.runs.ensure_indexes()
            await self.sessions.ensure_indexes()

    async def end_orphaned_transactions(self) -> int:
        """End the transactions a registry process killed on this host left open (see
        :mod:`services.registry.store.sessions`); how many sessions were ended. Called at
        start, before this process opens a transaction of its own."""
        with translated():
            return await self.sessions.end_orphaned(self.owner)

    async def migrate(self, now: datetime) -> None:
        """Bring records made before teams existed into the default team (idempotent: run at
        every start, it changes only what has no team yet)."""
        with translated():
            await self.teams.ensure(DEFAULT_TEAM, "Everything made before teams existed.", now)
            for collection in (self.db["models"], self.db["model_versions"], self.db["train_runs"]):
                await collection.update_many({"team": {"$exists": False}}, {"$set": {"team": DEFAULT_TEAM}})

    async def transaction(self, work: Callable[[Transaction], Awaitable[T]]) -> T:
        """Run ``work`` in one snapshot transaction, retried on transient conflicts.

        Concurrent changes to one model all write its document, so they conflict and
        serialize: a retried attempt runs ``work`` again, re-reads the model and sees the
        winner's change (``work`` must not keep state between attempts). The whole of it,
        retries included, is bounded (PyMongo's client-side operation timeout), so a
        database that is away fails the call quickly, with
        :class:`~services.registry.store.errors.DatabaseUnavailable`, instead of retrying
        for minutes. A platform error ``work`` raises aborts the transaction and propagates.
        """
        with translated(), pymongo.timeout(self._transaction_timeout):
            async with self.client.start_session() as session:
                await self._note(session)
                return await session.with_transaction(
                    lambda session: work(Transaction(self, session)),
                    read_concern=ReadConcern("snapshot"),
                    write_concern=WriteConcern("majority"),
                )

    async def _note(self, session: AsyncClientSession) -> None:
        """Note the session's id before its first transaction (the driver pools sessions, so
        this is once per pooled session, renewed well within the note's lifetime)."""
        lsid = session.session_id["id"]
        noted = self._noted.get(lsid)
        if noted is None or time.monotonic() - noted > NOTE_LIFETIME_SECONDS / 24:
            await self.sessions.note(session.session_id, self.owner, datetime.now(UTC))
            now = time.monotonic()
            # Sessions the driver has since discarded drop out with their notes' lifetime.
            self._noted = {k: t for k, t in self._noted.items() if now - t < NOTE_LIFETIME_SECONDS}
            self._noted[lsid] = now
