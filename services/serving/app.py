"""Composition root: the registry client, the model manager, the prediction log, the
model-events listener, and the gRPC and HTTP servers, started and stopped in order."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
from collections.abc import Awaitable, Callable

from services.common.access import PlatformAccess
from services.common.auth import MethodScopes, Scope
from services.common.clients.registry import RegistryClient
from services.common.events import Topics
from services.common.grpc_server import GrpcServer
from services.common.http import HttpServer, create_app
from services.common.kafka import ensure_topics
from services.common.logging import get_logger
from services.common.proto.inference import grpc_service_pb2_grpc as oip_grpc
from services.serving import http_api
from services.serving.events import ModelEventsListener, PredictionLog, PredictionPublisher
from services.serving.grpc_api import SERVICE_NAME, InferenceServicer, ServingAuthInterceptor
from services.serving.inference import InferenceService
from services.serving.metrics import BatchMetrics, ServingMetrics
from services.serving.models import ModelManager
from services.serving.predictor import configure_predict_thread
from services.serving.routing import ModelPolicy, Rollout
from services.serving.settings import ServingSettings

log = get_logger(__name__)

SERVICE = "serving"
RETRY_SECONDS = 2.0


class ServingApp:
    """The serving service. After :meth:`start`, ``grpc_port`` and ``http_port`` are bound.

    ``start`` returns once the models with a ``production`` alias are loaded (or, if the
    registry is away, after ``startup_timeout_seconds``, not ready and still retrying).
    """

    def __init__(self, settings: ServingSettings):
        self.settings = settings
        self.grpc_port = 0
        self.http_port = 0
        self.topics = Topics(settings.topic_prefix)
        self._ready = False
        self._previous_switch_interval: float | None = None
        self._synced = asyncio.Event()
        self._registry: RegistryClient | None = None
        self._access: PlatformAccess | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.publisher: PredictionPublisher | None = None
        self._events: ModelEventsListener | None = None
        self._grpc: GrpcServer | None = None
        self._http: HttpServer | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self.manager: ModelManager | None = None
        self.inference: InferenceService | None = None

    @property
    def ready(self) -> bool:
        return self._ready

    async def start(self) -> None:
        settings = self.settings
        self._previous_switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
        access = self._access = PlatformAccess(settings, SERVICE)
        verifier = access.verifier
        self._registry = RegistryClient(settings.registry_address, access.credentials(Scope.READ))
        self._executor = concurrent.futures.ThreadPoolExecutor(
            settings.predict_threads, thread_name_prefix="predict", initializer=configure_predict_thread
        )
        manager = ModelManager(
            self._registry,
            served_aliases=settings.served_aliases,
            defaults=ModelPolicy(
                rollout=Rollout(settings.default_rollout),
                canary_share=settings.default_canary_share,
                max_batch_rows=settings.max_batch_rows,
                max_batch_wait_ms=settings.max_batch_wait_ms,
            ),
            predict_executor=self._executor,
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

        await ensure_topics(
            settings.kafka_bootstrap_servers, [self.topics.model_events, self.topics.predictions]
        )
        sink = None
        if settings.prediction_logging:
            self.publisher = PredictionPublisher(
                settings.kafka_bootstrap_servers,
                self.topics.predictions,
                client_id=SERVICE,
                capacity=settings.prediction_buffer,
            )
            self.publisher.start()
            sink = PredictionLog(self.publisher, self.topics.predictions)
        self.inference = InferenceService(
            manager,
            max_rows=settings.max_rows,
            sink=sink,
            observer=ServingMetrics(),
            shadow_max_queue_rows=settings.shadow_max_queue_rows,
        )

        # Listen before the first full read: a change after this point arrives as an event,
        # one before it is in what the read returns.
        self._events = ModelEventsListener(
            settings.kafka_bootstrap_servers, self.topics.model_events, manager.request_sync, SERVICE
        )
        await self._events.start()

        self._grpc = GrpcServer(
            f"{settings.host}:{settings.grpc_port}",
            interceptors=[ServingAuthInterceptor(verifier, MethodScopes(default=Scope.PREDICT))],
            max_message_bytes=settings.max_message_bytes,
        )
        self._grpc.add_service(
            oip_grpc.add_GRPCInferenceServiceServicer_to_server,
            InferenceServicer(
                self.inference, manager, ready=lambda: self._ready, version=settings.code_version
            ),
            SERVICE_NAME,
        )
        app = create_app(
            "mlops serving",
            settings.code_version,
            verifier=verifier,
            ready=lambda: self._ready,
            description="Open Inference Protocol (KServe V2) over HTTP/JSON.",
        )
        http_api.install(
            app,
            self.inference,
            manager,
            ready=lambda: self._ready,
            version=settings.code_version,
            max_body_bytes=settings.max_message_bytes,
        )
        self._http = HttpServer(app, settings.host, settings.http_port)
        await self._grpc.start()
        await self._grpc.set_serving(False)
        await self._http.start()
        self.grpc_port = self._grpc.port
        self.http_port = self._http.port
        await access.start()

        self._sync_task = asyncio.create_task(self._keep_in_sync(), name="serving-sync")
        try:
            async with asyncio.timeout(settings.startup_timeout_seconds):
                await self._synced.wait()
        except TimeoutError:
            log.warning("serving_not_ready", reason="the registry could not be read yet; still retrying")
        log.info("serving_started", grpc_port=self.grpc_port, http_port=self.http_port, ready=self._ready)

    async def _keep_in_sync(self) -> None:
        """The first full read of the registry, then one every ``resync_interval_seconds``."""
        assert self.manager is not None and self._grpc is not None
        while True:
            try:
                await self.manager.sync_all()
            except Exception as exc:
                log.warning("registry_sync_failed", error=repr(exc))
            else:
                if not self._ready:
                    self._ready = True
                    await self._grpc.set_serving(True)
                    self._synced.set()
            await asyncio.sleep(self.settings.resync_interval_seconds if self._ready else RETRY_SECONDS)

    async def stop(self) -> None:
        """Stop taking requests, let those in flight finish, flush the prediction log.

        Each step runs even if one before it failed (a broker that is away must not keep
        the gRPC port or the registry channel open)."""
        self._ready = False
        steps: list[tuple[str, Callable[[], Awaitable[object]] | None]] = [
            ("access", self._access.stop if self._access else None),
            ("grpc", self._grpc.stop if self._grpc else None),
            ("http", self._http.stop if self._http else None),
            ("model_events", self._events.stop if self._events else None),
            ("sync", self._stop_sync),
            ("manager", self.manager.close if self.manager else None),
            ("shadows", self.inference.drain_shadows if self.inference else None),
            ("prediction_log", self._stop_prediction_log),
            ("registry_client", self._registry.close if self._registry else None),
        ]
        for name, step in steps:
            if step is None:
                continue
            try:
                await step()
            except Exception as exc:
                log.warning("stop_step_failed", step=name, error=repr(exc))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        if self._previous_switch_interval is not None:
            sys.setswitchinterval(self._previous_switch_interval)
        log.info("serving_stopped")

    async def _stop_prediction_log(self) -> None:
        """Flush what is queued, within the configured time even if the broker is away."""
        if self.publisher is not None:
            await self.publisher.stop(flush_timeout=self.settings.prediction_flush_seconds)

    async def _stop_sync(self) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()
            await asyncio.gather(self._sync_task, return_exceptions=True)


async def run(settings: ServingSettings, stop: asyncio.Event) -> None:
    """Run serving until ``stop`` is set."""
    app = ServingApp(settings)
    try:
        await app.start()
        await stop.wait()
    finally:
        await app.stop()
