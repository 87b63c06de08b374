"""The registry's store layer: the only code that speaks MongoDB.

One repository per collection (:mod:`.models`, :mod:`.versions`, :mod:`.aliases`,
:mod:`.specs`, :mod:`.audit`, :mod:`.outbox`, :mod:`.artifacts`, :mod:`.runs`), reached through
:class:`~.database.Store`; keyset pagination written once (:mod:`.pagination`); records
mapped to and from the API's protobuf messages in one place (:mod:`.documents`); database
errors turned into platform errors here and nowhere else (:mod:`.errors`).

Use cases read and write through the repositories and group changes with
:meth:`Store.transaction <.database.Store.transaction>`::

    async def rename(tx: Transaction) -> Model:
        model = await tx.models.touch(name, now)
        ...

    model = await store.transaction(rename)
"""

from services.registry.store.database import Store, Transaction
from services.registry.store.errors import DATABASE_FAILURES
from services.registry.store.pagination import Page, PageRequest

__all__ = ["DATABASE_FAILURES", "Page", "PageRequest", "Store", "Transaction"]
