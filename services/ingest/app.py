"""Composition root: MongoDB, the producer, the raw-event consumer, the dataset API (gRPC)
and the batch endpoint (HTTP), started and stopped in order."""

from __future__ import annotations

import asyncio

from services.common import mongo
from services.common.access import PlatformAccess
from services.common.auth import AuthInterceptor
from services.common.events import Topics
from services.common.grpc_server import GrpcServer
from services.common.http import HttpServer
from services.common.kafka import create_producer, ensure_topics
from services.common.kafka_security import KafkaSecurity
from services.common.lifecycle import Parts, run_until
from services.common.logging import get_logger
from services.common.proto.mlops.v1 import datasets_pb2_grpc
from services.common.tls import server_tls
from services.ingest import grpc_api, http_api
from services.ingest.consumer import RawEventConsumer
from services.ingest.datasets import Datasets
from services.ingest.pipeline import IngestPipeline, SchemaCatalog
from services.ingest.privacy import Pseudonymizer
from services.ingest.settings import IngestSettings
from services.ingest.store import DatasetStore

log = get_logger(__name__)

# Windows stream in chunks far below this; a chunk of wide rows must still fit.
MAX_GRPC_MESSAGE_BYTES = 64 * 1024 * 1024


class IngestApp:
    """The ingest service. After :meth:`start`, ``grpc_port`` and ``http_port`` are bound."""

    def __init__(self, settings: IngestSettings):
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.grpc_port = 0
        self.http_port = 0
        self.pipeline: IngestPipeline | None = None
        self.consumer: RawEventConsumer | None = None
        self._parts = Parts("ingest")
        self._ready = False

    @property
    def ready(self) -> bool:
        return self._ready and self.consumer is not None and not self.problems()

    def problems(self) -> list[str]:
        """What keeps ingest from doing its job: its raw-event consumer, if it is not consuming."""
        problem = self.consumer.loop.problem() if self.consumer is not None else "not started"
        return [f"raw events consumer: {problem}"] if problem else []

    async def start(self) -> None:
        """Start every part in order; if one fails, the ones before it are stopped again."""
        async with self._parts.starting():
            await self._start()
        self._ready = True
        log.info("ingest_started", grpc_port=self.grpc_port, http_port=self.http_port)

    async def _start(self) -> None:
        settings, topics, parts = self.settings, self.topics, self._parts
        client = mongo.create_client(settings, "mlops-ingest")
        parts.on_stop("mongodb", client.close)
        store = DatasetStore(mongo.database(client, settings))
        await store.ensure_indexes()
        key = settings.pseudonymization_key
        pseudonymizer = (
            Pseudonymizer(key.get_secret_value().encode(), settings.pseudonymization_key_version)
            if key is not None
            else None
        )
        if pseudonymizer is None and await store.any_private_schema():
            log.warning(
                "pseudonymization_key_missing",
                detail="datasets with private fields exist; their events are refused until "
                "INGEST_PSEUDONYMIZATION_KEY is set",
            )
        kafka_security = KafkaSecurity.from_settings(settings)
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            [topics.raw_events, Topics.dlq(topics.raw_events), topics.features, topics.labels],
            security=kafka_security,
        )
        producer = await parts.start(
            "producer",
            create_producer(settings.kafka_bootstrap_servers, "mlops-ingest", security=kafka_security),
        )
        catalog = SchemaCatalog(
            store, pseudonymizer, settings.max_clock_skew_seconds, settings.schema_cache_seconds
        )
        self.pipeline = IngestPipeline(
            store,
            catalog,
            producer,
            topics,
            max_event_bytes=settings.max_event_bytes,
            pending_label_seconds=settings.pending_label_seconds,
            store_batch_size=settings.store_batch_size,
        )
        datasets = Datasets(
            store,
            catalog,
            pseudonymization_enabled=pseudonymizer is not None,
            default_chunk_rows=settings.window_chunk_rows,
            max_chunk_rows=settings.window_max_chunk_rows,
        )
        access = PlatformAccess(settings, "ingest")
        verifier = access.verifier
        tls = server_tls(settings)
        grpc_server = GrpcServer(
            f"{settings.host}:{settings.grpc_port}",
            interceptors=[AuthInterceptor(verifier, grpc_api.SCOPES)],
            max_message_bytes=MAX_GRPC_MESSAGE_BYTES,
            tls=tls,
        )
        grpc_server.add_service(
            datasets_pb2_grpc.add_DatasetServiceServicer_to_server,
            grpc_api.DatasetServicer(datasets),
            grpc_api.SERVICE_NAME,
        )
        http_server = HttpServer(
            http_api.create_http_app(
                self.pipeline, datasets, settings, verifier, ready=lambda: self.ready, problems=self.problems
            ),
            settings.host,
            settings.http_port,
            tls=tls,
            reload_seconds=settings.tls_reload_seconds,
        )
        self.consumer = await parts.start(
            "consumer", RawEventConsumer(settings, self.pipeline, producer, topics)
        )
        self.grpc_port = (await parts.start("grpc", grpc_server)).port
        self.http_port = (await parts.start("http", http_server)).port
        # Last to start, first to stop: a failed start leaves no poller behind.
        parts.on_stop("revocations", access.stop)
        await access.start()

    async def stop(self) -> None:
        """Stop taking calls, finish and commit the batch in hand, then disconnect."""
        self._ready = False
        await self._parts.stop()
        log.info("ingest_stopped")


async def run(settings: IngestSettings, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set."""
    await run_until(IngestApp(settings), stop)
