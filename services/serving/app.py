"""Composition root: the registry client, the model manager, the prediction log, the
model-events listener, and the gRPC and HTTP servers, started and stopped in order."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
from typing import Protocol

from services.common.access import PlatformAccess
from services.common.auth import MethodScopes, Scope
from services.common.clients.registry import RegistryClient
from services.common.events import Topics
from services.common.grpc_server import GrpcServer
from services.common.heap import freeze_startup_heap
from services.common.http import HttpServer, create_app
from services.common.kafka import ConsumerLoop, create_producer, ensure_topics
from services.common.kafka_security import KafkaSecurity
from services.common.lifecycle import Parts, cancel, run_until
from services.common.logging import get_logger
from services.common.proto.inference import grpc_service_pb2_grpc as oip_grpc
from services.common.tls import client_tls, server_tls
from services.serving import http_api
from services.serving.events import ModelEventsListener, PredictionLog, PredictionPublisher
from services.serving.grpc_api import SERVICE_NAME, InferenceServicer, ServingAuthInterceptor
from services.serving.inference import InferenceService
from services.serving.kafka_api import KafkaInference
from services.serving.metrics import BatchMetrics, ServingMetrics
from services.serving.models import ModelManager
from services.serving.predictor import configure_predict_thread
from services.serving.routing import ModelPolicy, Rollout
from services.serving.settings import ServingSettings

log = get_logger(__name__)

SERVICE = "serving"
RETRY_SECONDS = 2.0
PEER_POST_SECONDS = 0.5
"""How often a worker posts its problems to its replica's board and reads the others'."""


class PeerBoard(Protocol):
    """The other workers of this replica (see :mod:`services.serving.workers`)."""

    def post(self, problems: list[str]) -> None:
        """This worker's own problems now (empty: ready)."""

    def problems(self) -> list[str]:
        """The other workers' problems, each naming its worker."""


class ServingApp:
    """The serving service. After :meth:`start`, ``grpc_port`` and ``http_port`` are bound.

    ``start`` returns once the models with a ``production`` alias are loaded (or, if the
    registry is away, after ``startup_timeout_seconds``, not ready and still retrying).
    """

    def __init__(
        self, settings: ServingSettings, peers: PeerBoard | None = None, listen_when_synced: bool = False
    ):
        self.settings = settings
        self._peers = peers
        """Set when this app is one worker of several: readiness is then the replica's."""
        self._listen_when_synced = listen_when_synced
        """Open the ports only after the first full read of the registry: a worker restarted
        beside others that serve would otherwise be handed connections by the kernel as soon
        as it listens, before it has the models to answer them."""
        self.grpc_port = 0
        self.http_port = 0
        self.topics = Topics(settings.topic_prefix)
        self._ready = False
        self._synced = asyncio.Event()
        self._parts = Parts(SERVICE)
        self._events: ModelEventsListener | None = None
        self._requests: ConsumerLoop | None = None
        self.publisher: PredictionPublisher | None = None
        self.manager: ModelManager | None = None
        self.inference: InferenceService | None = None

    @property
    def ready(self) -> bool:
        return self._ready and not self.problems()

    def problems(self) -> list[str]:
        """What keeps serving from doing its job: not yet synced with the registry, or not
        hearing model events (it would go on serving versions the registry has replaced);
        with several workers, also what keeps any other worker of the replica from it."""
        others = self._peers.problems() if self._peers is not None else []
        return self._own_problems() + others

    def _own_problems(self) -> list[str]:
        if not self._ready:
            return ["not yet synced with the registry"]
        problem = self._events.problem() if self._events is not None else "not started"
        problems = [f"model events listener: {problem}"] if problem else []
        if self._requests is not None and (problem := self._requests.problem()):
            problems.append(f"kafka inference consumer: {problem}")
        return problems

    async def start(self) -> None:
        """Start every part in order; if one fails, the ones before it are stopped again.

        Returns once the registry was read, or after ``startup_timeout_seconds`` (not ready,
        still retrying in the background)."""
        async with self._parts.starting():
            await self._start()
        try:
            async with asyncio.timeout(self.settings.startup_timeout_seconds):
                await self._synced.wait()
        except TimeoutError:
            log.warning("serving_not_ready", reason="the registry could not be read yet; still retrying")
        log.info("serving_started", grpc_port=self.grpc_port, http_port=self.http_port, ready=self._ready)

    async def _start(self) -> None:
        settings, parts = self.settings, self._parts
        previous_switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
        parts.on_stop("switch_interval", lambda: sys.setswitchinterval(previous_switch_interval))
        access = PlatformAccess(settings, SERVICE)
        verifier = access.verifier
        registry = await parts.enter(
            "registry_client",
            RegistryClient(
                settings.registry_address, access.credentials(Scope.READ), tls=client_tls(settings)
            ),
        )
        executor = concurrent.futures.ThreadPoolExecutor(
            settings.predict_threads, thread_name_prefix="predict", initializer=configure_predict_thread
        )
        parts.on_stop("predict_threads", lambda: executor.shutdown(wait=True))
        manager = ModelManager(
            registry,
            served_aliases=settings.served_aliases,
            defaults=ModelPolicy(
                rollout=Rollout(settings.default_rollout),
                canary_share=settings.default_canary_share,
                max_batch_rows=settings.max_batch_rows,
                max_batch_wait_ms=settings.max_batch_wait_ms,
            ),
            predict_executor=executor,
            max_queue_rows=settings.max_queue_rows,
            inline_rows=settings.inline_predict_rows,
            retained_versions=settings.retained_versions,
            observer_factory=BatchMetrics,
            on_change=ServingMetrics.models,
            signing_key=(
                settings.artifact_signing_key.get_secret_value().encode()
                if settings.artifact_signing_key is not None
                else None
            ),
        )
        self.manager = manager
        parts.on_stop("manager", manager.close)

        kafka_security = KafkaSecurity.from_settings(settings)
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            [self.topics.model_events, self.topics.predictions],
            security=kafka_security,
        )
        sink = None
        if settings.prediction_logging:
            publisher = PredictionPublisher(
                settings.kafka_bootstrap_servers,
                self.topics.predictions,
                client_id=SERVICE,
                capacity=settings.prediction_buffer,
                security=kafka_security,
            )
            self.publisher = publisher
            publisher.start()
            # Flush what is queued, within the configured time even if the broker is away.
            parts.on_stop(
                "prediction_log", lambda: publisher.stop(flush_timeout=settings.prediction_flush_seconds)
            )
            sink = PredictionLog(publisher, self.topics.predictions)
        inference = InferenceService(
            manager,
            max_rows=settings.max_rows,
            sink=sink,
            observer=ServingMetrics(),
            shadow_max_queue_rows=settings.shadow_max_queue_rows,
        )
        self.inference = inference
        # After the servers stop and before the prediction log flushes: shadow answers in
        # flight write their records too.
        parts.on_stop("shadows", inference.drain_shadows)

        # Listen before the first full read: a change after this point arrives as an event,
        # one before it is in what the read returns.
        self._events = await parts.start(
            "model_events",
            ModelEventsListener(
                settings.kafka_bootstrap_servers,
                self.topics.model_events,
                manager.request_sync,
                SERVICE,
                security=kafka_security,
            ),
        )

        tls = server_tls(settings)
        if self._listen_when_synced:
            await self._sync_before_listening(manager)
        # Workers of one replica share its ports; the kernel spreads connections over them.
        shared_ports = self._peers is not None
        grpc_server = GrpcServer(
            f"{settings.host}:{settings.grpc_port}",
            interceptors=[ServingAuthInterceptor(verifier, MethodScopes(default=Scope.PREDICT))],
            max_message_bytes=settings.max_message_bytes,
            tls=tls,
            reuse_port=shared_ports,
        )
        grpc_server.add_service(
            oip_grpc.add_GRPCInferenceServiceServicer_to_server,
            InferenceServicer(inference, manager, ready=lambda: self.ready, version=settings.code_version),
            SERVICE_NAME,
        )
        app = create_app(
            "mlops serving",
            settings.code_version,
            verifier=verifier,
            ready=lambda: self.ready,
            problems=self.problems,
            description="Open Inference Protocol (KServe V2) over HTTP/JSON.",
        )
        http_api.install(
            app,
            inference,
            manager,
            ready=lambda: self.ready,
            version=settings.code_version,
            max_body_bytes=settings.max_message_bytes,
        )
        # Stopped in reverse: gRPC stops taking requests (and lets those in flight finish)
        # before HTTP, and both before the parts above that requests use.
        http_server = HttpServer(
            app,
            settings.host,
            settings.http_port,
            tls=tls,
            reload_seconds=settings.tls_reload_seconds,
            reuse_port=shared_ports,
        )
        self.http_port = (await parts.start("http", http_server)).port
        await parts.start("grpc", grpc_server)
        await grpc_server.set_serving(False)
        self.grpc_port = grpc_server.port
        sync_task = asyncio.create_task(self._keep_in_sync(manager, grpc_server), name="serving-sync")
        parts.on_stop("sync", lambda: cancel(sync_task))
        if self._peers is not None:
            peers_task = asyncio.create_task(self._share_readiness(self._peers, grpc_server), name="peers")
            parts.on_stop("peers", lambda: cancel(peers_task))
        if settings.kafka_inference:
            await self._start_kafka_inference(inference)
        # Last to start, first to stop: a failed start leaves no poller behind.
        parts.on_stop("revocations", access.stop)
        await access.start()

    async def _start_kafka_inference(self, inference: InferenceService) -> None:
        """Answer requests from the inference topic (stopped first: its batch in hand is
        answered and committed before the data plane goes)."""
        settings, parts, topics = self.settings, self._parts, self.topics
        security = KafkaSecurity.from_settings(settings)
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            [topics.inference_requests, topics.dlq(topics.inference_requests), topics.inference_responses],
            security=security,
        )
        producer = await parts.start(
            "inference_producer",
            create_producer(settings.kafka_bootstrap_servers, SERVICE, linger_ms=1, security=security),
        )
        handler = KafkaInference(
            inference,
            topics.inference_responses,
            producer,
            ready=self._synced.is_set,
            max_bytes=settings.max_message_bytes,
            source=f"mlops-{SERVICE}",
        )
        self._requests = await parts.start(
            "inference_requests",
            ConsumerLoop(
                bootstrap_servers=settings.kafka_bootstrap_servers,
                topics=[topics.inference_requests],
                group_id=settings.kafka_inference_group,
                handler=handler.handle,
                producer=producer,
                client_id=SERVICE,
                max_batch=settings.kafka_inference_max_batch,
                fetch_max_wait_ms=settings.kafka_inference_fetch_wait_ms,
                security=security,
            ),
        )

    async def _keep_in_sync(self, manager: ModelManager, grpc_server: GrpcServer) -> None:
        """The first full read of the registry, then one every ``resync_interval_seconds``."""
        while True:
            try:
                await manager.sync_all()
            except Exception as exc:
                log.warning("registry_sync_failed", error=repr(exc))
            else:
                if not self._ready:
                    # What start-up made (modules, servers, the first models) lives as long as
                    # the process: out of the collector's reach, a full collection no longer
                    # scans it, which took about 100 ms with the process's 200,000 objects and
                    # stalled every request in flight (the single-row p99).
                    freeze_startup_heap()
                    self._ready = True
                    if self._peers is None:
                        # With peers, _share_readiness alone sets the health status: two
                        # writers raced, and the stale one could leave NOT_SERVING for good.
                        await grpc_server.set_serving(self.ready)
                    self._synced.set()
            await asyncio.sleep(self.settings.resync_interval_seconds if self._ready else RETRY_SECONDS)

    async def _sync_before_listening(self, manager: ModelManager) -> None:
        while True:
            try:
                await manager.sync_all()
                return
            except Exception as exc:
                log.warning("registry_sync_failed", error=repr(exc))
                if self._peers is not None:
                    self._peers.post(["not yet synced with the registry"])
            await asyncio.sleep(RETRY_SECONDS)

    async def _share_readiness(self, peers: PeerBoard, grpc_server: GrpcServer) -> None:
        """Post this worker's problems, and make gRPC health follow the replica's readiness."""
        while True:
            peers.post(self._own_problems())
            if self._ready:
                await grpc_server.set_serving(self.ready)  # sent only when it changes
            await asyncio.sleep(PEER_POST_SECONDS)

    async def stop(self) -> None:
        """Stop taking requests, let those in flight finish, flush the prediction log.

        Each step runs even if one before it failed (a broker that is away must not keep
        the gRPC port or the registry channel open)."""
        self._ready = False
        if self._peers is not None:
            self._peers.post(["stopping"])
        await self._parts.stop()
        log.info("serving_stopped")


async def run(settings: ServingSettings, stop: asyncio.Event) -> None:
    """Run serving until ``stop`` is set."""
    await run_until(ServingApp(settings), stop)
