"""What every repository shares: its collection, and the transaction it may be bound to."""

from __future__ import annotations

import copy
from typing import Self

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection

from services.common.mongo import Document


class Repository:
    """One collection's reads and writes. Unbound, each call stands alone and its database
    errors are translated; :meth:`bound` to a transaction's session, its calls are part of
    that transaction and errors are left to the transaction."""

    def __init__(self, collection: AsyncCollection[Document], session: AsyncClientSession | None = None):
        self._collection = collection
        self._session = session

    @property
    def session(self) -> AsyncClientSession | None:
        return self._session

    def bound(self, session: AsyncClientSession) -> Self:
        """This repository inside the transaction of ``session``."""
        bound = copy.copy(self)
        bound._session = session
        return bound
