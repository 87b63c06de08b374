"""What ``mlops up`` leaves for every other command: the stack's ports and its state file
(``<workdir>/stack.json``: the supervisor's pid, the stack's keys and CA), and whether the
stack it describes still runs."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import jwt

from services.common.auth import Scope, SigningKey, TokenIssuer
from services.common.localstack import free_port

STATE_FILE = "stack.json"
LOCAL_ADMIN = "local-admin"
"""The subject of the local stack's admin token, as the audit log shows it."""
ADMIN_TOKEN_TTL_SECONDS = 3600
"""The local admin token's lifetime: it expires like every token, and the CLI mints a new
one from the stack's key when it is close to expiring."""
RENEW_BEFORE_SECONDS = 300


@dataclass(frozen=True)
class StackPorts:
    """Where each component of the stack listens on loopback."""

    kafka: int
    mongodb: int
    registry_grpc: int
    registry_http: int
    serving_grpc: int
    serving_http: int
    ingest_grpc: int
    ingest_http: int
    monitor_http: int
    trainer_http: int
    console_http: int

    @classmethod
    def defaults(cls) -> StackPorts:
        """The documented default ports (as Triton and KServe use for serving)."""
        return cls(
            kafka=9092,
            mongodb=27017,
            registry_grpc=50051,
            registry_http=8080,
            serving_grpc=8001,
            serving_http=8000,
            ingest_grpc=50052,
            ingest_http=8081,
            monitor_http=8082,
            trainer_http=8083,
            console_http=8090,
        )

    @classmethod
    def free(cls) -> StackPorts:
        """Ports free on loopback right now, all distinct (for tests and ``mlops up --free-ports``)."""
        chosen: set[int] = set()
        while len(chosen) < len(dataclasses.fields(cls)):
            chosen.add(free_port())
        return cls(*sorted(chosen))

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def replace(self, overrides: Mapping[str, int]) -> StackPorts:
        """These ports with some replaced by name (``{"serving_grpc": 9001}``)."""
        unknown = set(overrides) - set(self.as_dict())
        if unknown:
            raise ValueError(f"unknown port name(s) {sorted(unknown)}; known: {', '.join(self.as_dict())}")
        return dataclasses.replace(self, **overrides)


@dataclass(frozen=True)
class StackState:
    """What ``mlops up`` writes to ``<workdir>/stack.json`` (mode 0600: it holds the stack's
    token-signing key)."""

    pid: int
    """The supervising ``mlops up`` process."""
    ports: StackPorts
    pids: dict[str, int]
    services: list[str]
    token: str
    """An admin token for this stack, minted when it started (see :meth:`admin_token`)."""
    signing_key: str
    """The stack's token-signing key (PEM): the registry's, and the CLI's for admin tokens."""
    public_keys: str
    """The JWKS every service of the stack verifies tokens with."""
    topic_prefix: str
    started_at: str
    workdir: str
    pid_started: int = 0
    """When the supervisor started (clock ticks since boot), so a pid the system has since
    given to another process is not mistaken for the stack (``mlops down`` signals it)."""
    notes: list[str] = dataclasses.field(default_factory=list)
    """What an operator should know about this stack's history (records lost in a broker restart)."""
    ca: str = ""
    """The CA certificate every service's TLS certificate chains to (empty: the stack is plaintext)."""

    def save(self, path: Path) -> None:
        """Write atomically, readable by the owner only."""
        payload = dataclasses.asdict(self)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> StackState:
        data = json.loads(path.read_text())
        data["ports"] = StackPorts(**data["ports"])
        return cls(**data)

    def supervisor_alive(self) -> bool:
        return pid_alive(self.pid) and process_started(self.pid) == self.pid_started

    def admin_token(self, now: float | None = None) -> str:
        """An admin token for this stack: the saved one while it has more than a few minutes
        left, else a new one minted with the stack's key (nothing is written back: minting
        is cheap, and the file belongs to ``mlops up``)."""
        moment = time.time() if now is None else now
        try:
            expires = float(jwt.decode(self.token, options={"verify_signature": False})["exp"])
        except (jwt.InvalidTokenError, KeyError, TypeError, ValueError):
            expires = 0.0
        if expires - moment > RENEW_BEFORE_SECONDS:
            return self.token
        return self.mint(LOCAL_ADMIN, [Scope.ADMIN], clock=lambda: moment)

    def mint(
        self,
        subject: str,
        scopes: Sequence[Scope],
        ttl_seconds: float = ADMIN_TOKEN_TTL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> str:
        """A token for ``subject`` (in the default team), signed with the stack's key."""
        issuer = TokenIssuer(SigningKey.from_pem(self.signing_key), clock=clock)
        return issuer.mint(subject, scopes, ttl_seconds=ttl_seconds).token


def process_started(pid: int) -> int:
    """When ``pid`` started, in clock ticks since boot (0 if it cannot be read)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[-1].split()[19])


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def running_stack(workdir: Path) -> StackState | None:
    """The stack ``mlops up`` is running from ``workdir``, if one is."""
    path = workdir / STATE_FILE
    try:
        state = StackState.load(path)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return state if state.supervisor_alive() else None
