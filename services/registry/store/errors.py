"""Database failures as platform errors: translated here, and nowhere else in the registry.

A caller learns what it can act on (retry later, or not), never the driver's details:
those go to the log. Inside a transaction nothing is translated, so the transaction's
retry loop sees the driver's own errors (a write conflict is retried, not reported);
:meth:`Store.transaction <services.registry.store.database.Store.transaction>` translates
what is left when it gives up.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Concatenate, ParamSpec, Protocol, TypeVar

import pymongo.errors
from pymongo.asynchronous.client_session import AsyncClientSession

from services.common.errors import Internal, PlatformError, Unavailable
from services.common.logging import get_logger

log = get_logger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class DatabaseUnavailable(Unavailable):
    """The database cannot be reached or did not answer in time: nothing was changed, and the
    call may be retried."""


class DatabaseFailure(Internal):
    """The database refused an operation for a reason of its own, reported without its details."""


DATABASE_FAILURES = (DatabaseUnavailable, DatabaseFailure)
"""Failures of the database rather than refusals of the request (not audited as refusals)."""


def translate(exc: pymongo.errors.PyMongoError) -> PlatformError:
    """What a database failure means to the caller: unavailable when it may pass (no
    connection, a timeout, a transaction that kept conflicting), internal otherwise."""
    log.warning("database_error", error=repr(exc))
    if (
        isinstance(exc, pymongo.errors.ConnectionFailure)
        or exc.timeout
        or exc.has_error_label("TransientTransactionError")
    ):
        return DatabaseUnavailable("the registry's database is unavailable; retry later")
    return DatabaseFailure(f"database error ({type(exc).__name__})")


@contextmanager
def translated() -> Iterator[None]:
    """Raise the driver's errors inside as platform errors."""
    try:
        yield
    except pymongo.errors.PyMongoError as exc:
        raise translate(exc) from exc


class InSession(Protocol):
    @property
    def session(self) -> AsyncClientSession | None: ...


R = TypeVar("R", bound=InSession)


def database_call(
    method: Callable[Concatenate[R, P], Awaitable[T]],
) -> Callable[Concatenate[R, P], Awaitable[T]]:
    """A repository method whose database errors are translated, unless it runs inside a
    transaction (there they must reach the transaction's retry loop untouched)."""

    @functools.wraps(method)
    async def call(self: R, /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self.session is not None:
            return await method(self, *args, **kwargs)
        with translated():
            return await method(self, *args, **kwargs)

    return call
