"""Typed client for ingest's dataset API, and the canonical encoding of a window's rows.

A window's content hash is SHA-256 over the canonical encoding of its rows in window
order (:func:`canonical_row`). The server computes it while streaming; this client
recomputes it from the rows it received and refuses a window whose hash differs, as
artifact downloads refuse a wrong digest. The encoding is plain JSON, so any language
can reproduce it:

    one line per row, each ``json([event_id, entity_id, schema_version, event_time,
    features, label]) + "\\n"`` with sorted keys, no spaces, UTF-8, where ``event_time``
    is ``"<seconds>.<nanos, 9 digits>"``, ``features`` maps names to JSON scalars
    (number, string or boolean) and ``label`` is a scalar or ``null``.

Example::

    async with DatasetClient("127.0.0.1:50052", credentials) as datasets:
        data = await datasets.read_window(DataWindow(dataset="demo", max_rows=10_000))
        print(data.summary.content_sha256, len(data.rows))
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from services.common.clients.base import GrpcClient
from services.common.proto.mlops.v1 import datasets_pb2, datasets_pb2_grpc
from services.common.proto.mlops.v1.events_pb2 import FeatureRow
from services.common.proto.mlops.v1.model_pb2 import DataWindow, MaterializedWindow
from services.common.tls import ClientTls
from services.common.values import from_feature_value

DatasetSchema = datasets_pb2.DatasetSchema
QualitySummary = datasets_pb2.QualitySummary

_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def canonical_row(row: FeatureRow) -> bytes:
    """The canonical encoding of one row: one JSON line (see the module docstring)."""
    features = {name: from_feature_value(value) for name, value in row.features.items()}
    label = from_feature_value(row.label) if row.HasField("label") else None
    event_time = f"{row.event_time.seconds}.{row.event_time.nanos:09d}"
    line = [row.event_id, row.entity_id, row.schema_version, event_time, features, label]
    text = json.dumps(line, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8") + b"\n"


class WindowDigest:
    """SHA-256 over the canonical encoding of rows, fed in window order."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.row_count = 0

    def update(self, row: FeatureRow) -> None:
        self._hash.update(canonical_row(row))
        self.row_count += 1

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class WindowIntegrityError(Exception):
    """The rows received do not match the window's announced hash or row count."""


@dataclass(frozen=True)
class WindowData:
    """A materialised window: its rows in window order and their summary (hash, count, bounds)."""

    rows: list[FeatureRow]
    summary: MaterializedWindow


def timestamp(value: datetime) -> Timestamp:
    """A protobuf ``Timestamp`` from an aware ``datetime``."""
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


class DatasetClient(GrpcClient):
    """Async client for ``mlops.v1.DatasetService``.

    Parameters
    ----------
    address:
        ``host:port`` of ingest's gRPC server (``MLOPS_DATASETS_ADDRESS``).
    token:
        Returns the bearer token to send, called per request (``ServiceCredentials``
        re-mints before expiry). ``read`` scope reads, ``write`` registers schemas.
    timeout:
        Deadline of unary calls in seconds; streamed windows get ``window_timeout``.

    Errors surface as :class:`~services.common.errors.PlatformError` of the server's kind
    (``NotFound``, ``InvalidArgument`` naming the field, ``FailedPrecondition`` ...).
    """

    def __init__(
        self,
        address: str,
        token: Callable[[], str],
        *,
        timeout: float = 30.0,
        window_timeout: float = 600.0,
        tls: ClientTls | None = None,
    ):
        super().__init__(address, token, max_message_bytes=_MAX_MESSAGE_BYTES, tls=tls)
        self._datasets = self._stub(datasets_pb2_grpc.DatasetServiceStub)
        self._timeout = timeout
        self._window_timeout = window_timeout

    async def register_schema(self, schema: DatasetSchema) -> DatasetSchema:
        """Register a schema version; the answer carries the version the server assigned."""
        request = datasets_pb2.RegisterSchemaRequest(schema=schema)
        return await self._datasets.RegisterSchema(request, metadata=self._metadata(), timeout=self._timeout)

    async def get_schema(self, name: str, version: int = 0) -> DatasetSchema:
        """One version of a dataset's schema; the latest when ``version`` is 0."""
        request = datasets_pb2.GetSchemaRequest(name=name, version=version)
        return await self._datasets.GetSchema(request, metadata=self._metadata(), timeout=self._timeout)

    async def list_schemas(self) -> list[DatasetSchema]:
        """The latest schema of every dataset, by name."""
        response = await self._datasets.ListSchemas(
            datasets_pb2.ListSchemasRequest(), metadata=self._metadata(), timeout=self._timeout
        )
        return list(response.schemas)

    async def iter_window(
        self, window: DataWindow, labelled_only: bool = True, chunk_rows: int = 0
    ) -> AsyncIterator[FeatureRow | MaterializedWindow]:
        """Stream a window: its rows in window order, then its verified summary last.

        Raises :class:`WindowIntegrityError` (after the last row) when the rows do not
        hash to the summary's ``content_sha256`` or do not add up to its ``row_count``.
        """
        request = datasets_pb2.ReadWindowRequest(
            window=window, labelled_only=labelled_only, chunk_rows=chunk_rows
        )
        digest = WindowDigest()
        summary: MaterializedWindow | None = None
        call = self._datasets.ReadWindow(request, metadata=self._metadata(), timeout=self._window_timeout)
        async for chunk in call:
            if summary is not None:
                raise WindowIntegrityError("rows arrived after the window's summary")
            for row in chunk.rows:
                digest.update(row)
                yield row
            if chunk.HasField("summary"):
                summary = chunk.summary
        if summary is None:
            raise WindowIntegrityError("the stream ended without the window's summary")
        if summary.row_count != digest.row_count:
            raise WindowIntegrityError(f"received {digest.row_count} rows, summary says {summary.row_count}")
        if summary.content_sha256 != digest.hexdigest():
            raise WindowIntegrityError(
                f"content hash {digest.hexdigest()} differs from the summary's {summary.content_sha256}"
            )
        yield summary

    async def read_window(
        self, window: DataWindow, labelled_only: bool = True, chunk_rows: int = 0
    ) -> WindowData:
        """A whole window in memory, hash verified (see :meth:`iter_window`)."""
        rows: list[FeatureRow] = []
        async for item in self.iter_window(window, labelled_only=labelled_only, chunk_rows=chunk_rows):
            if isinstance(item, FeatureRow):
                rows.append(item)
            else:
                return WindowData(rows=rows, summary=item)
        raise WindowIntegrityError("the stream ended without the window's summary")  # pragma: no cover

    async def quality_summary(
        self, dataset: str, start: datetime | None = None, end: datetime | None = None
    ) -> QualitySummary:
        """Accepted, duplicate and refused events of ``dataset`` processed in [start, end)."""
        request = datasets_pb2.QualitySummaryRequest(dataset=dataset)
        if start is not None:
            request.start_time.CopyFrom(timestamp(start))
        if end is not None:
            request.end_time.CopyFrom(timestamp(end))
        return await self._datasets.GetQualitySummary(
            request, metadata=self._metadata(), timeout=self._timeout
        )
