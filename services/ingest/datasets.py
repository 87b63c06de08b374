"""The dataset API's use cases: register and read schemas, materialise windows, summarise
data quality. Transport-free: they raise platform errors (``InvalidRequest``, ``NotFound``,
``PermissionDenied``, ``FailedPrecondition``, the store's ``Conflict``), which the gRPC and
HTTP edges answer.

A dataset belongs to the team its first schema version was registered for (schemas from
before teams existed: the default team). A caller reads only its teams' datasets (another
team's dataset is NOT_FOUND, as a dataset that does not exist) and registers versions
only with the write scope there. Dataset names are unique across teams.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from services.common.auth import DEFAULT_TEAM, Principal, Scope, check_team_name
from services.common.clients.datasets import WindowDigest
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from services.common.proto.mlops.v1.datasets_pb2 import DatasetSchema, QualityIssue, QualitySummary
from services.common.proto.mlops.v1.events_pb2 import FeatureRow
from services.common.proto.mlops.v1.model_pb2 import DataWindow, MaterializedWindow
from services.ingest.pipeline import LABEL_OUTCOME, SchemaCatalog, Status
from services.ingest.schemas import SchemaConflict, check_storable, plan_registration, validate_schema
from services.ingest.store import DatasetStore, WindowQuery, row_to_feature_row


class InvalidRequest(InvalidArgument):
    """A request with a bad argument, naming it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}", field=field)


def team_of(schema: DatasetSchema) -> str:
    return schema.team or DEFAULT_TEAM


def to_datetime(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def from_datetime(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


@dataclass(frozen=True)
class WindowRequest:
    window: DataWindow
    labelled_only: bool
    chunk_rows: int


class Datasets:
    """Schemas, windows and quality summaries over the store."""

    def __init__(
        self,
        store: DatasetStore,
        catalog: SchemaCatalog,
        *,
        pseudonymization_enabled: bool,
        default_chunk_rows: int,
        max_chunk_rows: int,
    ):
        self._store = store
        self._catalog = catalog
        self._pseudonymization_enabled = pseudonymization_enabled
        self._default_chunk_rows = default_chunk_rows
        self._max_chunk_rows = max_chunk_rows

    async def register_schema(self, candidate: DatasetSchema, caller: Principal) -> DatasetSchema:
        """Store ``candidate`` as a version per ``DatasetSchema.version``'s rules, in its
        dataset's team (a new dataset: ``candidate.team``, else the caller's only team).

        Raises ``SchemaError`` (invalid), ``SchemaConflict`` (breaking or changed, or the name
        taken by another team), ``SchemaUnsupported`` (private fields without a key),
        ``PermissionDenied`` (no write scope in the team) or ``Conflict`` (a race lost to
        another registration of the same version, from the store).
        """
        validate_schema(candidate)
        check_storable(candidate, self._pseudonymization_enabled)
        latest = await self._store.get_schema(candidate.name)
        team = team_of(latest) if latest is not None else candidate.team or caller.home_team()
        try:
            check_team_name(team)
        except ValueError as exc:
            raise InvalidRequest("team", str(exc)) from None
        if latest is not None and (not caller.acts_for(team) or candidate.team not in ("", team)):
            # Names are global: this says the name is taken, never by which team.
            raise SchemaConflict(f"dataset {candidate.name!r} exists in another team")
        if not caller.may(Scope.WRITE, team):
            raise PermissionDenied(f"{caller.subject!r} lacks scope 'write' in team {team!r}")
        stored = None
        if latest is not None and 0 < candidate.version <= latest.version:
            stored = await self._store.get_schema(candidate.name, candidate.version)
        plan = plan_registration(candidate, latest, stored)
        if not plan.create:
            existing = stored if stored is not None and stored.version == plan.version else latest
            assert existing is not None
            return existing
        schema = DatasetSchema()
        schema.CopyFrom(candidate)
        schema.version = plan.version
        schema.created_at.CopyFrom(from_datetime(datetime.now(UTC)))
        schema.created_by = caller.subject
        schema.team = team
        await self._store.insert_schema(schema)
        if latest is None or latest.retention_seconds != schema.retention_seconds:
            await self._store.apply_retention(schema.name, schema.retention_seconds)
        self._catalog.forget(schema.name)
        return schema

    async def get_schema(self, name: str, version: int, caller: Principal) -> DatasetSchema:
        if not name:
            raise InvalidRequest("name", "must name a dataset")
        if version < 0:
            raise InvalidRequest("version", "must be 0 (latest) or a version number")
        schema = await self._store.get_schema(name[:256], version)
        if schema is None or not caller.acts_for(team_of(schema)):
            what = f"{name!r} v{version}" if version else repr(name)
            raise NotFound(f"no dataset schema {what}")
        if not schema.team:
            schema.team = DEFAULT_TEAM
        return schema

    async def list_schemas(self, caller: Principal) -> list[DatasetSchema]:
        """The latest schema of each dataset of the caller's teams."""
        schemas = [s for s in await self._store.latest_schemas() if caller.acts_for(team_of(s))]
        for schema in schemas:
            schema.team = team_of(schema)
        return schemas

    async def may_ingest(self, dataset: str, caller: Principal) -> bool:
        """Whether ``caller`` may send events to ``dataset`` (False for a dataset it does not
        see, which its events then call unknown, as for one that does not exist)."""
        validator = await self._catalog.validator(dataset)
        return validator is None or caller.may(Scope.INGEST, team_of(validator.schema))

    async def read_window(
        self, request: WindowRequest, caller: Principal
    ) -> AsyncIterator[list[FeatureRow] | MaterializedWindow]:
        """Chunks of rows in window order, then the :class:`MaterializedWindow` last.

        The request is checked (and the row count against ``min_rows``) before any row
        is sent, so a refused window never arrives half-streamed.
        """
        window = request.window
        chunk_rows = self._check_window(request)
        schema = await self.get_schema(window.dataset, 0, caller)
        start = to_datetime(window.start_time) if window.HasField("start_time") else None
        end = to_datetime(window.end_time) if window.HasField("end_time") else None
        query = WindowQuery(window.dataset, start, end, request.labelled_only, datetime.now(UTC))
        cutoff = await self._store.newest_cutoff(query, window.max_rows) if window.max_rows else None
        if window.min_rows:
            available = await self._store.count(query)
            if window.max_rows:
                available = min(available, window.max_rows)
            if available < window.min_rows:
                raise FailedPrecondition(
                    f"the window has {available} rows, fewer than min_rows {window.min_rows}"
                )
        digest = WindowDigest()
        chunk: list[FeatureRow] = []
        first: FeatureRow | None = None
        last: FeatureRow | None = None
        schema_version = 0
        async for document in self._store.rows(query, cutoff, chunk_rows):
            row = row_to_feature_row(document)
            digest.update(row)
            first = first or row
            last = row
            schema_version = max(schema_version, row.schema_version)
            chunk.append(row)
            if len(chunk) >= chunk_rows:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
        resolved = DataWindow()
        resolved.CopyFrom(window)
        if first is not None and last is not None:
            resolved.start_time.CopyFrom(first.event_time)
            resolved.end_time.CopyFrom(last.event_time)
        yield MaterializedWindow(
            window=resolved,
            content_sha256=digest.hexdigest(),
            row_count=digest.row_count,
            schema_version=schema_version or schema.version,
        )

    def _check_window(self, request: WindowRequest) -> int:
        window = request.window
        if not window.dataset:
            raise InvalidRequest("window.dataset", "must name a dataset")
        if window.max_rows < 0:
            raise InvalidRequest("window.max_rows", "must be 0 (no cap) or positive")
        if window.min_rows < 0:
            raise InvalidRequest("window.min_rows", "must be 0 or positive")
        if window.max_rows and window.min_rows > window.max_rows:
            raise InvalidRequest("window.min_rows", "must not exceed max_rows")
        if window.HasField("start_time") and window.HasField("end_time"):
            if to_datetime(window.start_time) > to_datetime(window.end_time):
                raise InvalidRequest("window.end_time", "must not be before start_time")
        if request.chunk_rows < 0 or request.chunk_rows > self._max_chunk_rows:
            raise InvalidRequest("chunk_rows", f"must be between 0 (default) and {self._max_chunk_rows}")
        return request.chunk_rows or self._default_chunk_rows

    async def quality_summary(
        self, dataset: str, start: datetime | None, end: datetime | None, caller: Principal
    ) -> QualitySummary:
        """Accepted, duplicate, rejected (by reason and field) and labelled events in [start, end)."""
        if start is not None and end is not None and start > end:
            raise InvalidRequest("end_time", "must not be before start_time")
        await self.get_schema(dataset, 0, caller)
        summary = QualitySummary(dataset=dataset)
        if start is not None:
            summary.start_time.CopyFrom(from_datetime(start))
        if end is not None:
            summary.end_time.CopyFrom(from_datetime(end))
        for item in await self._store.quality(dataset, start, end):
            outcome, count = item["outcome"], int(item["count"])
            if outcome == Status.ACCEPTED:
                summary.accepted += count
            elif outcome == Status.DUPLICATE:
                summary.duplicates += count
            elif outcome == LABEL_OUTCOME:
                summary.labels += count
            elif outcome == Status.REJECTED:
                summary.rejected += count
                summary.issues.append(
                    QualityIssue(error_class=item["error_class"], field=item["field"], count=count)
                )
        summary.issues.sort(key=lambda issue: (-issue.count, issue.error_class, issue.field))
        return summary
