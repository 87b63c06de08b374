"""``mlops demo --federated``: three sites that never share a row train one model together.

The scenario, on this machine:

1. three sites hold rows of one synthetic population, skewed differently (non-IID): each
   sees two of the six features vary and the others barely, so no site alone can learn
   what the others' features do; a pooled holdout draws from all three;
2. the federation service (Flower's SuperLink, from ``.venv-federation``) and three site
   agents (Flower SuperNodes) start as processes of their own, over TLS with a throwaway CA;
3. the rounds run under SecAgg+ (the server only learns the sum of the masked updates)
   with site-level differential privacy (updates clipped at the sites, Gaussian noise on
   the aggregate, the budget accounted by dp-accounting's RDP accountant);
4. the global model is registered with its gates, lineage (sites, rounds, strategy,
   privacy budget) and promoted by the registry's policy; serving loads it;
5. the demo scores the served model on the pooled holdout through gRPC, trains each
   site's model alone (same family, same epochs in total) and scores it on the same
   holdout, and writes ``.mlops/federated-report.json``.

It exits 0 only if the served global model is at least as accurate as the best site alone.
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import typer
import yaml
from numpy.typing import NDArray
from rich.console import Console
from rich.table import Table

from services.cli.federation import federation_env, federation_python
from services.cli.stack import LocalStack, StackError
from services.cli.stack_state import StackPorts, running_stack
from services.common.auth import Scope, SigningKey, TokenIssuer, bearer_metadata
from services.common.localstack import port_open
from services.common.proto.inference import grpc_service_pb2 as oip
from services.common.proto.inference import grpc_service_pb2_grpc as oip_grpc
from services.federation import protocol, runtime
from services.federation.model import LocalTraining, score, train_locally
from services.federation.site.data import load
from services.federation.spec import FederationSpec

MODEL_NAME = "federated-demo"
FEATURES = tuple(f"x{i}" for i in range(6))
WEIGHTS = np.array([1.5, -1.0, 1.0, -1.5, 1.0, 1.0])
"""The population's true decision rule: positive when ``WEIGHTS @ x + noise > 0``."""
REPORT_FILE = "federated-report.json"
DEMO_TOKEN_TTL_SECONDS = 2 * 3600
"""The demo's tokens outlive its longest run (``FederatedDemoConfig.timeout``) with room to spare."""


class FederatedDemoFailed(Exception):
    """The demo could not run to its end; the message says where it stopped."""


@dataclass(frozen=True)
class FederatedDemoConfig:
    sites: int = 3
    rows_per_site: int = 800
    holdout_per_site: int = 400
    rounds: int = 4
    local_epochs: int = 2
    learning_rate: float = 0.1
    noise_multiplier: float = 0.45
    clipping_norm: float = 1.0
    delta: float = 1e-5
    seed: int = 7
    timeout: float = 900.0
    """Give up if the federation has not registered a version after this many seconds."""


@dataclass(frozen=True)
class PlatformEndpoints:
    registry_url: str
    serving_address: str
    kafka_bootstrap: str
    topic_prefix: str
    signing_key: str
    """The stack's token-signing key (PEM): the demo's tokens are signed as the registry would."""

    def token(self, subject: str, *scopes: Scope) -> str:
        """A token for ``subject`` with ``scopes``, valid as long as the demo may run."""
        issuer = TokenIssuer(SigningKey.from_pem(self.signing_key))
        return issuer.mint(subject, scopes, ttl_seconds=DEMO_TOKEN_TTL_SECONDS).token


@dataclass
class FederatedReport:
    sites: list[str] = field(default_factory=list)
    rounds: int = 0
    strategy: str = ""
    secure_aggregation: str = ""
    global_accuracy: float = float("nan")
    """The served global model's accuracy on the pooled holdout (answers from serving)."""
    local_accuracies: dict[str, float] = field(default_factory=dict)
    """Each site's model trained alone, on the same pooled holdout."""
    best_local_accuracy: float = float("nan")
    margin_over_best_local: float = float("nan")
    epsilon: float = float("nan")
    delta: float = float("nan")
    version: int = 0
    in_production: bool = False
    lineage: dict[str, Any] = field(default_factory=dict)
    gates: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    passed: bool = False
    verdict: str = ""

    def to_json(self) -> str:
        def clean(value: object) -> object:
            return None if isinstance(value, float) and not math.isfinite(value) else value

        return json.dumps({k: clean(v) for k, v in asdict(self).items()}, indent=2)


def site_rows(site: int, count: int, rng: np.random.Generator) -> tuple[NDArray[np.float64], NDArray[Any]]:
    """``count`` rows as site ``site`` sees them: its two features spread, the others nearly fixed."""
    spread = np.full(len(FEATURES), 0.05)
    spread[2 * site : 2 * site + 2] = 1.5
    X = rng.normal(size=(count, len(FEATURES))) * spread
    y = np.where(X @ WEIGHTS + rng.normal(0.0, 0.3, count) > 0, "1", "0")
    return X, y


def write_csv(path: Path, X: NDArray[np.float64], y: NDArray[Any]) -> None:
    lines = [",".join((*FEATURES, "label"))]
    lines += [",".join([*(f"{v:.6f}" for v in row), str(label)]) for row, label in zip(X, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")


def demo_spec(config: FederatedDemoConfig) -> dict[str, Any]:
    return {
        "model_name": MODEL_NAME,
        "dataset": "federated-demo-sites",
        "features": list(FEATURES),
        "target": "label",
        "classes": ["0", "1"],
        "seed": config.seed,
        "model": {
            "family": "logistic_regression",
            "learning_rate": config.learning_rate,
            "local_epochs": config.local_epochs,
            "batch_size": 32,
        },
        "strategy": {
            "name": "fedprox",
            "proximal_mu": 0.01,
            "rounds": config.rounds,
            "min_sites": 2,
            "expected_sites": config.sites,
            "round_timeout_seconds": 90,
            "connect_timeout_seconds": 120,
        },
        "secure_aggregation": {"enabled": True},
        "privacy": {
            "enabled": True,
            "noise_multiplier": config.noise_multiplier,
            "clipping_norm": config.clipping_norm,
            "delta": config.delta,
        },
        "gates": {"min_metric": 0.7, "max_regression": 0.02},
    }


class FederatedDemo:
    def __init__(
        self, endpoints: PlatformEndpoints, workdir: Path, config: FederatedDemoConfig, console: Console
    ):
        self.endpoints = endpoints
        self.workdir = workdir
        self.config = config
        self.console = console
        self.report = FederatedReport()
        self.python = federation_python()
        self.flower = runtime.Flower(self.python.parent)

    def _say(self, message: str) -> None:
        self.console.log(message)

    def run(self) -> FederatedReport:
        started = time.monotonic()
        config = self.config
        self.workdir.mkdir(parents=True, exist_ok=True)
        spec_data = demo_spec(config)
        spec = FederationSpec.parse(spec_data)
        spec_path = self.workdir / "spec.yaml"
        spec_path.write_text(yaml.safe_dump(spec_data, sort_keys=False))
        rng = np.random.default_rng(config.seed)
        holdout_X, holdout_y = [], []
        names = [f"site-{chr(ord('a') + i)}" for i in range(config.sites)]
        for i, name in enumerate(names):
            write_csv(self.workdir / f"{name}.csv", *site_rows(i, config.rows_per_site, rng))
            X, y = site_rows(i, config.holdout_per_site, rng)
            holdout_X.append(X)
            holdout_y.append(y)
        holdout = (np.vstack(holdout_X), np.concatenate(holdout_y))
        self._say(
            f"{config.sites} sites, {config.rows_per_site} rows each (non-IID), pooled holdout of {len(holdout[1])}"
        )

        certificates = self.workdir / "certs"
        made = runtime_call(self.python, ["certificates", "--dir", str(certificates)])
        if made.returncode != 0:
            raise FederatedDemoFailed(f"certificates: {made.stderr[-500:]}")
        port = runtime.free_port()
        children: list[runtime.Child] = []
        try:
            for name in names:
                command = [str(self.python), "-m", "services.federation.site", "run", "--name", name]
                command += ["--server", f"127.0.0.1:{port}", "--data", str(self.workdir / f"{name}.csv")]
                command += ["--root-certificates", str(certificates / "ca.pem")]
                command += ["--clientapp-port", str(runtime.free_port())]
                command += ["--workdir", str(self.workdir / "agents" / name)]
                children.append(runtime.Child(name, command, self.flower.env(), self.workdir / f"{name}.log"))
            self._say(f"site agents started: {', '.join(names)}")
            token = self.endpoints.token("federation", Scope.READ, Scope.WRITE)
            env = federation_env(
                workdir=self.workdir / "service",
                port=port,
                registry_url=self.endpoints.registry_url,
                token=token,
                kafka=self.endpoints.kafka_bootstrap,
                topic_prefix=self.endpoints.topic_prefix,
                certificates=certificates,
            )
            command = [
                str(self.python),
                "-m",
                "services.federation",
                "serve",
                "--spec",
                str(spec_path),
                "--once",
            ]
            service = runtime.Child("federation", command, env, self.workdir / "federation.log")
            children.append(service)
            self._say(f"federation service started on 127.0.0.1:{port}: {config.rounds} rounds, SecAgg+, DP")
            try:
                service.process.wait(timeout=config.timeout)
            except Exception:
                raise FederatedDemoFailed(
                    f"the federation did not finish within {config.timeout:.0f}s"
                ) from None
            outcome = _last_json(service.log.read_text(errors="replace"))
            if service.process.returncode != 0 or not outcome.get("version"):
                why = outcome.get("error") or service.tail()
                raise FederatedDemoFailed(
                    f"the federation registered nothing: {why} (logs in {self.workdir})"
                )
        finally:
            runtime.stop_all(children)
        version = int(outcome["version"])
        self._say(f"version {version} registered ({outcome.get('status')}), aliases {outcome.get('aliases')}")
        self._read_version(version, spec)
        self.report.global_accuracy = round(self._served_accuracy(version, *holdout), 4)
        self._say(f"served v{version}: accuracy {self.report.global_accuracy:.4f} on the pooled holdout")
        self._local_accuracies(spec, names, *holdout)
        self.report.seconds = round(time.monotonic() - started, 1)
        self._judge()
        return self.report

    def _read_version(self, version: int, spec: FederationSpec) -> None:
        token = self.endpoints.token("demo", Scope.READ)
        response = httpx.get(
            f"{self.endpoints.registry_url}/v1/models/{MODEL_NAME}/versions/{version}",
            headers={"authorization": f"Bearer {token}"},
            timeout=10,
        )
        response.raise_for_status()
        record = response.json()
        params, metrics = record["params"], record["metrics"]
        report = self.report
        report.version = version
        report.in_production = "production" in record.get("aliases", [])
        report.sites = json.loads(params["federation.sites"])
        report.rounds = int(params["federation.rounds_applied"])
        report.strategy = params["federation.strategy"]
        report.secure_aggregation = params["federation.secure_aggregation"]
        report.epsilon = round(float(metrics["privacy.epsilon"]), 4)
        report.delta = float(metrics["privacy.delta"])
        report.gates = record.get("gates", [])
        lineage = record["lineage"]
        report.lineage = {
            "dataset": lineage["data"]["window"]["dataset"],
            "rows": lineage["data"].get("row_count", 0),
            "trigger": lineage.get("trigger"),
            "train_request_id": lineage.get("train_request_id"),
            "parent_version": lineage.get("parent_version", 0),
            "sites": report.sites,
            "rounds": report.rounds,
            "strategy": report.strategy,
            "privacy": {k: v for k, v in params.items() if k.startswith("privacy.")},
        }

    def _served_accuracy(self, version: int, X: NDArray[np.float64], y: NDArray[Any]) -> float:
        metadata = bearer_metadata(self.endpoints.token("demo", Scope.PREDICT))
        with grpc.insecure_channel(self.endpoints.serving_address) as channel:
            stub = oip_grpc.GRPCInferenceServiceStub(channel)
            deadline = time.monotonic() + 60
            while True:
                try:
                    ready = stub.ModelReady(
                        oip.ModelReadyRequest(name=MODEL_NAME, version=str(version)),
                        metadata=metadata,
                        timeout=5,
                    )
                    if ready.ready:
                        break
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise FederatedDemoFailed(f"serving did not load version {version} within 60s")
                time.sleep(0.2)
            labels: list[str] = []
            for start in range(0, len(X), 256):
                rows = X[start : start + 256]
                request = oip.ModelInferRequest(model_name=MODEL_NAME, model_version=str(version))
                tensor = request.inputs.add(name="features", datatype="FP64", shape=list(rows.shape))
                tensor.contents.fp64_contents.extend(rows.ravel().tolist())
                request.outputs.add(name="label")
                response = stub.ModelInfer(request, metadata=metadata, timeout=10)
                labels += [v.decode() for v in response.outputs[0].contents.bytes_contents]
        return float(np.mean(np.array(labels) == y))

    def _local_accuracies(
        self, spec: FederationSpec, names: list[str], X: NDArray[np.float64], y: NDArray[Any]
    ) -> None:
        """Each site's model alone: its own training rows, the same family and total epochs."""
        arch = protocol.architecture(spec)
        training = protocol.local_training(spec)
        alone = LocalTraining(
            epochs=training.epochs * spec.strategy.rounds,
            learning_rate=training.learning_rate,
            l2=training.l2,
            batch_size=training.batch_size,
        )
        for name in names:
            data = load(
                self.workdir / f"{name}.csv",
                spec.features,
                spec.target,
                spec.classes,
                spec.eval_fraction,
                spec.seed,
            )
            trained = train_locally(
                arch, arch.initial(spec.seed), data.train.X, data.train.y, alone, seed=spec.seed
            )
            self.report.local_accuracies[name] = round(score(arch, trained, X, y).accuracy, 4)
        self.report.best_local_accuracy = max(self.report.local_accuracies.values())
        self.report.margin_over_best_local = round(
            self.report.global_accuracy - self.report.best_local_accuracy, 4
        )

    def _judge(self) -> None:
        report = self.report
        problems = []
        if not report.global_accuracy >= report.best_local_accuracy:
            problems.append(
                f"the global model's {report.global_accuracy} is below the best site alone ({report.best_local_accuracy})"
            )
        if not report.in_production:
            problems.append(f"version {report.version} is not in production (gates: {report.gates})")
        if not math.isfinite(report.epsilon):
            problems.append("no privacy budget recorded")
        report.passed = not problems
        report.verdict = (
            f"the global model beats the best site alone by {report.margin_over_best_local:+.4f} at epsilon "
            f"{report.epsilon:.2f} (delta {report.delta:g})"
            if not problems
            else "; ".join(problems)
        )


def runtime_call(python: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-m", "services.federation", *args], capture_output=True, text=True, check=False
    )


def _last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return {}


def summary_table(report: FederatedReport) -> Table:
    table = Table(title=f"Federated: {report.verdict}", show_header=False)
    rows = [
        ("sites (non-IID)", ", ".join(report.sites)),
        ("rounds, strategy", f"{report.rounds}, {report.strategy}, {report.secure_aggregation}"),
        ("global model (served), pooled holdout", str(report.global_accuracy)),
        *((f"{name} alone, pooled holdout", str(acc)) for name, acc in report.local_accuracies.items()),
        ("margin over the best site alone", f"{report.margin_over_best_local:+.4f}"),
        ("privacy budget", f"epsilon {report.epsilon}, delta {report.delta:g} (site level)"),
        ("registered version", f"v{report.version}{' (production)' if report.in_production else ''}"),
        ("seconds", str(report.seconds)),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def federated_demo(workdir: Path, report_path: Path | None, console: Console) -> None:
    """Run the scenario on the running local stack, or on one of its own; exit 1 unless it passed."""
    config = FederatedDemoConfig()
    report_path = report_path or workdir / REPORT_FILE
    federation_python()  # before any stack starts: without the environment there is no demo
    state = running_stack(workdir)
    with tempfile.TemporaryDirectory(prefix="mlops-federated-") as tmp:
        stack: LocalStack | None = None
        if state is not None:
            endpoints = PlatformEndpoints(
                registry_url=f"http://127.0.0.1:{state.ports.registry_http}",
                serving_address=f"127.0.0.1:{state.ports.serving_grpc}",
                kafka_bootstrap=f"127.0.0.1:{state.ports.kafka}",
                topic_prefix=state.topic_prefix,
                signing_key=state.signing_key,
            )
            console.log(f"using the local stack running since {state.started_at} (pid {state.pid})")
        else:
            defaults = StackPorts.defaults()
            ports = (
                defaults if not any(port_open(p) for p in defaults.as_dict().values()) else StackPorts.free()
            )
            stack = LocalStack(Path(tmp) / "stack", ports, services=("registry", "serving"))
            console.log("starting a local stack for the demo (broker, database, registry, serving)")
            try:
                stack.start(timeout=90)
            except StackError as exc:
                console.print(f"[red]the local stack did not start:[/] {exc}")
                raise typer.Exit(3) from None
            endpoints = PlatformEndpoints(
                registry_url=f"http://127.0.0.1:{ports.registry_http}",
                serving_address=stack.grpc_address("serving"),
                kafka_bootstrap=stack.kafka_bootstrap,
                topic_prefix=stack.topic_prefix,
                signing_key=stack.keys.issuer.private_pem(),
            )
        demo = FederatedDemo(endpoints, (workdir / "federated-demo").resolve(), config, console)
        try:
            report = demo.run()
        except FederatedDemoFailed as exc:
            demo.report.verdict = str(exc)
            report = demo.report
            console.print(f"[red]federated demo failed:[/] {exc}")
        finally:
            if stack is not None:
                stack.stop()
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(report.to_json() + "\n")
    console.print(summary_table(report))
    console.print(f"report written to {report_path}")
    if not report.passed:
        raise typer.Exit(1)
