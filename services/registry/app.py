"""Composition root: MongoDB, the artifact store, the outbox relay, the run recorder, the
token issuer and revocation list, the gRPC API and the REST mirror, started and stopped in
order."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

from services.common.access import PlatformAccess
from services.common.auth import AuthInterceptor, TokenIssuer
from services.common.errors import PlatformError
from services.common.events import Topics
from services.common.grpc_server import GrpcServer
from services.common.http import HttpServer
from services.common.kafka_security import KafkaSecurity
from services.common.lifecycle import Parts, cancel, run_until
from services.common.logging import get_logger
from services.common.proto.mlops.v1 import registry_pb2_grpc, runs_pb2_grpc
from services.common.tls import server_tls
from services.registry import grpc_api, http_api, run_api
from services.registry.outbox import OutboxRelay
from services.registry.registry import Registry
from services.registry.run_events import RunRecorder
from services.registry.settings import RegistrySettings
from services.registry.store import Store
from services.registry.store.artifacts import ArtifactRepository

log = get_logger(__name__)

# A version's metadata (signature, lineage, spec) must fit in one gRPC message; artifact
# bytes stream in chunks far below this.
MAX_GRPC_MESSAGE_BYTES = 32 * 1024 * 1024


class RegistryApp:
    """The registry service. After :meth:`start`, ``grpc_port`` and ``http_port`` are bound."""

    def __init__(self, settings: RegistrySettings):
        self.settings = settings
        self.grpc_port = 0
        self.http_port = 0
        self.registry: Registry | None = None
        self._parts = Parts("registry")
        self.run_recorder: RunRecorder | None = None
        self._ready = False
        self._stopping = asyncio.Event()

    @property
    def ready(self) -> bool:
        return self._ready

    async def start(self) -> None:
        """Start every part in order; if one fails, the ones before it are stopped again."""
        async with self._parts.starting():
            await self._start()
        self._ready = True
        log.info("registry_started", grpc_port=self.grpc_port, http_port=self.http_port)

    async def _start(self) -> None:
        settings, parts = self.settings, self._parts
        access = PlatformAccess(settings, "registry")
        key = settings.token_signing_key()
        if key is not None and key.kid not in settings.public_keys:
            raise ValueError(
                f"REGISTRY_SIGNING_KEY: its public key (kid {key.kid!r}) is not in MLOPS_AUTH_PUBLIC_KEYS, "
                "so every token the registry issued would be refused"
            )
        store = Store.open(settings)
        parts.on_stop("mongodb", store.close)
        if settings.artifact_keys is None:
            log.warning(
                "artifacts_unencrypted",
                detail="REGISTRY_ARTIFACT_KEYS is unset: artifacts are stored as they are",
            )
        await store.ensure_indexes(settings.outbox_retention_seconds, settings.audit_retention_seconds)
        await store.migrate(datetime.now(UTC))
        ended = await store.end_orphaned_transactions()
        if ended:
            log.info("orphaned_transactions_ended", sessions=ended)
        relay = OutboxRelay(
            store.outbox,
            settings.kafka_bootstrap_servers,
            Topics(settings.topic_prefix).model_events,
            settings.outbox_poll_seconds,
            security=KafkaSecurity.from_settings(settings),
        )
        registry = Registry(
            store,
            settings,
            on_commit=relay.wake,
            issuer=TokenIssuer(key) if key is not None else None,
            on_revoke=lambda revocation: access.revocations.add([revocation]),
        )
        self.registry = registry
        relay.start()
        parts.on_stop("outbox_relay", relay.stop)
        registry.refusals.start()
        parts.on_stop("refusals", registry.refusals.stop)
        # Joins its consumer group in the background: runs wait on their topic meanwhile.
        self.run_recorder = RunRecorder(registry, settings)
        self.run_recorder.start()
        parts.on_stop("run_recorder", self.run_recorder.stop)
        sweeper = asyncio.create_task(self._sweep(store.artifacts), name="artifact-sweeper")
        parts.on_stop("artifact_sweeper", lambda: self._stop_sweeper(sweeper))

        verifier = access.verifier
        tls = server_tls(settings)
        grpc_server = GrpcServer(
            f"{settings.host}:{settings.grpc_port}",
            interceptors=[
                AuthInterceptor(
                    verifier, grpc_api.METHOD_SCOPES, on_denied=grpc_api.denial_recorder(registry)
                )
            ],
            max_message_bytes=MAX_GRPC_MESSAGE_BYTES,
            tls=tls,
        )
        grpc_server.add_service(
            registry_pb2_grpc.add_RegistryServiceServicer_to_server,
            grpc_api.RegistryServicer(registry),
            grpc_api.SERVICE_NAME,
        )
        grpc_server.add_service(
            runs_pb2_grpc.add_RunServiceServicer_to_server,
            run_api.RunServicer(registry),
            run_api.SERVICE_NAME,
        )
        http_app = http_api.create_http_app(registry, settings, verifier, ready=lambda: self._ready)
        self.grpc_port = (await parts.start("grpc", grpc_server)).port
        self.http_port = (
            await parts.start(
                "http",
                HttpServer(
                    http_app,
                    settings.host,
                    settings.http_port,
                    tls=tls,
                    reload_seconds=settings.tls_reload_seconds,
                ),
            )
        ).port
        # Last to start, first to stop: the revocation list follows the registry's own records.
        parts.on_stop("revocations", access.stop)
        await access.start(source=registry.revocations)

    async def _sweep(self, artifacts: ArtifactRepository) -> None:
        """Remove what interrupted uploads left behind, now and then periodically."""
        age = timedelta(seconds=self.settings.orphan_age_seconds)
        while not self._stopping.is_set():
            try:
                removed = await artifacts.sweep_orphans(age)
                if removed:
                    log.info("artifact_orphans_removed", count=removed)
            except PlatformError as exc:
                log.warning("artifact_sweep_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.settings.orphan_sweep_seconds)

    async def _stop_sweeper(self, sweeper: asyncio.Task[None]) -> None:
        self._stopping.set()
        await cancel(sweeper)

    async def stop(self) -> None:
        """Stop taking calls, let the ones in flight finish, flush the outbox, disconnect."""
        self._ready = False
        await self._parts.stop()
        log.info("registry_stopped")


async def run(settings: RegistrySettings, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set."""
    await run_until(RegistryApp(settings), stop)
