"""Serving throughput and latency over gRPC against the in-process predict rate.

``python -m bench.serving [--seconds 15]``

A HistGradientBoostingClassifier on 20 features (make_classification, 20,000 rows,
random_state 0) is registered in a real registry and served by a real serving process
(broker, database, registry and serving each their own process, prediction logging on).
A load generator sends ModelInfer requests of 1 and 64 rows at concurrency 8 and 32 and
reports requests/s, rows/s, p50 and p99, next to the floor measured in this run: the
model's own ``predict_proba`` rate in this process, one call per request. The single-row
scenario at concurrency 32 and the 64-row one are repeated with logging off, to price it.

For scale, the same load runs against a bare grpc.aio server that answers every ModelInfer
with a canned two-output response and does nothing else: the transport floor, the most
any Python gRPC server can do on this machine in this run.

Targets (issue 3): single rows at concurrency 32 at least 5x the in-process single-row
rate with p99 under 25 ms; 64-row requests at least 70% of the in-process rows/s;
logging costs under 10%.

``python -m bench.serving --explain`` prices feature contributions instead: in process, the
trainer's logistic-regression and random-forest pipelines (scaled numbers, a one-hot or
ordinal category) explain 1 and 64 rows, against their own ``predict_proba`` on the same
rows as the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import grpc
import numpy as np
from sklearn.datasets import make_classification
from sklearn.ensemble import HistGradientBoostingClassifier

from services.cli.stack import LocalStack
from services.cli.stack_state import StackPorts
from services.common.auth import Scope, bearer_metadata
from services.common.clients.registry import RegistryClient
from services.common.flavors.skops import SkopsFlavor
from services.common.grpc_handlers import ServicerContext
from services.common.localstack import free_port, port_open
from services.common.proto.inference import grpc_service_pb2 as oip
from services.common.proto.mlops.v1 import model_pb2, registry_pb2

MODEL = "bench-hgb"
N_FEATURES = 20
INFER = "/inference.GRPCInferenceService/ModelInfer"
SCENARIOS = [(1, 8), (1, 32), (64, 8), (64, 32)]
LOGGING_OFF_SCENARIOS = [(1, 32), (64, 32)]


@dataclass(frozen=True)
class Result:
    rows: int
    concurrency: int
    logging: bool
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    server_cpu_seconds: float

    @property
    def server_cpu_us_per_request(self) -> float:
        return self.server_cpu_seconds / max(self.requests, 1) * 1e6

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds

    @property
    def rows_per_s(self) -> float:
        return self.requests * self.rows / self.seconds


def train() -> tuple[HistGradientBoostingClassifier, np.ndarray]:
    X, y = make_classification(n_samples=20_000, n_features=N_FEATURES, random_state=0)
    labels = np.array(["0", "1"], dtype=object)[y]
    return HistGradientBoostingClassifier(random_state=0).fit(X, labels), X


def in_process_floor(
    model: HistGradientBoostingClassifier, X: np.ndarray, seconds: float
) -> tuple[float, float]:
    """Single-row predict_proba calls/s and 64-row rows/s, one call after another."""

    def rate(rows: int) -> float:
        calls = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            start = (calls * rows) % (len(X) - rows)
            model.predict_proba(X[start : start + rows])
            calls += 1
        return calls * rows / (time.perf_counter() - started)

    rate(1)  # warm
    return rate(1), rate(64)


def signature() -> model_pb2.Signature:
    return model_pb2.Signature(
        inputs=[model_pb2.TensorSpec(name="features", datatype="FP64", shape=[-1, N_FEATURES])],
        outputs=[
            model_pb2.TensorSpec(name="probabilities", datatype="FP64", shape=[-1, 2]),
            model_pb2.TensorSpec(name="label", datatype="BYTES", shape=[-1]),
        ],
        feature_names=[f"f{i}" for i in range(N_FEATURES)],
        classes=["0", "1"],
        task=model_pb2.TASK_CLASSIFICATION,
    )


async def register(stack: LocalStack, artifact: bytes) -> None:
    async with RegistryClient(stack.grpc_address("registry"), lambda: stack.admin_token) as registry:
        await registry.create_model(MODEL, exist_ok=True)
        await registry.create_version(
            registry_pb2.VersionMetadata(
                model_name=MODEL,
                artifact=registry_pb2.Artifact(format=SkopsFlavor.name),
                signature=signature(),
                gates=[model_pb2.GateResult(name="bench", passed=True)],
                gates_passed=True,
            ),
            artifact,
        )


def request_bytes(X: np.ndarray, rows: int, model: str = MODEL) -> list[bytes]:
    """Serialized requests (raw FP64 tensors, as tritonclient sends), cycling through the data."""
    requests = []
    for start in range(0, 64 * rows, rows):
        request = oip.ModelInferRequest(model_name=model)
        request.inputs.add(name="features", datatype="FP64", shape=[rows, X.shape[1]])
        request.raw_input_contents.append(np.ascontiguousarray(X[start : start + rows]).tobytes())
        requests.append(request.SerializeToString())
    return requests


async def wait_until_served(
    channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...], model: str = MODEL
) -> None:
    ready = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelReady",
        request_serializer=oip.ModelReadyRequest.SerializeToString,
        response_deserializer=oip.ModelReadyResponse.FromString,
    )
    async with asyncio.timeout(60):
        while True:
            if (await ready(oip.ModelReadyRequest(name=model), metadata=metadata)).ready:
                return
            await asyncio.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) a process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(
    address: str,
    token: str,
    X: np.ndarray,
    rows: int,
    concurrency: int,
    seconds: float,
    logging: bool,
    server_pid: int,
    model: str = MODEL,
) -> Result:
    """``concurrency`` clients sending back to back for ``seconds``; bytes in, bytes out, so the
    load generator spends its CPU on the wire rather than on protobuf."""
    metadata = bearer_metadata(token)
    async with grpc.aio.insecure_channel(address) as channel:
        await wait_until_served(channel, metadata, model)
        infer: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(INFER)
        payloads = request_bytes(X, rows, model)
        latencies: list[float] = []
        errors = 0

        async def client(worker: int, deadline: float, record: bool) -> None:
            nonlocal errors
            i = worker
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    await infer(payloads[i % len(payloads)], metadata=metadata, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                if record:
                    latencies.append(time.perf_counter() - started)
                i += concurrency

        warm_until = time.perf_counter() + min(2.0, seconds / 5)
        await asyncio.gather(*(client(w, warm_until, False) for w in range(concurrency)))
        errors = 0
        cpu_before = cpu_seconds(server_pid)
        started = time.perf_counter()
        await asyncio.gather(*(client(w, started + seconds, True) for w in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(server_pid) - cpu_before
    p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99]) if latencies else (float("nan"),) * 2
    return Result(rows, concurrency, logging, len(latencies), errors, elapsed, float(p50), float(p99), cpu)


async def serve_canned(port: int) -> None:
    """A gRPC server that answers ModelReady and ModelInfer like serving does (same sizes),
    without routing, checking, predicting or logging."""
    answer = oip.ModelInferResponse(model_name=MODEL, model_version="1")
    answer.outputs.add(name="probabilities", datatype="FP64", shape=[1, 2])
    answer.outputs.add(name="label", datatype="BYTES", shape=[1])
    answer.raw_output_contents.extend([np.zeros(2).tobytes(), b"\x01\x00\x00\x000"])
    ready = oip.ModelReadyResponse(ready=True)

    async def model_infer(request: oip.ModelInferRequest, context: ServicerContext) -> oip.ModelInferResponse:
        return answer

    async def model_ready(request: oip.ModelReadyRequest, context: ServicerContext) -> oip.ModelReadyResponse:
        return ready

    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(
            model_infer,
            request_deserializer=oip.ModelInferRequest.FromString,
            response_serializer=oip.ModelInferResponse.SerializeToString,
        ),
        "ModelReady": grpc.unary_unary_rpc_method_handler(
            model_ready,
            request_deserializer=oip.ModelReadyRequest.FromString,
            response_serializer=oip.ModelReadyResponse.SerializeToString,
        ),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("inference.GRPCInferenceService", handlers)]
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def transport_floor(X: np.ndarray, seconds: float) -> Result:
    """Single-row requests at concurrency 32 against the canned server, in its own process."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bench.serving", "--canned-server", str(port)])
    try:
        deadline = time.monotonic() + 60
        while not port_open(port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the canned gRPC server did not start")
            time.sleep(0.1)
        return asyncio.run(load(f"127.0.0.1:{port}", "none", X, 1, 32, seconds, False, server.pid))
    finally:
        server.terminate()
        server.wait(10)


def run_stack(
    workdir: Path,
    artifact: bytes,
    X: np.ndarray,
    scenarios: list[tuple[int, int]],
    seconds: float,
    logging: bool,
) -> list[Result]:
    env = {
        "OMP_NUM_THREADS": "1",
        "MLOPS_LOG_LEVEL": "WARNING",
        "SERVING_PREDICTION_LOGGING": "true" if logging else "false",
    }
    with LocalStack(workdir, StackPorts.free(), services=["registry", "serving"], env=env) as stack:
        asyncio.run(register(stack, artifact))
        token = stack.keys.mint("bench", Scope.PREDICT)
        address = stack.grpc_address("serving")
        results = []
        for rows, concurrency in scenarios:
            result = asyncio.run(
                load(address, token, X, rows, concurrency, seconds, logging, stack.processes["serving"].pid)
            )
            print(
                f"  rows={rows:<3} concurrency={concurrency:<3} logging={'on ' if logging else 'off'} "
                f"{result.requests_per_s:9.0f} req/s {result.rows_per_s:9.0f} rows/s "
                f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  "
                f"server CPU {result.server_cpu_us_per_request:5.0f} us/req  errors {result.errors}",
                flush=True,
            )
            results.append(result)
    return results


def explanation_cost(seconds: float) -> None:
    """Explaining against predicting, per call, for the trainer's explainable families."""
    from services.common.flavors.sklearn_explain import explainer_for
    from services.common.proto.mlops.v1.model_pb2 import Task
    from services.trainer.pipelines import FAMILIES, build_pipeline
    from services.trainer.tabular import Feature, FeatureKind

    numbers, y = make_classification(n_samples=5_000, n_features=6, random_state=0)
    X = np.empty((len(numbers), 7), dtype=object)
    X[:, :6] = numbers
    X[:, 6] = np.array(["red", "green", "blue", "grey"], dtype=object)[(numbers[:, 0] > 0) * 2 + y]
    features = [Feature(f"f{i}", FeatureKind.NUMERIC) for i in range(6)]
    features.append(Feature("colour", FeatureKind.CATEGORICAL))
    labels = np.array(["0", "1"], dtype=object)[y]

    def per_call(call: object, rows: np.ndarray) -> float:
        assert callable(call)
        call(rows)
        calls = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            call(rows)
            calls += 1
        return (time.perf_counter() - started) / calls * 1000

    for family in ("logistic_regression", "random_forest"):
        pipeline = build_pipeline(FAMILIES[family], Task.TASK_CLASSIFICATION, features, {}, 0).fit(X, labels)
        explainer = explainer_for(pipeline, len(features))
        for rows in (1, 64):
            batch = X[:rows]
            explain_ms = per_call(explainer.explain, batch)
            predict_ms = per_call(pipeline.predict_proba, batch)
            print(
                f"  {family:<20} {rows:>2} rows: explain {explain_ms:6.2f} ms, predict_proba "
                f"{predict_ms:6.2f} ms per call: {explain_ms / predict_ms:.1f}x",
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of each scenario")
    parser.add_argument("--floor-seconds", type=float, default=3.0, help="duration of each in-process floor")
    parser.add_argument("--canned-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument(
        "--explain", action="store_true", help="price feature contributions in process, and stop"
    )
    args = parser.parse_args(argv)
    if args.canned_server:
        asyncio.run(serve_canned(args.canned_server))
        return 0
    if args.explain:
        print(f"load average: {' '.join(f'{v:.1f}' for v in os.getloadavg())} ({os.cpu_count()} cores)")
        explanation_cost(args.floor_seconds)
        return 0

    print(f"load average before: {' '.join(f'{v:.1f}' for v in os.getloadavg())} ({os.cpu_count()} cores)")
    model, X = train()
    single_floor, batch_floor = in_process_floor(model, X, args.floor_seconds)
    print(
        f"in-process floor: {single_floor:.0f} single-row calls/s, {batch_floor:.0f} rows/s in 64-row calls"
    )
    canned = transport_floor(X, args.seconds)
    print(
        f"transport floor (bare grpc.aio, canned answers): {canned.requests_per_s:.0f} req/s at concurrency 32, "
        f"p50 {canned.p50_ms:.2f} ms, p99 {canned.p99_ms:.2f} ms, server CPU "
        f"{canned.server_cpu_us_per_request:.0f} us/req",
        flush=True,
    )
    artifact = SkopsFlavor().save(model).data
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        logged = run_stack(Path(tmp) / "on", artifact, X, SCENARIOS, args.seconds, logging=True)
        unlogged = run_stack(
            Path(tmp) / "off", artifact, X, LOGGING_OFF_SCENARIOS, args.seconds, logging=False
        )

    by_key = {(r.rows, r.concurrency, r.logging): r for r in [*logged, *unlogged]}
    single = by_key[(1, 32, True)]
    batch = by_key[(64, 32, True)]
    single_ratio = single.rows_per_s / single_floor
    batch_ratio = batch.rows_per_s / batch_floor
    # Logging's cost as the server's CPU per request, which other processes on the machine
    # disturb far less than throughput.
    single_cost = single.server_cpu_us_per_request / by_key[(1, 32, False)].server_cpu_us_per_request - 1
    batch_cost = batch.server_cpu_us_per_request / by_key[(64, 32, False)].server_cpu_us_per_request - 1
    errors = sum(r.errors for r in [*logged, *unlogged])
    verdicts = [
        (
            f"single rows, concurrency 32: {single_ratio:.1f}x the in-process single-row rate",
            single_ratio >= 5,
        ),
        (f"single rows, concurrency 32: p99 {single.p99_ms:.1f} ms", single.p99_ms < 25),
        (f"64-row requests, concurrency 32: {batch_ratio:.0%} of the in-process rows/s", batch_ratio >= 0.7),
        (
            f"prediction logging costs {single_cost:.1%} (1 row) and {batch_cost:.1%} (64 rows) of server CPU per request",
            max(single_cost, batch_cost) < 0.10,
        ),
        (f"failed requests: {errors}", errors == 0),
    ]
    print(
        f"\nsingle rows at concurrency 32 reach {single.requests_per_s / canned.requests_per_s:.0%} of the "
        "transport floor's request rate"
    )
    print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print("targets:")
    for text, met in verdicts:
        print(f"  [{'met' if met else 'MISSED'}] {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
