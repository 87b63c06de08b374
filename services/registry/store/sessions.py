"""The ``transaction_sessions`` collection: which registry process uses which database session.

A registry process killed inside a transaction leaves it open in the database, and the
database keeps it, with the writes it holds, for its transaction lifetime (MongoDB's
``transactionLifetimeLimitSeconds``, 60 s by default; SecantusDB the same): until then
every change to the model it was changing times out. Closing the connection does not end
it, since a driver may send one transaction's statements over several connections. So
each process notes the ids of its sessions here before it first uses them, and a process
starting on the same host ends (``killSessions``) the ones noted by processes that are
no longer running there: a supervisor's restart frees the model at once. Sessions of
processes on other hosts are left to the database's lifetime limit, since from here a
process elsewhere cannot be told dead from slow.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from bson import Binary
from pymongo import ASCENDING, IndexModel

from services.common.mongo import Document
from services.registry.store.errors import database_call
from services.registry.store.repository import Repository

_INCARNATION = uuid.uuid4().hex
"""This process among those that had its id on its host (a container's process is often 1)."""


@dataclass(frozen=True)
class Owner:
    """A registry process: the host it runs on, its process id there, and which process
    of that id it is."""

    host: str
    pid: int
    incarnation: str

    @classmethod
    def this_process(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), _INCARNATION)

    def gone(self, noted: Document) -> bool:
        """Whether the process that noted ``noted`` on this host no longer runs."""
        pid = int(noted["pid"])
        if pid == self.pid:
            return noted.get("incarnation") != self.incarnation
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # another user's process: it runs
            return False
        return False


NOTE_LIFETIME_SECONDS = 86_400
"""How long a note is kept: a process re-notes its sessions well within it (see
:meth:`~services.registry.store.database.Store.transaction`), and a dead process's open
transactions have long been ended by the database by then."""


class SessionRepository(Repository):
    async def ensure_indexes(self) -> None:
        await self._collection.create_indexes(
            [
                IndexModel([("host", ASCENDING), ("pid", ASCENDING)]),
                IndexModel(
                    [("noted_at", ASCENDING)], expireAfterSeconds=NOTE_LIFETIME_SECONDS, name="noted_at_ttl"
                ),
            ]
        )

    @database_call
    async def note(self, session_id: Mapping[str, object], owner: Owner, now: datetime) -> None:
        """Note that ``owner`` uses the session ``session_id`` (the driver's ``lsid``)."""
        lsid = session_id["id"]
        assert isinstance(lsid, bytes)
        await self._collection.update_one(
            {"_id": lsid.hex()},
            {
                "$set": {
                    "host": owner.host,
                    "pid": owner.pid,
                    "incarnation": owner.incarnation,
                    "noted_at": now,
                }
            },
            upsert=True,
        )

    @database_call
    async def end_orphaned(self, me: Owner) -> int:
        """End the sessions noted by processes of ``me.host`` that no longer run; how many."""
        noted: list[Document] = await self._collection.find({"host": me.host}).to_list()
        orphans = [doc for doc in noted if me.gone(doc)]
        if not orphans:
            return 0
        database = self._collection.database
        await database.client.admin.command(
            "killSessions", [{"id": Binary(bytes.fromhex(doc["_id"]), 4)} for doc in orphans]
        )
        await self._collection.delete_many({"_id": {"$in": [doc["_id"] for doc in orphans]}})
        return len(orphans)
