"""The local stack for real: the embedded broker and database plus whichever services are
installed, started as processes, checked over their health protocols, and stopped with
nothing left behind, both through :class:`LocalStack` and through a real ``mlops up``."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner, Result

from services.cli.__main__ import app
from services.cli.output import ExitCode
from services.cli.stack import (
    INFRA,
    RECORDS_LOST,
    LocalStack,
    StackError,
    available_services,
    check_component,
)
from services.cli.stack_state import StackPorts, StackState, pid_alive
from services.cli.topics import tail_records
from services.common.auth import Scope, bearer_metadata
from services.common.clients.registry import RegistryClient
from services.common.events import Topics, decode
from services.common.flavors.skops import SkopsFlavor
from services.common.localstack import free_port, port_open, start_process
from services.common.proto.inference import grpc_service_pb2 as oip
from services.common.proto.inference import grpc_service_pb2_grpc as oip_grpc
from services.common.proto.mlops.v1 import events_pb2, model_pb2, registry_pb2, registry_pb2_grpc
from tests.helpers.stack import start_up

INSTALLED = available_services()


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc, whatever their process group)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return {p for p in found if pid_alive(p)}


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def mlops(*args: str) -> Result:
    """The CLI in this process: ``status`` and ``down`` only read the state file and signal."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    local = LocalStack(tmp_path_factory.mktemp("stack"), StackPorts.free(), services=INSTALLED)
    local.start(timeout=120)
    try:
        yield local
    finally:
        local.stop()


def topic_names(stack: LocalStack) -> set[str]:
    async def names() -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    return asyncio.run(names())


def test_every_component_is_healthy_and_the_topics_exist(stack: LocalStack) -> None:
    assert set(stack.processes) == {*INFRA, *INSTALLED}
    unhealthy = [h for h in stack.health() if not h.healthy]
    assert not unhealthy
    assert all(stack.log_path(name).exists() for name in stack.processes)
    # Services run inside the stack's directory: nothing is written where the caller stands.
    assert {p.name for p in (stack.workdir / "run").iterdir()} == set(INSTALLED)

    assert set(Topics("mlops").all()) <= topic_names(stack)


def test_the_container_probe_reports_health_by_exit_code(stack: LocalStack) -> None:
    def probe(*args: str) -> int:
        return subprocess.run(
            [sys.executable, "-m", "services.cli.probe", *args], capture_output=True, timeout=30
        ).returncode

    # One of each kind: the checks themselves are what the stack's start-up already uses.
    assert probe("grpc", stack.grpc_address("registry")) == 0
    assert probe("http", f"{stack.http_url('monitor')}/health/ready") == 0
    assert probe("grpc", f"127.0.0.1:{free_port()}") == 1
    assert probe("http", f"http://127.0.0.1:{free_port()}/health/ready") == 1


@pytest.mark.skipif(not INSTALLED, reason="no service package installed yet to kill and restart")
def test_a_killed_service_is_reported_and_comes_back_on_restart(stack: LocalStack) -> None:
    service = INSTALLED[0]
    old_pid = stack.processes[service].pid
    stack.kill(service)
    assert not check_component(service, stack.ports).healthy
    stack.restart(service)
    assert stack.processes[service].pid != old_pid
    assert check_component(service, stack.ports).healthy


@pytest.mark.skipif(not INSTALLED, reason="no service package installed yet to misconfigure")
def test_a_service_that_cannot_start_fails_the_start_with_its_log_and_leaves_nothing(tmp_path: Path) -> None:
    service = INSTALLED[0]
    # A key set that is not one: settings validation must stop the service at start-up.
    local = LocalStack(
        tmp_path, StackPorts.free(), services=[service], env={"MLOPS_AUTH_PUBLIC_KEYS": '{"keys": []}'}
    )
    with pytest.raises(StackError, match=service) as failure:
        local.start(timeout=60)
    assert "auth_public_keys" in str(failure.value).lower()
    assert local.processes == {}
    assert not port_open(local.ports.kafka) and not port_open(local.ports.mongodb)


def test_up_restarts_what_dies_and_status_down_leave_no_process_behind(tmp_path: Path) -> None:
    # One service is enough to prove service processes are supervised and stopped; the
    # module's stack already shows that every service starts and answers its health check.
    service = INSTALLED[0]
    process, state = start_up(tmp_path, (service,))
    try:
        assert set(state.pids.values()) <= descendants(process.pid)
        assert state.services == [service]

        os.kill(state.pids[service], signal.SIGKILL)

        def restarted() -> bool:
            return StackState.load(tmp_path / "stack.json").pids[service] != state.pids[service]

        wait_for(restarted, 90, f"mlops up to restart {service}")
        children = descendants(process.pid)
        assert set(StackState.load(tmp_path / "stack.json").pids.values()) <= children

        status = mlops("status", "--workdir", str(tmp_path), "--json")
        assert status.exit_code == 0, status.output
        report = json.loads(status.stdout)
        assert report["healthy"] is True
        assert [c["name"] for c in report["components"]] == [*INFRA, service]

        down = mlops("down", "--workdir", str(tmp_path), "--json")
        assert down.exit_code == 0, down.output
        assert json.loads(down.stdout) == {"stopped": True, "pid": process.pid, "left_running": []}
        assert process.wait(timeout=30) == 0
        assert [p for p in children if pid_alive(p)] == []
        assert not (tmp_path / "stack.json").exists()
    finally:
        if process.poll() is None:
            process.kill()


def test_up_restarts_a_killed_broker_and_status_says_its_records_were_lost(tmp_path: Path) -> None:
    process, state = start_up(tmp_path, ())
    try:
        assert mlops("status", "--workdir", str(tmp_path), "--json").exit_code == 0
        os.kill(state.pids["kafka"], signal.SIGKILL)

        def restarted() -> bool:
            return StackState.load(tmp_path / "stack.json").pids["kafka"] != state.pids["kafka"]

        wait_for(restarted, 60, "mlops up to restart the broker")
        status = mlops("status", "--workdir", str(tmp_path), "--json")
        assert status.exit_code == 0, status.output
        (note,) = json.loads(status.stdout)["notes"]
        assert RECORDS_LOST in note
        assert "kafka restarted without its records" in mlops("status", "--workdir", str(tmp_path)).stdout
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


def test_ctrl_c_on_up_stops_everything(tmp_path: Path) -> None:
    process, state = start_up(tmp_path, ())
    children = descendants(process.pid)
    assert {state.pids["kafka"], state.pids["mongodb"]} <= children
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0
    assert [p for p in children if pid_alive(p)] == []
    assert not (tmp_path / "stack.json").exists()


def test_status_of_nothing_running_is_unhealthy_and_says_why(tmp_path: Path) -> None:
    ports = StackPorts.free()
    args = [f"--port={name}={port}" for name, port in ports.as_dict().items()]
    status = mlops("status", "--workdir", str(tmp_path), "--json", *args)
    assert status.exit_code == ExitCode.FAILED
    report = json.loads(status.stdout)
    assert report["healthy"] is False
    assert {c["detail"] for c in report["components"]} == {"connection refused"}


def prometheus_query(port: int, query: str) -> list[dict[str, Any]]:
    response = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": query}, timeout=5)
    response.raise_for_status()
    return list(response.json()["data"]["result"])


def generate_traffic(stack: LocalStack) -> None:
    """One request each to registry, serving and ingest, so their request counters exist."""
    metadata = bearer_metadata(stack.admin_token)
    with grpc.insecure_channel(stack.grpc_address("registry")) as channel:
        registry_pb2_grpc.RegistryServiceStub(channel).ListModels(
            registry_pb2.ListModelsRequest(), metadata=metadata, timeout=10
        )
    with grpc.insecure_channel(stack.grpc_address("serving")) as channel:
        request = oip.ModelInferRequest(model_name="no-such-model", id="probe")
        tensor = request.inputs.add(name="features", datatype="FP64", shape=[1, 1])
        tensor.contents.fp64_contents.append(1.0)
        with pytest.raises(grpc.RpcError) as unknown:
            oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, metadata=metadata, timeout=10)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    response = httpx.post(
        f"{stack.http_url('ingest')}/v1/events",
        json=[{"dataset": "no-such-dataset", "event_id": "probe-1"}],
        headers={"authorization": f"Bearer {stack.admin_token}"},
        timeout=10,
    )
    assert response.status_code == 200 and response.json()["rejected"] == 1, response.text


# One metric of each service, by the names the services export (see docs/operations.md).
SERVICE_METRICS = {
    "registry": ("mlops_registry_requests_total", {"method": "ListModels"}),
    # Unknown model names are not labels (a client could explode the series count).
    "serving": ("mlops_serving_requests_total", {"model": "", "code": "NOT_FOUND"}),
    "ingest": ("mlops_ingest_events_total", {"outcome": "rejected"}),
    "monitor": ("mlops_monitor_join_entries", {}),
    "trainer": ("mlops_trainer_job_seconds_count", {}),
    "console": ("mlops_console_sign_ins_total", {"outcome": "accepted"}),
}


def selector(metric: str, labels: dict[str, str]) -> str:
    return metric + "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def test_prometheus_scrapes_one_metric_of_each_service(stack: LocalStack, tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("Debian's prometheus is not installed: `make observability-tools` installs it")
    assert set(INSTALLED) == set(SERVICE_METRICS), "every service must run for this test"
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": name,
                "static_configs": [{"targets": [stack.http_url(name).removeprefix("http://")]}],
            }
            for name in INSTALLED
        ],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    generate_traffic(stack)
    prometheus = start_process(
        "prometheus",
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        log_path=tmp_path / "prometheus.log",
    )
    try:
        missing = dict(SERVICE_METRICS)

        def scraped_everything() -> bool:
            for service, (metric, labels) in list(missing.items()):
                try:
                    result = prometheus_query(port, selector(metric, {**labels, "job": service}))
                except httpx.HTTPError:
                    return False
                if result:
                    del missing[service]
            return not missing

        try:
            wait_for(scraped_everything, 60, "Prometheus to scrape one metric of each service")
        except AssertionError:
            raise AssertionError(f"never scraped: {missing}; {prometheus.log_tail(10)}") from None
        up = prometheus_query(port, "up")
        assert {r["metric"]["job"]: r["value"][1] for r in up} == dict.fromkeys(INSTALLED, "1")
    finally:
        prometheus.stop()


N_FEATURES = 3


def register_classifier(stack: LocalStack, name: str) -> Any:
    """A logistic regression registered with passing gates: the registry's AUTO policy puts
    it in production, and serving loads it from the model event."""
    X, y = make_classification(
        n_samples=200, n_features=N_FEATURES, n_informative=2, n_redundant=0, random_state=3
    )
    estimator = LogisticRegression().fit(X, np.array(["no", "yes"], dtype=object)[y])
    metadata = registry_pb2.VersionMetadata(
        model_name=name,
        artifact=registry_pb2.Artifact(format=SkopsFlavor.name),
        metrics={"accuracy": 0.9},
        signature=model_pb2.Signature(
            inputs=[model_pb2.TensorSpec(name="features", datatype="FP64", shape=[-1, N_FEATURES])],
            outputs=[
                model_pb2.TensorSpec(name="probabilities", datatype="FP64", shape=[-1, 2]),
                model_pb2.TensorSpec(name="label", datatype="BYTES", shape=[-1]),
            ],
            feature_names=[f"f{i}" for i in range(N_FEATURES)],
            classes=["no", "yes"],
            task=model_pb2.TASK_CLASSIFICATION,
        ),
        lineage=model_pb2.Lineage(
            data=model_pb2.MaterializedWindow(
                window=model_pb2.DataWindow(dataset="demo"), content_sha256="ab" * 32, row_count=200
            ),
            code_version="test",
        ),
        gates=[model_pb2.GateResult(name="min_metric", passed=True, value=0.9, threshold=0.8)],
        gates_passed=True,
    )

    async def register() -> None:
        async with RegistryClient(stack.grpc_address("registry"), lambda: stack.admin_token) as client:
            await client.create_model(name)
            await client.create_version(metadata, SkopsFlavor().save(estimator).data)

    asyncio.run(register())
    with grpc.insecure_channel(stack.grpc_address("serving")) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        metadata_ = bearer_metadata(stack.admin_token)
        wait_for(
            lambda: stub.ModelReady(oip.ModelReadyRequest(name=name), metadata=metadata_, timeout=5).ready,
            60,
            f"serving to load {name}",
        )
    return estimator


@pytest.fixture(scope="module")
def served(stack: LocalStack) -> Any:
    return register_classifier(stack, "cli-churn")


def test_predict_answers_from_the_production_model_and_maps_errors_to_exit_codes(
    stack: LocalStack, served: Any, tmp_path: Path
) -> None:
    estimator = served
    predict_token = stack.keys.mint("app:test", Scope.PREDICT)
    env = {"MLOPS_SERVING_ADDRESS": stack.grpc_address("serving"), "MLOPS_TOKEN": predict_token}
    runner = CliRunner()

    one = runner.invoke(
        app, ["predict", "cli-churn", "--features", "0.5,-1,2", "--id", "e-1", "--json"], env=env
    )
    assert one.exit_code == 0, one.output
    answer = json.loads(one.stdout)
    expected = estimator.predict_proba(np.array([[0.5, -1.0, 2.0]]))[0]
    assert answer["id"] == "e-1" and answer["model_version"] == "1"
    assert answer["probabilities"] == pytest.approx(list(expected))
    assert answer["label"] == ["no", "yes"][int(np.argmax(expected))]

    rows = tmp_path / "rows.csv"
    rows.write_text("event_id,f0,f1,f2,label\ne-2,0.1,0.2,0.3,yes\ne-3,-2,1,0,no\n")
    many = runner.invoke(app, ["predict", "cli-churn", "--file", str(rows), "--json"], env=env)
    assert many.exit_code == 0, many.output
    answers = [json.loads(line) for line in many.stdout.splitlines()]
    assert [a["id"] for a in answers] == ["e-2", "e-3"]
    expected_rows = estimator.predict_proba(np.array([[0.1, 0.2, 0.3], [-2.0, 1.0, 0.0]]))
    for got, want in zip(answers, expected_rows, strict=True):
        assert got["probabilities"] == pytest.approx(list(want))

    wrong_shape = runner.invoke(app, ["predict", "cli-churn", "--features", "1,2"], env=env)
    assert wrong_shape.exit_code == ExitCode.USAGE, wrong_shape.output
    unknown = runner.invoke(app, ["predict", "no-such-model", "--features", "1,2,3"], env=env)
    assert unknown.exit_code == ExitCode.NOT_FOUND, unknown.output
    read_only = {**env, "MLOPS_TOKEN": stack.keys.mint("app:test", Scope.READ)}
    denied = runner.invoke(app, ["predict", "cli-churn", "--features", "1,2,3"], env=read_only)
    assert denied.exit_code == ExitCode.DENIED, denied.output


def test_a_clients_trace_reaches_the_prediction_record_through_real_serving(
    stack: LocalStack, served: Any
) -> None:
    """No service exports spans here (no OTLP endpoint): the context still travels from the
    gRPC metadata of a predict call to the headers of its prediction record."""
    trace_id = uuid.uuid4().hex
    traceparent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    request = oip.ModelInferRequest(model_name="cli-churn", id="traced-request")
    tensor = request.inputs.add(name="features", datatype="FP64", shape=[1, N_FEATURES])
    tensor.contents.fp64_contents.extend([0.1, 0.2, 0.3])
    with grpc.insecure_channel(stack.grpc_address("serving")) as channel:
        oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            request, metadata=(*bearer_metadata(stack.admin_token), ("traceparent", traceparent)), timeout=10
        )

    async def traceparent_of_record() -> str:
        async for record in tail_records(
            stack.kafka_bootstrap, stack.topics.predictions, from_beginning=True, idle_timeout=20
        ):
            if decode(record, events_pb2.PredictionRecord).message.request_id == "traced-request":
                return dict(record.headers)["traceparent"].decode()
        raise AssertionError("no prediction record for the traced request")

    recorded = asyncio.run(traceparent_of_record())
    assert recorded.split("-")[1] == trace_id


def test_kafka_restart_recreates_the_topics(stack: LocalStack) -> None:
    # Last in the module: the broker loses everything it held (memory storage).
    stack.restart("kafka")
    assert check_component("kafka", stack.ports).healthy
    # Services may add their own (internal) topics as they reconnect; the platform's are back.
    assert set(Topics("mlops").all()) <= topic_names(stack)
