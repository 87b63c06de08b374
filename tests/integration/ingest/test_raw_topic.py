"""The raw topic end to end on the real broker and database: every event stored,
dead-lettered with its reason, or counted as a duplicate; labels published; late labels
attached; windows read back with a stable hash."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.common.events import IncomingRecord, decode, encode
from services.common.kafka import (
    DLQ_ERROR_CLASS,
    DLQ_ERROR_FIELD,
    DLQ_ERROR_MESSAGE,
    DLQ_ORIGINAL_OFFSET,
    DLQ_ORIGINAL_PARTITION,
    DLQ_ORIGINAL_TOPIC,
)
from services.common.mongo import Document
from services.common.proto.mlops.v1.datasets_pb2 import QualitySummary
from services.common.proto.mlops.v1.events_pb2 import FeatureRow, LabelRecord, RawEvent
from services.common.proto.mlops.v1.model_pb2 import DataWindow, FeatureValue
from services.ingest.consumer import source_of
from services.ingest.formats import decode_record
from services.ingest.pipeline import Status, Submission
from services.ingest.store import DatasetStore
from tests.helpers.datasets import orders_schema
from tests.helpers.waiting import eventually
from tests.integration.ingest.conftest import Ingest


def order(dataset: str, i: int, base: datetime, **changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": f"{dataset}-{i}",
        "customer": f"customer-{i % 3}",
        "ts": (base + timedelta(seconds=i)).isoformat(),
        "amount": float(i % 100),
        "items": 2,
        "country": "FR",
        "label": "yes" if i % 2 else None,
    }
    event.update(changes)
    return {"dataset": dataset, **{k: v for k, v in event.items() if v is not None}}


def rows_of(ingest: Ingest, dataset: str) -> Callable[[Any], bool]:
    def match(record: Any) -> bool:
        return decode(record, FeatureRow).message.dataset == dataset

    return match


async def test_every_event_is_stored_dead_lettered_or_counted_as_duplicate(
    ingest: Ingest, dataset: str
) -> None:
    await ingest.datasets.register_schema(orders_schema(dataset))
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    valid = [order(dataset, i, base) for i in range(10)]
    invalid = {
        ("missing_field", "amount"): order(dataset, 100, base, amount=None),
        ("wrong_type", "items"): order(dataset, 101, base, items="two"),
        ("out_of_range", "amount"): order(dataset, 102, base, amount=5000),
        ("unknown_category", "country"): order(dataset, 103, base, country="XX"),
        ("not_finite", "amount"): order(dataset, 104, base, amount=math.nan),
        ("bad_timestamp", "ts"): order(dataset, 105, base, ts="last tuesday"),
        ("unknown_field", "colour"): order(dataset, 106, base, colour="red"),
        ("oversize", ""): order(dataset, 107, base, country="FR" + "R" * 70_000),
    }
    duplicates = [valid[0], order(dataset, 1, base, amount=999)]
    await ingest.send_json(valid + list(invalid.values()) + duplicates)

    # The same contract in the two CloudEvents encodings.
    proto = RawEvent(event_id=f"{dataset}-200", entity_id="customer-9", dataset=dataset)
    proto.event_time.FromDatetime(base)
    proto.fields["amount"].CopyFrom(FeatureValue(number_value=20))
    proto.fields["label"].CopyFrom(FeatureValue(string_value="no"))
    record = encode(ingest.topics.raw_events, proto, source="/orders", key=proto.event_id)
    await ingest.producer.send_and_wait(record.topic, record.value, key=record.key, headers=record.headers)
    ce_headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"c-201"),
        ("ce_source", b"/orders"),
        ("ce_type", b"mlops.v1.RawEvent"),
        ("content-type", b"application/json"),
    ]
    body = json.dumps(order(dataset, 201, base)).encode()
    await ingest.producer.send_and_wait(ingest.topics.raw_events, body, headers=ce_headers)

    features = await ingest.features.wait_for(rows_of(ingest, dataset), 12)
    dead = await ingest.raw_dead_letters.wait_for(
        lambda r: dataset.encode() in (r.value or b""), len(invalid)
    )
    summary = await eventually(
        lambda: ingest.datasets.quality_summary(dataset),
        lambda s: s.accepted + s.duplicates + s.rejected == 22,
    )

    stored = {decode(r, FeatureRow).message.event_id for r in features}
    assert stored == {f"{dataset}-{i}" for i in [*range(10), 200, 201]}
    assert (summary.accepted, summary.duplicates, summary.rejected) == (12, 2, 8)
    assert {(i.error_class, i.field, i.count) for i in summary.issues} == {(c, f, 1) for c, f in invalid}

    refused = {
        (dict(r.headers)[DLQ_ERROR_CLASS].decode(), dict(r.headers)[DLQ_ERROR_FIELD].decode()) for r in dead
    }
    assert refused == set(invalid)
    for letter in dead:
        headers = dict(letter.headers)
        assert headers[DLQ_ORIGINAL_TOPIC] == ingest.topics.raw_events.encode()
        assert int(headers[DLQ_ORIGINAL_PARTITION]) in range(4) and int(headers[DLQ_ORIGINAL_OFFSET]) >= 0
        # Private values leave only as pseudonyms, in dead letters too.
        assert b"customer-" not in (letter.value or b"")

    # The first copy of event 1 wins; the duplicate with another amount was not stored.
    window = await ingest.datasets.read_window(DataWindow(dataset=dataset), labelled_only=False)
    by_id = {row.event_id: row for row in window.rows}
    assert set(by_id) == stored
    assert by_id[f"{dataset}-1"].features["amount"].number_value == 1.0
    row = by_id[f"{dataset}-3"]
    assert row.entity_id.startswith("1:") and "customer" not in row.entity_id
    assert row.features["hour"].number_value == float((base + timedelta(seconds=3)).hour)
    assert row.features["per_item"].number_value == 1.5
    assert row.label.string_value == "yes"
    assert by_id[f"{dataset}-200"].entity_id.startswith("1:")
    assert by_id[f"{dataset}-0"].entity_id == by_id[f"{dataset}-3"].entity_id  # same customer, same pseudonym

    labels = await ingest.labels.wait_for(lambda r: decode(r, LabelRecord).message.dataset == dataset, 7)
    keyed = {r.key.decode(): decode(r, LabelRecord).message for r in labels if r.key}
    assert set(keyed) == {f"{dataset}-{i}" for i in (1, 3, 5, 7, 9, 200, 201)}
    assert keyed[f"{dataset}-200"].label.string_value == "no"


async def test_a_window_reads_back_in_time_order_with_a_stable_hash(ingest: Ingest, dataset: str) -> None:
    await ingest.datasets.register_schema(orders_schema(dataset))
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    # Sent out of time order, with two events at the same instant.
    events = [order(dataset, i, base) for i in (5, 1, 4, 2, 3, 0)]
    events.append(order(dataset, 6, base, ts=(base + timedelta(seconds=2)).isoformat(), label="yes"))
    await ingest.send_json(events)
    await ingest.features.wait_for(rows_of(ingest, dataset), 7)

    first = await ingest.datasets.read_window(DataWindow(dataset=dataset), labelled_only=False)
    again = await ingest.datasets.read_window(DataWindow(dataset=dataset), labelled_only=False, chunk_rows=2)
    assert [r.event_id for r in first.rows] == [f"{dataset}-{i}" for i in (0, 1, 2, 6, 3, 4, 5)]
    assert first.summary.row_count == 7
    assert first.summary.content_sha256 == again.summary.content_sha256
    assert first.rows == again.rows
    assert first.summary.schema_version == 1
    assert first.summary.window.start_time.ToDatetime(tzinfo=UTC) == base
    assert first.summary.window.end_time.ToDatetime(tzinfo=UTC) == base + timedelta(seconds=5)

    labelled = await ingest.datasets.read_window(DataWindow(dataset=dataset))
    assert [r.event_id for r in labelled.rows] == [f"{dataset}-{i}" for i in (1, 6, 3, 5)]
    assert labelled.summary.content_sha256 != first.summary.content_sha256

    # The newest three rows; the resolved window reads back the same rows and hash.
    newest = await ingest.datasets.read_window(DataWindow(dataset=dataset, max_rows=3), labelled_only=False)
    assert [r.event_id for r in newest.rows] == [f"{dataset}-{i}" for i in (3, 4, 5)]
    replay = await ingest.datasets.read_window(newest.summary.window, labelled_only=False)
    assert replay.summary.content_sha256 == newest.summary.content_sha256

    bounded = DataWindow(dataset=dataset)
    bounded.start_time.FromDatetime(base + timedelta(seconds=1))
    bounded.end_time.FromDatetime(base + timedelta(seconds=2))
    middle = await ingest.datasets.read_window(bounded, labelled_only=False)
    assert [r.event_id for r in middle.rows] == [f"{dataset}-{i}" for i in (1, 2, 6)]


async def test_labels_for_earlier_events_update_the_row_and_are_published(
    ingest: Ingest, dataset: str
) -> None:
    await ingest.datasets.register_schema(orders_schema(dataset))
    base = datetime.now(UTC) - timedelta(minutes=30)
    first, early = f"{dataset}-0", f"{dataset}-1"
    await ingest.send_json([order(dataset, 0, base)])
    await ingest.features.wait_for(rows_of(ingest, dataset), 1)
    # A label for a stored event, and one that arrives before its event.
    await ingest.send_json([{"event_id": first, "label": "no"}, {"event_id": early, "label": "yes"}], dataset)
    labels = await ingest.labels.wait_for(lambda r: decode(r, LabelRecord).message.dataset == dataset, 2)
    by_key = {r.key: decode(r, LabelRecord).message for r in labels}
    assert by_key[first.encode()].label.string_value == "no"
    assert by_key[first.encode()].entity_id.startswith("1:")  # taken from the stored row
    assert by_key[early.encode()].label.string_value == "yes"

    await ingest.send_json([order(dataset, 1, base, label=None)])
    await ingest.features.wait_for(rows_of(ingest, dataset), 2)
    window = await eventually(
        lambda: ingest.datasets.read_window(DataWindow(dataset=dataset)), lambda w: w.summary.row_count == 2
    )
    assert {r.event_id: r.label.string_value for r in window.rows} == {first: "no", early: "yes"}

    # A repeated label is acknowledged as a duplicate and published again, harmlessly.
    await ingest.send_json([{"event_id": first, "label": "no"}], dataset)
    await ingest.labels.wait_for(lambda r: r.key == first.encode(), 2)
    summary: QualitySummary = await eventually(
        lambda: ingest.datasets.quality_summary(dataset), lambda s: s.duplicates == 1
    )
    assert (summary.accepted, summary.labels, summary.rejected) == (2, 2, 0)


async def test_poison_records_are_dead_lettered_and_the_consumer_moves_on(
    ingest: Ingest, dataset: str
) -> None:
    await ingest.datasets.register_schema(orders_schema(dataset))
    marker = dataset.encode()
    poison = [
        b"\xff\xfe" + marker,  # not UTF-8
        b"[" + marker + b"]",  # not JSON
        json.dumps({"dataset": f"{dataset}-unregistered", "event_id": "x"}).encode(),
        json.dumps(["a list", dataset]).encode(),
    ]
    for value in poison:
        await ingest.producer.send_and_wait(ingest.topics.raw_events, value, key=b"same-partition")
    after = order(dataset, 1, datetime.now(UTC) - timedelta(minutes=1))
    await ingest.producer.send_and_wait(
        ingest.topics.raw_events, json.dumps(after).encode(), key=b"same-partition"
    )

    dead = await ingest.raw_dead_letters.wait_for(lambda r: marker in (r.value or b""), 4)
    classes = sorted(dict(r.headers)[DLQ_ERROR_CLASS].decode() for r in dead)
    assert classes == ["not_an_object", "undecodable", "undecodable", "unknown_dataset"]
    assert sorted(r.value or b"" for r in dead) == sorted(
        poison
    )  # kept as sent: nothing says what is private
    await ingest.features.wait_for(rows_of(ingest, dataset), 1)


async def test_a_redelivered_record_is_handled_again_but_a_resent_event_is_a_duplicate(
    ingest: Ingest, dataset: str
) -> None:
    """After a crash between the write and the commit, the same record comes back: it must be
    published again (the first attempt may not have been). The same event sent twice by a
    producer is another record: a duplicate, acknowledged and not published again."""
    await ingest.datasets.register_schema(orders_schema(dataset))
    pipeline = ingest.app.pipeline
    assert pipeline is not None
    body = json.dumps(order(dataset, 1, datetime.now(UTC) - timedelta(minutes=1))).encode()

    def submission(offset: int) -> Submission:
        record = IncomingRecord(ingest.topics.raw_events, 0, offset, None, body, (), 0)
        return Submission(decode_record(record), source_of(record))

    first = await pipeline.ingest([submission(10**9)])
    redelivered = await pipeline.ingest([submission(10**9)])
    resent = await pipeline.ingest([submission(10**9 + 1)])
    assert [o.status for o in (*first, *redelivered, *resent)] == [
        Status.ACCEPTED,
        Status.ACCEPTED,
        Status.DUPLICATE,
    ]
    # A later row of the same customer lands on the same partition after anything published
    # before it: once it is there, a wrongly republished duplicate would be too.
    sentinel = json.dumps(order(dataset, 4, datetime.now(UTC) - timedelta(minutes=1))).encode()
    record = IncomingRecord(ingest.topics.raw_events, 0, 10**9 + 2, None, sentinel, (), 0)
    await pipeline.ingest([Submission(decode_record(record), source_of(record))])
    published = await ingest.features.wait_for(rows_of(ingest, dataset), 3)
    assert [decode(r, FeatureRow).message.event_id for r in published] == [
        f"{dataset}-{i}" for i in (1, 1, 4)
    ]
    window = await ingest.datasets.read_window(DataWindow(dataset=dataset), labelled_only=False)
    assert [r.event_id for r in window.rows] == [f"{dataset}-1", f"{dataset}-4"]


async def test_an_event_that_breaks_the_pipeline_is_dead_lettered_in_pseudonyms_and_the_rest_are_stored(
    ingest: Ingest, dataset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug, not bad input: storing one event raises. The consumer loop isolates the batch;
    that event is dead-lettered as ``processing_error`` (its private values pseudonymized, the
    exception's text left out), every other event is stored and counted once, and ingest goes on."""
    await ingest.datasets.register_schema(orders_schema(dataset))
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    broken = f"{dataset}-3"
    insert_rows = DatasetStore.insert_rows

    async def insert_rows_breaking_on_one_event(
        store: DatasetStore, documents: Sequence[Document]
    ) -> set[int]:
        if any(document["event_id"] == broken for document in documents):
            raise ValueError(f"cannot store customer-3's {broken}")
        return await insert_rows(store, documents)

    monkeypatch.setattr(DatasetStore, "insert_rows", insert_rows_breaking_on_one_event)
    await ingest.send_json([order(dataset, i, base) for i in range(8)])

    [dead] = await ingest.raw_dead_letters.wait_for(lambda r: dataset.encode() in (r.value or b""))
    headers = dict(dead.headers)
    assert headers[DLQ_ERROR_CLASS] == b"processing_error"
    assert headers[DLQ_ERROR_MESSAGE] == b"ValueError while ingesting the event"
    assert headers[DLQ_ORIGINAL_TOPIC] == ingest.topics.raw_events.encode()
    letter = json.loads(dead.value or b"{}")
    assert letter["event_id"] == broken
    # The private entity id leaves as its pseudonym only.
    assert letter["customer"] and b"customer-" not in (dead.value or b"")

    # The loop goes on: an event sent after it is stored too.
    await ingest.send_json([order(dataset, 8, base)])
    stored = {f"{dataset}-{i}" for i in (0, 1, 2, 4, 5, 6, 7, 8)}
    summary = await eventually(
        lambda: ingest.datasets.quality_summary(dataset), lambda s: s.accepted >= len(stored), within=60
    )
    assert (summary.accepted, summary.duplicates, summary.rejected) == (len(stored), 0, 0)
    window = await ingest.datasets.read_window(DataWindow(dataset=dataset), labelled_only=False)
    assert sorted(row.event_id for row in window.rows) == sorted(stored)
    published = await ingest.features.wait_for(rows_of(ingest, dataset), len(stored))
    assert {decode(r, FeatureRow).message.event_id for r in published} == stored
