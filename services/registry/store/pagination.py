"""Keyset pagination, written once for every list the registry serves.

A list is sorted by a :class:`Keyset` whose keys together are unique. A page token holds the
sort values of the last item on a page, and the next page is whatever sorts after them: a
page costs the same however deep it is, and items added meanwhile never shift an item onto
two pages or off every page (as skip/limit would).

>>> NEWEST_FIRST = Keyset(SortKey("version", int, descending=True, token="before"))
>>> request = NEWEST_FIRST.request(2, "")
>>> request.cursor is None
True
>>> token = NEWEST_FIRST.encode({"version": 7, "proto": b"..."})
>>> NEWEST_FIRST.request(2, token).cursor
{'before': 7}
>>> NEWEST_FIRST.after({"before": 7})
{'version': {'$lt': 7}}
>>> NEWEST_FIRST.request(2, "garbage!")
Traceback (most recent call last):
...
services.common.errors.InvalidArgument: page_token: not a token this API returned
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection

from services.common.mongo import Document
from services.registry.errors import InvalidArgument

T = TypeVar("T")

Cursor = dict[str, Any]
"""Where a page starts: the previous page's last sort values, by their names in the token."""


def _bad_token() -> InvalidArgument:
    return InvalidArgument("page_token: not a token this API returned", field="page_token")


@dataclass(frozen=True)
class SortKey:
    """One field a list is sorted by: ``kind`` is ``str``, ``int``, ``ObjectId`` (carried as
    its hex string in the token) or ``datetime`` (as ISO 8601); ``token`` names it in the
    token (the field by default)."""

    field: str
    kind: type = str
    descending: bool = False
    token: str = ""

    @property
    def name(self) -> str:
        return self.token or self.field

    def to_token(self, value: Any) -> Any:
        if self.kind is datetime:
            return value.isoformat()
        return str(value) if self.kind is ObjectId else value

    def from_token(self, value: Any) -> Any:
        if self.kind is datetime:
            try:
                return datetime.fromisoformat(value)
            except (TypeError, ValueError):
                raise _bad_token() from None
        if self.kind is ObjectId:
            if not isinstance(value, str):
                raise _bad_token()
            try:
                return ObjectId(value)
            except InvalidId:
                raise _bad_token() from None
        if not isinstance(value, self.kind) or isinstance(value, bool):
            raise _bad_token()
        return value

    def beyond(self, value: Any) -> Document:
        """The condition for sorting after ``value`` on this key alone."""
        return {self.field: {"$lt" if self.descending else "$gt": value}}


@dataclass(frozen=True)
class PageRequest:
    """A page asked for: its size (already bounded) and where it starts (None: the first page)."""

    keyset: Keyset
    size: int
    cursor: Cursor | None


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of results and the token of the next one ("" on the last page)."""

    items: list[T]
    next_page_token: str


class Keyset:
    """The sort order of a list, and the page tokens that walk it."""

    def __init__(self, *keys: SortKey):
        self.keys = keys
        self.sort = [(key.field, DESCENDING if key.descending else ASCENDING) for key in keys]

    def request(self, size: int, token: str) -> PageRequest:
        """A page of ``size`` items from where ``token`` says; InvalidArgument naming
        ``page_token`` for anything this keyset did not encode."""
        return PageRequest(self, size, self.decode(token))

    def encode(self, document: Mapping[str, Any]) -> str:
        """The token of the page after ``document`` (an opaque string to the caller)."""
        position = {key.name: key.to_token(document[key.field]) for key in self.keys}
        return base64.urlsafe_b64encode(json.dumps(position, sort_keys=True).encode()).decode()

    def decode(self, token: str) -> Cursor | None:
        if not token:
            return None
        try:
            position = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
        except (ValueError, binascii.Error, UnicodeError):
            raise _bad_token() from None
        if not isinstance(position, dict) or set(position) != {key.name for key in self.keys}:
            raise _bad_token()
        return {key.name: key.from_token(position[key.name]) for key in self.keys}

    def after(self, cursor: Cursor) -> Document:
        """The condition for sorting after ``cursor``: lexicographic over the keys, so
        (a, b) comes after (a0, b0) when a is beyond a0, or a equals a0 and b is beyond b0."""
        branches: list[Document] = []
        for i, key in enumerate(self.keys):
            equal = {earlier.field: cursor[earlier.name] for earlier in self.keys[:i]}
            branches.append({**equal, **key.beyond(cursor[key.name])})
        return branches[0] if len(branches) == 1 else {"$or": branches}


async def read_page(
    collection: AsyncCollection[Document],
    query: Document,
    keyset: Keyset,
    request: PageRequest,
    item: Callable[[Document], T],
    session: AsyncClientSession | None = None,
) -> Page[T]:
    """The page of ``query``'s matches ``request`` asks for, in ``keyset`` order, each
    document turned into an ``item``."""
    if request.keyset is not keyset:
        raise ValueError("a page request made for another list")
    if request.cursor is not None:
        position = keyset.after(request.cursor)
        query = {"$and": [query, position]} if query else position
    size = request.size
    documents = await collection.find(query, session=session).sort(keyset.sort).limit(size + 1).to_list()
    token = keyset.encode(documents[size - 1]) if len(documents) > size else ""
    return Page([item(document) for document in documents[:size]], token)
