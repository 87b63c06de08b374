"""The store layer against the real database: every repository's pages cover its records
once, in order, end on a page without a token (also when the last page is full), and
refuse a token they did not make, naming ``page_token``; a database that cannot be
reached is a platform error, not a driver's."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from pymongo import AsyncMongoClient

from services.common.errors import InvalidArgument, Unavailable
from services.common.localstack import free_port
from services.common.proto.mlops.v1 import model_pb2, registry_pb2
from services.registry.store import Page, PageRequest, Store, Transaction
from services.registry.store.aliases import AliasHistoryRepository
from services.registry.store.audit import AuditEntry, AuditFilter, AuditRepository
from services.registry.store.models import ModelFilter, ModelRepository
from services.registry.store.pagination import Keyset
from services.registry.store.specs import SpecRepository
from services.registry.store.versions import VersionFilter, VersionRepository
from tests.conftest import Infra
from tests.integration.registry.conftest import settings_for

T = TypeVar("T")
NOW = datetime(2026, 11, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
async def store(infra: Infra) -> AsyncIterator[Store]:
    store = Store.open(settings_for(infra, "store" + uuid.uuid4().hex[:8]))
    await store.ensure_indexes(outbox_retention_seconds=3600, audit_retention_seconds=3600)
    yield store
    await store.close()


@pytest.fixture
def name() -> str:
    return "s-" + uuid.uuid4().hex[:10]


async def walk(
    keyset: Keyset, fetch: Callable[[PageRequest], Awaitable[Page[T]]], size: int
) -> list[list[T]]:
    """Every page, following tokens from the first page to the one without a token."""
    pages: list[list[T]] = []
    token = ""
    while True:
        page = await fetch(keyset.request(size, token))
        pages.append(page.items)
        token = page.next_page_token
        if not token:
            return pages
        assert len(pages) < 100, "pages never end"


def token_of(position: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode()


def assert_refuses_foreign_tokens(keyset: Keyset, names: list[str]) -> None:
    """Tokens this keyset did not encode: garbage, other keys, wrong value types."""
    foreign = [
        "garbage!",
        token_of({"unrelated": 1}),
        token_of(dict.fromkeys(names, True)),
        token_of({n: [1] for n in names}),
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
    ]
    for token in foreign:
        with pytest.raises(InvalidArgument) as caught:
            keyset.request(2, token)
        assert caught.value.field == "page_token", token


async def test_models_page_by_name(store: Store, name: str) -> None:
    names = [f"{name}-{i}" for i in range(5)]
    for model in reversed(names):
        await store.models.create(
            model,
            team="default",
            description="",
            tags={"suite": name},
            policy=registry_pb2.PROMOTION_POLICY_AUTO,
            created_by="t",
            now=NOW,
        )
    keyset = ModelRepository.BY_NAME

    pages = await walk(keyset, lambda r: store.models.page(ModelFilter(name_contains=name), r), 2)

    assert [[m.name for m in page] for page in pages] == [names[0:2], names[2:4], names[4:]]
    by_tag = await walk(keyset, lambda r: store.models.page(ModelFilter(tags={"suite": name}), r), 5)
    assert [[m.name for m in page] for page in by_tag] == [names], "a full last page ends without a token"
    assert_refuses_foreign_tokens(keyset, ["after"])
    with pytest.raises(InvalidArgument):
        keyset.request(2, token_of({"after": 5}))


async def test_versions_page_newest_first_and_search_across_models(store: Store, name: str) -> None:
    content = uuid.uuid4().hex * 2
    for model, count in ((name + "-a", 3), (name + "-b", 2)):
        for number in range(1, count + 1):
            version = registry_pb2.ModelVersion(model_name=model, version=number)
            version.lineage.data.content_sha256 = content
            await store.versions.insert(version, registry_pb2.VERSION_STATUS_READY, NOW)

    listed = await walk(VersionRepository.NEWEST_FIRST, lambda r: store.versions.page(name + "-a", r), 2)
    assert [[v.version for v in page] for page in listed] == [[3, 2], [1]]

    found = await walk(
        VersionRepository.BY_MODEL,
        lambda r: store.versions.search(VersionFilter(content_sha256=content), r),
        2,
    )
    assert [[(v.model_name[-1], v.version) for v in page] for page in found] == [
        [("a", 3), ("a", 2)],
        [("a", 1), ("b", 2)],
        [("b", 1)],
    ], "a page crosses from one model to the next without losing or repeating a version"
    assert_refuses_foreign_tokens(VersionRepository.NEWEST_FIRST, ["before"])
    assert_refuses_foreign_tokens(VersionRepository.BY_MODEL, ["model", "version"])
    with pytest.raises(InvalidArgument):
        # A token of one list is no token of another.
        VersionRepository.BY_MODEL.request(2, VersionRepository.NEWEST_FIRST.encode({"version": 3}))


async def test_alias_history_pages_newest_first(store: Store, name: str) -> None:
    for version in range(1, 6):
        change = registry_pb2.AliasChange(alias="production", version=version, previous_version=version - 1)
        change.changed_at.FromDatetime(NOW + timedelta(seconds=version))
        await store.alias_history.record(name, change)
    keyset = AliasHistoryRepository.NEWEST_FIRST

    pages = await walk(keyset, lambda r: store.alias_history.page(name, "production", r), 2)

    assert [[c.version for c in page] for page in pages] == [[5, 4], [3, 2], [1]]
    assert await store.alias_history.targets(name, "production", 3) == [5, 4, 3]
    assert_refuses_foreign_tokens(keyset, ["before"])
    with pytest.raises(InvalidArgument) as caught:
        keyset.request(2, token_of({"before": "not an object id"}))
    assert caught.value.field == "page_token"


async def test_specs_page_newest_first(store: Store, name: str) -> None:
    for number in range(1, 5):
        spec = model_pb2.ModelSpec(model_name=name, dataset="demo", spec_version=number)
        await store.specs.insert(spec, created_by="t", now=NOW)
    keyset = SpecRepository.NEWEST_FIRST

    pages = await walk(keyset, lambda r: store.specs.page(name, r), 2)

    assert [[s.spec_version for s in page] for page in pages] == [[4, 3], [2, 1]], (
        "no empty page after a full one"
    )
    latest = await store.specs.get(name)
    assert latest is not None and latest.spec_version == 4
    assert_refuses_foreign_tokens(keyset, ["before"])


async def test_audit_pages_newest_first(store: Store, name: str) -> None:
    for i in range(5):
        entry = AuditEntry(NOW, name, "CreateModel", f"models/{name}-{i}", "ok", f"r{i}", "grpc")
        await store.audit.add(entry)
    keyset = AuditRepository.NEWEST_FIRST

    pages = await walk(keyset, lambda r: store.audit.page(AuditFilter(actor=name), r), 3)

    assert [[r.request_id for r in page] for page in pages] == [["r4", "r3", "r2"], ["r1", "r0"]]
    assert_refuses_foreign_tokens(keyset, ["before"])


async def test_a_database_that_cannot_be_reached_is_unavailable(name: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        f"mongodb://127.0.0.1:{free_port()}", serverSelectionTimeoutMS=300, tz_aware=True
    )
    store = Store(
        client, client["nowhere"], transaction_timeout=1, artifact_chunk_bytes=64 * 1024, signing_key=None
    )
    try:
        with pytest.raises(Unavailable):
            await store.models.get(name)
        with pytest.raises(Unavailable):
            await store.versions.page(name, VersionRepository.NEWEST_FIRST.request(2, ""))

        async def work(tx: Transaction) -> None:
            await tx.models.touch(name, NOW)

        with pytest.raises(Unavailable):
            await store.transaction(work)
    finally:
        await store.close()
