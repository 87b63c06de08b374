"""Composition root: the job store, the registry and dataset clients, the train-request
consumer and the health/metrics server, started and stopped in order."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor

from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient

from services.common import mongo
from services.common.access import PlatformAccess
from services.common.auth import Scope
from services.common.clients.datasets import DatasetClient
from services.common.clients.registry import RegistryClient
from services.common.events import Topics
from services.common.http import HttpServer, create_app
from services.common.kafka import ConsumerLoop, create_producer, ensure_topics
from services.common.logging import get_logger
from services.common.mongo import Document
from services.trainer import metrics
from services.trainer.events import ResultPublisher, TrainRequestHandler
from services.trainer.jobs import JobStore
from services.trainer.online import OnlineConfig, OnlineLearner
from services.trainer.runner import JobRunner, RunnerConfig
from services.trainer.settings import TrainerSettings

log = get_logger(__name__)


class TrainerApp:
    """The trainer service. After :meth:`start`, ``http_port`` is bound."""

    def __init__(self, settings: TrainerSettings):
        self.settings = settings
        self.http_port = 0
        # Unique per process: a restarted trainer is a new owner and waits out the old leases.
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._client: AsyncMongoClient[Document] | None = None
        self._producer: AIOKafkaProducer | None = None
        self._registry: RegistryClient | None = None
        self._datasets: DatasetClient | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._runner: JobRunner | None = None
        self._consumer: ConsumerLoop | None = None
        self._online: OnlineLearner | None = None
        self._http: HttpServer | None = None
        self._ready = False

    @property
    def ready(self) -> bool:
        return self._ready and self._consumer is not None and self._consumer.running

    async def start(self) -> None:
        settings = self.settings
        topics = Topics(settings.topic_prefix)
        self._client = mongo.create_client(settings, "mlops-trainer")
        store = JobStore(mongo.database(self._client, settings), self.instance, settings.job_lease_seconds)
        await store.ensure_indexes()
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            [topics.train_requests, Topics.dlq(topics.train_requests), topics.train_results, topics.features],
        )
        self._producer = create_producer(settings.kafka_bootstrap_servers, "mlops-trainer")
        await self._producer.start()
        # The trainer's HTTP port serves health and metrics only, so no caller's token is
        # checked there and it keeps no revocation list.
        access = PlatformAccess(settings, "trainer")
        credentials = access.credentials(Scope.READ, Scope.WRITE)
        self._registry = RegistryClient(settings.registry_address, credentials)
        self._datasets = DatasetClient(settings.datasets_address, credentials)
        key = settings.artifact_signing_key
        signing_key = key.get_secret_value().encode() if key is not None else None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="training")
        self._runner = JobRunner(
            store=store,
            registry=self._registry,
            datasets=self._datasets,
            results=ResultPublisher(self._producer, topics.train_results),
            executor=self._executor,
            config=RunnerConfig(
                limits=settings.limits,
                code_version=settings.code_version,
                lease_seconds=settings.job_lease_seconds,
                progress_interval_seconds=settings.progress_interval_seconds,
                signing_key=signing_key,
            ),
        )
        self._consumer = ConsumerLoop(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            topics=[topics.train_requests],
            group_id=f"{settings.topic_prefix}.{settings.consumer_group}",
            handler=TrainRequestHandler(self._runner),
            producer=self._producer,
            client_id=f"mlops-trainer-{self.instance}",
            # One request per batch: a retried batch never re-answers a request it already answered.
            max_batch=1,
        )
        await self._consumer.start()
        if settings.online_learning and signing_key is not None:
            self._online = OnlineLearner(
                bootstrap_servers=settings.kafka_bootstrap_servers,
                features_topic=topics.features,
                registry=self._registry,
                store=store,
                config=OnlineConfig(
                    snapshot_rows=settings.online_snapshot_rows,
                    refresh_seconds=settings.online_refresh_seconds,
                    code_version=settings.code_version,
                    signing_key=signing_key,
                ),
            )
            await self._online.start()
        consumer = self._consumer
        metrics.ASSIGNED_PARTITIONS.set_function(lambda: len(consumer.assignment()))
        http_app = create_app(
            "mlops trainer",
            settings.code_version,
            verifier=access.verifier,
            ready=lambda: self.ready,
            description="Trains, evaluates and registers models from train requests on Kafka.",
        )
        self._http = HttpServer(http_app, settings.host, settings.http_port)
        await self._http.start()
        self.http_port = self._http.port
        self._ready = True
        log.info("trainer_started", http_port=self.http_port, instance=self.instance)

    async def stop(self) -> None:
        """Give up the running job (it is redelivered), leave the group, then disconnect."""
        self._ready = False
        if self._runner is not None:
            self._runner.stop()
        if self._online is not None:
            await self._online.stop()
        if self._consumer is not None:
            await self._consumer.stop()
        if self._http is not None:
            await self._http.stop()
        if self._producer is not None:
            await self._producer.stop()
        for client in (self._registry, self._datasets):
            if client is not None:
                await client.close()
        if self._executor is not None:
            # The job gave up at its last step above; this only joins an idle thread.
            await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        if self._client is not None:
            await self._client.close()
        log.info("trainer_stopped", instance=self.instance)


async def run(settings: TrainerSettings, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set."""
    app = TrainerApp(settings)
    await app.start()
    try:
        await stop.wait()
    finally:
        await app.stop()
