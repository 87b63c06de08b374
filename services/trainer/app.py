"""Composition root: the job store, the registry and dataset clients, the train-request
consumer and the health/metrics server, started and stopped in order."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor

from aiokafka import AIOKafkaProducer
from pymongo.asynchronous.database import AsyncDatabase

from services.common import mongo
from services.common.access import PlatformAccess
from services.common.auth import Scope, ServiceCredentials
from services.common.clients.datasets import DatasetClient
from services.common.clients.inference import InferenceClient
from services.common.clients.registry import RegistryClient
from services.common.events import Topics
from services.common.http import HttpServer, create_app
from services.common.kafka import ConsumerLoop, create_producer, ensure_topics
from services.common.kafka_security import KafkaSecurity
from services.common.lifecycle import Parts, run_until
from services.common.logging import get_logger
from services.common.mongo import Document
from services.common.tls import client_tls, server_tls
from services.trainer import metrics
from services.trainer.batch import BatchConfig, BatchJobs
from services.trainer.batch_events import BatchPublisher, BatchRequestHandler
from services.trainer.batch_store import BatchStore
from services.trainer.events import ResultPublisher, TrainRequestHandler
from services.trainer.job_store import JobStore
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
        self._consumer: ConsumerLoop | None = None
        self._batch_consumer: ConsumerLoop | None = None
        self._online: OnlineLearner | None = None
        self._parts = Parts("trainer")
        self._ready = False

    @property
    def ready(self) -> bool:
        return self._ready and self._consumer is not None and not self.problems()

    def problems(self) -> list[str]:
        """What keeps the trainer from doing its job: a consumer that is not consuming."""
        found = []
        problem = self._consumer.problem() if self._consumer is not None else "not started"
        if problem:
            found.append(f"train requests consumer: {problem}")
        if self._batch_consumer is not None and (problem := self._batch_consumer.problem()):
            found.append(f"batch requests consumer: {problem}")
        if self._online is not None and (problem := self._online.problem()):
            found.append(f"online learner: {problem}")
        return found

    async def start(self) -> None:
        """Start every part in order; if one fails, the ones before it are stopped again."""
        async with self._parts.starting():
            await self._start()
        self._ready = True
        log.info("trainer_started", http_port=self.http_port, instance=self.instance)

    async def _start(self) -> None:
        settings, parts = self.settings, self._parts
        topics = Topics(settings.topic_prefix)
        client = mongo.create_client(settings, "mlops-trainer")
        parts.on_stop("mongodb", client.close)
        database = mongo.database(client, settings)
        store = JobStore(database, self.instance, settings.job_lease_seconds)
        await store.ensure_indexes()
        kafka_security = KafkaSecurity.from_settings(settings)
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            [
                topics.train_requests,
                Topics.dlq(topics.train_requests),
                topics.train_results,
                topics.features,
                topics.batch_requests,
                Topics.dlq(topics.batch_requests),
                topics.batch_results,
                topics.batch_scores,
            ],
            security=kafka_security,
        )
        producer = await parts.start(
            "producer",
            create_producer(settings.kafka_bootstrap_servers, "mlops-trainer", security=kafka_security),
        )
        # The trainer's HTTP port serves health and metrics only, so no caller's token is
        # checked there and it keeps no revocation list.
        access = PlatformAccess(settings, "trainer")
        credentials = access.credentials(Scope.READ, Scope.WRITE, Scope.PREDICT)
        registry = await parts.enter(
            "registry_client",
            RegistryClient(settings.registry_address, credentials, tls=client_tls(settings)),
        )
        datasets = await parts.enter(
            "datasets_client", DatasetClient(settings.datasets_address, credentials, tls=client_tls(settings))
        )
        key = settings.artifact_signing_key
        signing_key = key.get_secret_value().encode() if key is not None else None
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="training")
        # The job gave up at its last step before this runs; it only joins an idle thread.
        parts.on_stop(
            "training_thread",
            lambda: asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True),
        )
        runner = JobRunner(
            store=store,
            registry=registry,
            datasets=datasets,
            results=ResultPublisher(producer, topics.train_results),
            executor=executor,
            config=RunnerConfig(
                limits=settings.limits,
                code_version=settings.code_version,
                lease_seconds=settings.job_lease_seconds,
                progress_interval_seconds=settings.progress_interval_seconds,
                signing_key=signing_key,
            ),
        )
        self._consumer = consumer = await parts.start(
            "consumer",
            ConsumerLoop(
                bootstrap_servers=settings.kafka_bootstrap_servers,
                topics=[topics.train_requests],
                group_id=f"{settings.topic_prefix}.{settings.consumer_group}",
                handler=TrainRequestHandler(runner),
                producer=producer,
                client_id=f"mlops-trainer-{self.instance}",
                # One request per batch: a retried batch never re-answers a request it already answered.
                max_batch=1,
                security=kafka_security,
            ),
        )
        await self._start_batch_scoring(database, producer, credentials, registry, datasets)
        # Before the consumer stops (it finishes the batch in hand): the running job gives up
        # at its next step, and its request is redelivered to whoever takes the partition.
        parts.on_stop("running_job", runner.stop)
        if settings.online_learning and signing_key is not None:
            online = OnlineLearner(
                bootstrap_servers=settings.kafka_bootstrap_servers,
                features_topic=topics.features,
                registry=registry,
                store=store,
                config=OnlineConfig(
                    snapshot_rows=settings.online_snapshot_rows,
                    refresh_seconds=settings.online_refresh_seconds,
                    code_version=settings.code_version,
                    signing_key=signing_key,
                ),
                security=kafka_security,
            )
            self._online = await parts.start("online_learner", online)
        metrics.ASSIGNED_PARTITIONS.set_function(lambda: len(consumer.assignment()))
        http_app = create_app(
            "mlops trainer",
            settings.code_version,
            verifier=access.verifier,
            ready=lambda: self.ready,
            problems=self.problems,
            description="Trains, evaluates and registers models from train requests on Kafka.",
        )
        self.http_port = (
            await parts.start(
                "http",
                HttpServer(
                    http_app,
                    settings.host,
                    settings.http_port,
                    tls=server_tls(settings),
                    reload_seconds=settings.tls_reload_seconds,
                ),
            )
        ).port

    async def _start_batch_scoring(
        self,
        database: AsyncDatabase[Document],
        producer: AIOKafkaProducer,
        credentials: ServiceCredentials,
        registry: RegistryClient,
        datasets: DatasetClient,
    ) -> None:
        """Batch scoring jobs from their own topic and consumer group, so a long job never
        holds up training (and the reverse); serving computes the scores."""
        settings, parts = self.settings, self._parts
        topics = Topics(settings.topic_prefix)
        batch_store = BatchStore(database)
        await batch_store.ensure_indexes()
        serving = await parts.enter(
            "serving_client",
            InferenceClient(settings.serving_address, credentials, tls=client_tls(settings)),
        )
        publisher = BatchPublisher(producer, topics.batch_results, topics.batch_scores)
        jobs = BatchJobs(
            store=batch_store,
            registry=registry,
            datasets=datasets,
            serving=serving,
            publish_result=publisher.result,
            publish_scores=publisher.scores,
            config=BatchConfig(
                chunk_rows=settings.batch_chunk_rows,
                progress_interval_seconds=settings.progress_interval_seconds,
                scores_topic=topics.batch_scores,
            ),
        )
        self._batch_consumer = await parts.start(
            "batch_consumer",
            ConsumerLoop(
                bootstrap_servers=settings.kafka_bootstrap_servers,
                topics=[topics.batch_requests],
                group_id=f"{settings.topic_prefix}.{settings.consumer_group}-batch",
                handler=BatchRequestHandler(jobs),
                producer=producer,
                client_id=f"mlops-trainer-batch-{self.instance}",
                max_batch=1,
                security=KafkaSecurity.from_settings(settings),
            ),
        )

    async def stop(self) -> None:
        """Give up the running job (it is redelivered), leave the group, then disconnect."""
        self._ready = False
        await self._parts.stop()
        log.info("trainer_stopped", instance=self.instance)


async def run(settings: TrainerSettings, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set."""
    await run_until(TrainerApp(settings), stop)
