"""The federation service: one SuperLink, one spec, runs on demand, versions in the registry.

It starts Flower's SuperLink (sites connect to it), makes sure the registry knows the
model and that its stored spec says ``training: federated``, and for every trigger (the
operator's start, or a train request from the platform, a drift's retrain included):

1. takes the production version as the starting model when it is one of the spec's
   shape (downloaded over REST, digest checked, loaded with skops' trusted-type check);
2. submits a run (``flwr run``) whose ServerApp works in a directory of its own;
3. waits for it to finish, bounded by the spec's timeouts;
4. registers the global model, its gates, lineage, privacy budget, with the registry's
   REST API; the registry's promotion policy does the rest, serving loads it, the
   monitor watches it.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import skops.io as sio

from services.federation import protocol, registration, runtime
from services.federation.model import Arrays, parameters_of
from services.federation.registry import RegistryClient, RegistryError
from services.federation.settings import FederationSettings
from services.federation.spec import FederationSpec
from services.federation.status import (
    FAILED,
    FINISHED,
    RESULT_FILE,
    RunInputs,
    RunStatus,
    read_arrays,
    read_status,
    write_json_atomically,
)

TRUSTED_TYPE_PREFIXES = ("sklearn.", "numpy.", "scipy.sparse.")
"""What a production artifact may contain, as serving allows (services/common/artifacts.py)."""
OUTCOME_FILE = "outcome.json"
POLL_SECONDS = 1.0


class FederationError(Exception):
    """The service cannot do what it was asked; the message says why."""


@dataclass
class Outcome:
    """What one run came to."""

    run_dir: Path
    status: RunStatus | None
    version: dict[str, Any] | None = None
    error: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def registered(self) -> bool:
        return self.version is not None

    def to_dict(self) -> dict[str, Any]:
        version = self.version or {}
        return {
            "run_dir": str(self.run_dir),
            "state": self.status.state if self.status else FAILED,
            "error": self.error,
            "notes": self.notes,
            "version": version.get("version"),
            "status": version.get("status"),
            "gates_passed": version.get("gates_passed"),
            "aliases": version.get("aliases", []),
        }


def load_trusted(data: bytes) -> Any:
    """A skops artifact, refusing any type outside scikit-learn, NumPy and SciPy's sparse."""
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # whatever skops makes of bytes that are not its format
        raise FederationError(f"the production artifact is not a skops file: {exc}") from None
    refused = [name for name in untrusted if not name.startswith(TRUSTED_TYPE_PREFIXES)]
    if refused:
        raise FederationError(f"the production artifact holds types outside the trusted list: {refused}")
    return sio.loads(data, trusted=untrusted)


class FederationService:
    def __init__(
        self,
        settings: FederationSettings,
        spec: FederationSpec,
        flower: runtime.Flower,
        registry: RegistryClient,
        *,
        clientapp: str = runtime.CLIENTAPP,
    ):
        self.settings = settings
        self.spec = spec
        self.flower = flower
        self.registry = registry
        self.workdir = settings.workdir.resolve()
        self.flwr_home = self.workdir / "flower"
        self.app = self.workdir / "app"
        self._clientapp = clientapp
        self._superlink: runtime.Child | None = None

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def _certificates(self) -> runtime.Certificates | None:
        s = self.settings
        if s.ssl_certfile and s.ssl_keyfile and s.ssl_ca_certfile:
            return runtime.Certificates(
                ca=s.ssl_ca_certfile.resolve(),
                certificate=s.ssl_certfile.resolve(),
                key=s.ssl_keyfile.resolve(),
            )
        return None

    def start(self) -> None:
        """Start the SuperLink and tell the registry about the model."""
        certificates = self._certificates()
        self.workdir.mkdir(parents=True, exist_ok=True)
        runtime.write_connection(self.flwr_home, self.address, certificates.ca if certificates else None)
        runtime.write_app(self.app, clientapp=self._clientapp)
        self._superlink = runtime.Child(
            "superlink",
            self.flower.superlink(self.settings.host, self.settings.port, certificates),
            self.flower.env(self.flwr_home),
            self.workdir / "superlink.log",
        )
        runtime.wait_for_port(self.settings.host, self.settings.port, 60, self._superlink)
        self.registry.ensure_model(
            self.spec.model_name, f"Trained by federated learning ({self.spec.strategy.name})."
        )
        self._store_spec()

    def stop(self) -> None:
        if self._superlink is not None:
            self._superlink.stop()
            self._superlink = None

    def _store_spec(self) -> None:
        """Store the platform spec unless the latest stored one is already this federation's."""
        wanted = registration.platform_spec(self.spec)
        stored = self.registry.latest_spec(self.spec.model_name)
        if stored is None or any(stored.get(k) != v for k, v in wanted.items()):
            self.registry.put_spec(wanted)

    def starting_point(self) -> tuple[int, Arrays | None, str]:
        """(production version, its parameters when the spec can start from them, a note)."""
        production = self.registry.production(self.spec.model_name)
        if production is None:
            return 0, None, "no production version: starting from a fresh model"
        version = int(production["version"])
        artifact_format = production.get("artifact", {}).get("format", "")
        if artifact_format != "skops":
            return version, None, f"production v{version} is a {artifact_format} artifact: starting fresh"
        estimator = load_trusted(self.registry.download(self.spec.model_name, production))
        arch = protocol.architecture(self.spec)
        try:
            arrays = parameters_of(estimator)
        except AttributeError:
            arrays = []
        same_classes = [str(c) for c in getattr(estimator, "classes_", [])] == sorted(self.spec.classes)
        if [a.shape for a in arrays] == arch.shapes() and same_classes:
            return version, arrays, f"starting from production v{version}"
        return (
            version,
            None,
            f"production v{version} is not a {self.spec.model.family} of this shape: starting fresh",
        )

    def run(self, trigger: registration.Trigger) -> Outcome:
        """One federated run for ``trigger``, registered when it finishes."""
        if self._superlink is None or not self._superlink.alive():
            raise FederationError("the SuperLink is not running")
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        run_dir = (
            self.workdir / "runs" / f"{stamp}-{re.sub(r'[^A-Za-z0-9._-]', '_', trigger.request_id)[:80]}"
        )
        try:
            parent, initial, note = self.starting_point()
        except (RegistryError, FederationError, ValueError) as exc:
            return self._finish(Outcome(run_dir, None, error=f"production version unusable: {exc}"))
        RunInputs(self.spec.to_json(), initial, parent if initial is not None else 0).write(run_dir)
        outcome = Outcome(run_dir, None, notes=[note])
        try:
            run_id = runtime.submit(self.flower, self.flwr_home, self.app, run_dir)
            outcome.status = self._wait(run_id, run_dir)
        except (runtime.FlowerError, FederationError) as exc:
            outcome.status = read_status(run_dir)
            outcome.error = str(exc)
            return self._finish(outcome)
        if outcome.status.state != FINISHED:
            outcome.error = outcome.status.error or f"the run ended {outcome.status.state}"
            return self._finish(outcome)
        try:
            outcome.version = self._register(outcome.status, run_dir, parent, trigger, run_id)
        except RegistryError as exc:
            outcome.error = f"registration refused: {exc}"
        return self._finish(outcome)

    def _finish(self, outcome: Outcome) -> Outcome:
        outcome.run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomically(outcome.run_dir / OUTCOME_FILE, outcome.to_dict())
        return outcome

    def _wait(self, run_id: int, run_dir: Path) -> RunStatus:
        """Until the ServerApp says finished or failed, or Flower says the run ended."""
        strategy = self.spec.strategy
        # Every exchange is bounded by the round timeout: a query, a first evaluation, four
        # SecAgg+ stages and an evaluation per round at most.
        budget = strategy.connect_timeout_seconds + strategy.round_timeout_seconds * (2 + 5 * strategy.rounds)
        deadline = time.monotonic() + budget + 120
        checked = 0.0
        while time.monotonic() < deadline:
            status = read_status(run_dir)
            if status is not None and status.state in (FINISHED, FAILED):
                return status
            if time.monotonic() - checked > 10:
                checked = time.monotonic()
                state = runtime.run_state(self.flower, self.flwr_home, run_id)
                if state.startswith("finished"):
                    status = read_status(run_dir)
                    if status is not None and status.state in (FINISHED, FAILED):
                        return status
                    raise FederationError(
                        f"Flower ended the run {state} before the ServerApp reported (see superlink.log)"
                    )
            time.sleep(POLL_SECONDS)
        raise FederationError(f"the run did not finish within {budget + 120:.0f}s")

    def _register(
        self, status: RunStatus, run_dir: Path, parent: int, trigger: registration.Trigger, run_id: int
    ) -> dict[str, Any]:
        arrays = read_arrays(run_dir / RESULT_FILE)
        data, estimator = registration.artifact(self.spec, arrays)
        metadata = registration.version_metadata(
            spec=self.spec,
            status=status,
            data=data,
            classes=[str(c) for c in estimator.classes_],
            parent_version=parent,
            trigger=trigger,
            code_version=self.settings.code_version,
            run_id=run_id,
        )
        (run_dir / "version-metadata.json").write_text(json.dumps(metadata, indent=2, sort_keys=True))
        return self.registry.create_version(self.spec.model_name, metadata, data)
