"""The local stack: the embedded broker and database plus the five services, each its own
process on loopback, supervised from one place.

``mlops up`` runs it on the default ports until Ctrl-C; the demo and the end-to-end tests
run it on free ports. Everything it starts is a child in its own process group that dies
with its parent, and :meth:`LocalStack.stop` stops services before the infrastructure they
need, so nothing is left behind.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from services.cli.health import Health, check_grpc_health, check_http_health, check_kafka, check_mongodb
from services.cli.stack_security import artifact_keys, issue_tls, persistent_key, tls_env
from services.cli.stack_state import (
    ADMIN_TOKEN_TTL_SECONDS,
    LOCAL_ADMIN,
    RENEW_BEFORE_SECONDS,
    StackPorts,
    StackState,
    process_started,
)
from services.common.auth import PlatformKeys, Scope, TokenIssuer
from services.common.events import Topics
from services.common.kafka import ensure_topics
from services.common.localstack import (
    ManagedProcess,
    free_port,
    start_kafka,
    start_mongo,
    start_object_store,
    start_process,
)
from services.common.tls import ClientTls

HOST = "127.0.0.1"
INFRA = ("kafka", "mongodb")
BROKER_STORE = "kafka-store"
"""The object store a persistent broker keeps its data in (``persistent_broker``)."""
ALL_SERVICES = ("registry", "ingest", "monitor", "serving", "trainer", "console")
"""Every service, in start order: a service starts after the ones it calls."""
RESTARTED_WITH_BROKER = ("monitor",)
"""Services restarted after the embedded broker: the monitor's stream tables (joins waiting
for their labels, drift episodes) live in topics of its own that the broker lost, and faust
waits on them rather than start over. The other services resume by themselves."""
RECORDS_LOST = (
    "kafka restarted without its records: the embedded broker keeps them in memory only, so "
    "every record it held (events not yet ingested, predictions and labels not yet joined, "
    "model events, train requests, committed offsets) was lost. The topics were recreated "
    "empty and the services resumed from the new logs; data already stored in the database "
    "(datasets, models, jobs) is intact. Compose with Apache Kafka keeps its logs."
)


@dataclass(frozen=True)
class ServiceSpec:
    """How the stack runs and checks one service."""

    name: str
    grpc_port: str | None
    """The :class:`StackPorts` field of its gRPC port, if it has one."""
    http_port: str
    """The :class:`StackPorts` field of its HTTP port (health and metrics at least)."""
    health: Literal["grpc", "http"]
    """Which port answers readiness: the gRPC health protocol or ``/health/ready``."""
    after: tuple[str, ...] = ()
    """Services it calls, which start first."""


SERVICES: dict[str, ServiceSpec] = {
    spec.name: spec
    for spec in (
        ServiceSpec("registry", "registry_grpc", "registry_http", "grpc"),
        ServiceSpec("ingest", "ingest_grpc", "ingest_http", "grpc"),
        ServiceSpec("monitor", None, "monitor_http", "http"),
        ServiceSpec("serving", "serving_grpc", "serving_http", "grpc", after=("registry",)),
        ServiceSpec("trainer", None, "trainer_http", "http", after=("registry", "ingest")),
        ServiceSpec("console", None, "console_http", "http", after=("registry", "ingest", "monitor")),
    )
}


def available_services() -> tuple[str, ...]:
    """The services that can run here (their package has a ``__main__``), in start order."""
    return tuple(
        name
        for name in ALL_SERVICES
        if importlib.util.find_spec(f"services.{name}") is not None
        and importlib.util.find_spec(f"services.{name}.__main__") is not None
    )


class StackError(RuntimeError):
    """The stack could not start (or restart) a component; the message carries its log tail."""


# ---------------------------------------------------------------------------------------------


def check_component(
    name: str, ports: StackPorts, host: str = HOST, timeout: float = 1.0, ca: Path | None = None
) -> Health:
    """Health of one component of a stack listening on ``host`` at ``ports`` (over TLS
    verified with ``ca`` when the stack runs with TLS)."""
    tls = ClientTls(ca_file=ca) if ca is not None else None
    if name == "kafka":
        endpoint = f"{host}:{ports.kafka}"
        return Health(name, endpoint, *check_kafka(endpoint, timeout=max(timeout, 3.0)))
    if name == "mongodb":
        endpoint = f"mongodb://{host}:{ports.mongodb}" + (f"/?tls=true&tlsCAFile={ca}" if ca else "")
        return Health(name, endpoint, *check_mongodb(endpoint, timeout=max(timeout, 3.0)))
    spec = SERVICES[name]
    ready_url = f"{'https' if tls else 'http'}://{host}:{getattr(ports, spec.http_port)}/health/ready"
    if spec.health == "grpc":
        assert spec.grpc_port is not None
        endpoint = f"{host}:{getattr(ports, spec.grpc_port)}"
        healthy, detail = check_grpc_health(endpoint, timeout, tls=tls)
        if healthy:
            # SERVING says the server is up; readiness also says whether its consumers consume.
            ready, why = check_http_health(ready_url, timeout, tls=tls)
            if not ready:
                healthy, detail = False, f"{detail}, not ready: {why}"
        return Health(name, endpoint, healthy, detail)
    return Health(name, ready_url, *check_http_health(ready_url, timeout, tls=tls))


# ---------------------------------------------------------------------------------------------
# The stack's state file, read by ``mlops down``/``status``/``demo`` to find a running stack.


# ---------------------------------------------------------------------------------------------


class LocalStack:
    """The embedded broker and database and the platform's services as child processes.

    Parameters
    ----------
    workdir
        Holds the database files (``mongodb/``) and one log per component (``logs/<name>.log``).
    ports
        Where everything listens: :meth:`StackPorts.defaults` or :meth:`StackPorts.free`.
    admin_token_ttl
        Lifetime of :attr:`admin_token` (the CLI mints new ones from the stack's key).
    env
        Extra environment for every service (``SERVING_MAX_BATCH_ROWS=...``); it wins over
        what the stack sets.
    services
        Which services to run, a subset of :data:`ALL_SERVICES`.
    topic_prefix
        Prefix of every topic.
    mongo_sync_on_commit
        Make every database commit durable before it is acknowledged, for tests that kill
        the database.
    persistent_broker
        Keep the broker's topics, records, groups and committed offsets in an object store
        under ``<workdir>/kafka-store/`` (SeaweedFS, run as :data:`BROKER_STORE`), so that
        the broker restarting, even killed, loses nothing it acknowledged; without it they
        live in the broker's memory (:data:`RECORDS_LOST`).
    tls
        Every service serves gRPC and HTTP with TLS only, with certificates of a private CA
        made in ``<workdir>/tls/`` (:attr:`ca`), and so does the database; the embedded
        broker stays in plaintext on loopback (its TLS cannot be configured, see docs/security.md).

    Examples
    --------
    >>> with LocalStack(Path("/tmp/stack"), StackPorts.free()) as stack:  # doctest: +SKIP
    ...     token = stack.admin_token
    """

    def __init__(
        self,
        workdir: Path,
        ports: StackPorts,
        *,
        admin_token_ttl: float = ADMIN_TOKEN_TTL_SECONDS,
        env: Mapping[str, str] | None = None,
        services: Sequence[str] = ALL_SERVICES,
        topic_prefix: str = "mlops",
        mongo_sync_on_commit: bool = False,
        persistent_broker: bool = False,
        tls: bool = False,
    ):
        unknown = [s for s in services if s not in SERVICES]
        if unknown:
            raise ValueError(f"unknown service(s) {unknown}; known: {', '.join(ALL_SERVICES)}")
        self.workdir = Path(workdir)
        self.ports = ports
        self.keys = PlatformKeys()
        """Random per stack: the registry signs tokens with ``keys.issuer``."""
        self.issuer = TokenIssuer(self.keys.issuer)
        self.artifact_signing_key = secrets.token_urlsafe(48)
        self._admin_ttl = admin_token_ttl
        self._admin_token = ""
        self._admin_expires = 0.0
        self.topic_prefix = topic_prefix
        self.topics = Topics(topic_prefix)
        self.services = [s for s in ALL_SERVICES if s in services]
        self.processes: dict[str, ManagedProcess] = {}
        self._extra_env = dict(env or {})
        self._mongo_sync_on_commit = mongo_sync_on_commit
        self.persistent_broker = persistent_broker
        self._store_port = free_port() if persistent_broker else None
        self.tls = tls
        self.ca: Path | None = None
        """The stack's CA certificate once :meth:`start` made it (with ``tls``)."""
        self._tls_env: dict[str, str] = {}
        self._tls_files: tuple[Path, Path] | None = None
        self.started_at: datetime | None = None
        self.notes: list[str] = []
        """What happened that an operator should know, oldest first (``mlops status`` shows it)."""

    # -- tokens ------------------------------------------------------------------------------

    @property
    def admin_token(self) -> str:
        """A ``local-admin`` token, minted again when it is close to expiring."""
        if self._admin_expires - time.time() < min(RENEW_BEFORE_SECONDS, self._admin_ttl / 2):
            minted = self.issuer.mint(LOCAL_ADMIN, [Scope.ADMIN], ttl_seconds=self._admin_ttl)
            self._admin_token, self._admin_expires = minted.token, minted.expires_at
        return self._admin_token

    # -- addresses ---------------------------------------------------------------------------

    @property
    def kafka_bootstrap(self) -> str:
        return f"{HOST}:{self.ports.kafka}"

    @property
    def mongodb_uri(self) -> str:
        tls = f"/?tls=true&tlsCAFile={self.ca}" if self.ca else ""
        return f"mongodb://{HOST}:{self.ports.mongodb}{tls}"

    def grpc_address(self, service: str) -> str:
        port_field = SERVICES[service].grpc_port
        if port_field is None:
            raise ValueError(f"{service} has no gRPC port")
        return f"{HOST}:{getattr(self.ports, port_field)}"

    def http_url(self, service: str) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{HOST}:{getattr(self.ports, SERVICES[service].http_port)}"

    def log_path(self, component: str) -> Path:
        return self.workdir / "logs" / f"{component}.log"

    def env_for(self, service: str) -> dict[str, str]:
        """The environment the stack gives ``service`` (on top of its own process environment)."""
        spec = SERVICES[service]
        prefix = service.upper()
        env = {
            "MLOPS_KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "MLOPS_MONGODB_URI": self.mongodb_uri,
            "MLOPS_MONGODB_DATABASE": "mlops",
            "MLOPS_TOPIC_PREFIX": self.topic_prefix,
            "MLOPS_AUTH_PUBLIC_KEYS": self.keys.public_keys,
            "MLOPS_ARTIFACT_SIGNING_KEY": self.artifact_signing_key,
            "MLOPS_REGISTRY_ADDRESS": self.grpc_address("registry"),
            "MLOPS_DATASETS_ADDRESS": self.grpc_address("ingest"),
            "MLOPS_LOG_FORMAT": "json",
            f"{prefix}_HOST": HOST,
            f"{prefix}_HTTP_PORT": str(getattr(self.ports, spec.http_port)),
        }
        if spec.grpc_port is not None:
            env[f"{prefix}_GRPC_PORT"] = str(getattr(self.ports, spec.grpc_port))
        env.update(self._tls_env)
        if service == "registry":
            env["REGISTRY_SIGNING_KEY"] = self.keys.issuer.private_pem()
        elif service != "console":
            env["MLOPS_SERVICE_KEY"] = self.keys.service.private_pem()
        if service == "registry":
            env["REGISTRY_ARTIFACT_KEYS"] = artifact_keys(self.workdir)
        if service == "ingest":
            env["INGEST_PSEUDONYMIZATION_KEY"] = self.pseudonymization_key
        if service == "trainer":
            env["TRAINER_SERVING_ADDRESS"] = self.grpc_address("serving")
        if service == "serving":
            # One process: the stack's six services already share this machine's cores, so
            # more workers would compete with them (a SERVING_WORKERS in the stack's env wins).
            env.setdefault("SERVING_WORKERS", "1")
        if service == "console":
            # It acts with each person's own token: no database, no key that could sign one
            # (neither the registry's nor the service key), nothing to verify tokens with.
            for held in (
                "MLOPS_AUTH_PUBLIC_KEYS",
                "MLOPS_ARTIFACT_SIGNING_KEY",
                "MLOPS_MONGODB_URI",
                "MLOPS_MONGODB_DATABASE",
            ):
                del env[held]
            env["CONSOLE_MONITOR_URLS"] = json.dumps([self.http_url("monitor")])
            env["CONSOLE_INGEST_URL"] = self.http_url("ingest")
            env["CONSOLE_SESSION_KEY"] = persistent_key(self.workdir / "console-session.key")
        env.update(self._extra_env)
        return env

    @functools.cached_property
    def pseudonymization_key(self) -> str:
        """Ingest's key for private fields, kept in the workdir so pseudonyms stay stable."""
        return persistent_key(self.workdir / "pseudonymization.key")

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        """Start the broker and database, create the topics, then the services in dependency
        order, each tier once the one before is healthy. On any failure everything started
        is stopped again and :class:`StackError` says which component failed and why."""
        deadline = time.monotonic() + timeout
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.tls:
            files = issue_tls(self.workdir)
            self.ca, self._tls_env = files.ca.resolve(), tls_env(files)
            self._tls_files = (files.certificate, files.key)
        try:
            self._start_kafka(deadline)
            self._start_mongodb(deadline)
            for tier in self._tiers():
                for service in tier:
                    self._spawn(service)
                self._wait_healthy(tier, deadline)
        except BaseException:
            self.stop()
            raise
        self.started_at = datetime.now(UTC)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every service at once, SIGKILL what is left after ``grace``; then the
        database and the broker. Safe to call twice."""
        services = [p for name, p in self.processes.items() if name not in (*INFRA, BROKER_STORE)]
        for process in services:
            if process.alive():
                process.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in services:
            process.stop(timeout=max(0.1, deadline - time.monotonic()))
        for name in ("mongodb", "kafka", BROKER_STORE):
            if name in self.processes:
                self.processes[name].stop(timeout=grace)
        self.processes.clear()

    def kill(self, component: str) -> None:
        """SIGKILL one component (a service, ``kafka``, ``mongodb`` or :data:`BROKER_STORE`),
        for fault tests."""
        self.processes[component].kill()

    def restart(self, component: str, timeout: float = 60) -> None:
        """Stop ``component`` if it runs, start it again on the same ports, and wait until
        it is healthy. Restarting ``kafka`` on memory storage re-creates the topics, restarts
        :data:`RESTARTED_WITH_BROKER` and adds a note that the records it held were lost; the
        other services' consumers find their logs moved behind them and resume from the new
        ones by themselves. A ``persistent_broker`` comes back with its records and offsets,
        and every consumer resumes where it committed."""
        deadline = time.monotonic() + timeout
        if component in self.processes:
            self.processes.pop(component).stop()
        if component == "kafka" and self.persistent_broker:
            self._start_kafka(deadline)
        elif component == BROKER_STORE and self.persistent_broker:
            self._start_store(deadline)
        elif component == "kafka":
            # Stopped before the new broker is up: an old monitor would write its lost
            # state into the new broker's fresh topics, and its successor trip on it.
            restarted = [s for s in RESTARTED_WITH_BROKER if s in self.processes]
            for service in restarted:
                self.processes.pop(service).stop()
            self._start_kafka(deadline)
            for service in restarted:
                self._spawn(service)
            self._wait_healthy(restarted, deadline)
            also = f" Restarted with it: {', '.join(restarted)}." if restarted else ""
            self.notes.append(f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC: {RECORDS_LOST}{also}")
        elif component == "mongodb":
            self._start_mongodb(deadline)
        elif component in self.services:
            self._spawn(component)
            self._wait_healthy([component], deadline)
        else:
            raise ValueError(f"{component!r} is not part of this stack")

    def health(self, timeout: float = 1.0) -> list[Health]:
        return [check_component(c, self.ports, timeout=timeout, ca=self.ca) for c in (*INFRA, *self.services)]

    def state(self, supervisor_pid: int | None = None) -> StackState:
        pid = supervisor_pid if supervisor_pid is not None else os.getpid()
        return StackState(
            pid=pid,
            ports=self.ports,
            pids={name: p.pid for name, p in self.processes.items()},
            services=list(self.services),
            token=self.admin_token,
            signing_key=self.keys.issuer.private_pem(),
            public_keys=self.keys.public_keys,
            topic_prefix=self.topic_prefix,
            started_at=(self.started_at or datetime.now(UTC)).isoformat(),
            workdir=str(self.workdir.resolve()),
            pid_started=process_started(pid),
            notes=list(self.notes),
            ca=str(self.ca or ""),
        )

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------------------

    def _tiers(self) -> Iterator[list[str]]:
        started: set[str] = set()
        pending = list(self.services)
        while pending:
            tier = [s for s in pending if all(d in started or d not in pending for d in SERVICES[s].after)]
            if not tier:
                raise StackError(f"dependency cycle among {pending}")
            yield tier
            started.update(tier)
            pending = [s for s in pending if s not in tier]

    def _start_kafka(self, deadline: float) -> None:
        store = None
        if self._store_port is not None:
            if BROKER_STORE not in self.processes:
                self._start_store(deadline)
            store = f"http://{HOST}:{self._store_port}"
        try:
            self.processes["kafka"] = start_kafka(
                self.ports.kafka, log_path=self.log_path("kafka"), timeout=_left(deadline), store=store
            )
            asyncio.run(ensure_topics(self.kafka_bootstrap, self.topics.all()))
        except (RuntimeError, TimeoutError, OSError) as exc:
            raise StackError(f"kafka failed to start on port {self.ports.kafka}: {exc}") from exc

    def _start_store(self, deadline: float) -> None:
        assert self._store_port is not None
        try:
            self.processes[BROKER_STORE] = start_object_store(
                self._store_port,
                self.workdir / BROKER_STORE,
                log_path=self.log_path(BROKER_STORE),
                timeout=_left(deadline),
            )
        except (RuntimeError, TimeoutError, OSError) as exc:
            raise StackError(f"the broker's store failed to start on port {self._store_port}: {exc}") from exc

    def _start_mongodb(self, deadline: float) -> None:
        try:
            self.processes["mongodb"] = start_mongo(
                self.ports.mongodb,
                self.workdir / "mongodb",
                sync_on_commit=self._mongo_sync_on_commit,
                log_path=self.log_path("mongodb"),
                timeout=_left(deadline),
                tls=self._tls_files,
            )
        except (RuntimeError, TimeoutError, OSError) as exc:
            raise StackError(f"mongodb failed to start on port {self.ports.mongodb}: {exc}") from exc

    def _spawn(self, service: str) -> None:
        env = {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **os.environ, **self.env_for(service)}
        # Each service runs in its own directory under the stack's, so whatever a library
        # writes relative to the working directory (faust's table data) stays there.
        rundir = self.workdir / "run" / service
        rundir.mkdir(parents=True, exist_ok=True)
        process = start_process(
            service,
            [sys.executable, "-m", f"services.{service}"],
            env=env,
            log_path=self.log_path(service),
            cwd=rundir,
        )
        spec = SERVICES[service]
        process.ports["http"] = getattr(self.ports, spec.http_port)
        if spec.grpc_port is not None:
            process.ports["grpc"] = getattr(self.ports, spec.grpc_port)
        self.processes[service] = process

    def _wait_healthy(self, services: Sequence[str], deadline: float) -> None:
        pending = list(services)
        last: dict[str, str] = {}
        while pending:
            for service in list(pending):
                process = self.processes[service]
                if not process.alive():
                    raise StackError(
                        f"{service} exited with code {process.popen.returncode} during start-up; "
                        f"log {process.log_path}:\n{process.log_tail()}"
                    )
                health = check_component(service, self.ports, timeout=0.5, ca=self.ca)
                last[service] = health.detail
                if health.healthy:
                    pending.remove(service)
            if not pending:
                return
            if time.monotonic() > deadline:
                service = pending[0]
                process = self.processes[service]
                raise StackError(
                    f"{service} not healthy in time (last check: {last.get(service)}); "
                    f"log {process.log_path}:\n{process.log_tail()}"
                )
            time.sleep(0.1)


def _left(deadline: float) -> float:
    return max(1.0, deadline - time.monotonic())
