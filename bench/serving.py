"""Serving against MLServer in the same run, and across worker processes.

``python -m bench.serving [--seconds 15] [--rounds 2]``

A HistGradientBoostingClassifier on 20 features (make_classification, 20,000 rows,
random_state 0) is registered in a real registry and served by a real serving process
(broker, database, registry and serving each their own process, prediction logging on),
with one worker process and with two. The same model, saved with joblib, is served by
MLServer 1.7.1 from its own environment (``make mlserver-venv``), with its adaptive
batching and without. One load generator process sends ModelInfer requests with raw FP64
tensors (as tritonclient does) to each in turn: single rows at concurrency 32 and 64-row
requests at concurrency 8, each client on a connection of its own. Servers take turns
round after round (``--rounds``, the order reversed every other round, so that drifting
load on the machine hurts each alike) and the medians are compared.

It prints requests/s, rows/s, p50 and p99 at the client, the server processes' CPU per
request, and, for serving, the time requests spent inside its handler (from its own
histogram) against the time the client saw, which tells queueing in the transport from
work in the data plane. Then the ratios: serving's single-row req/s and p99 and its 64-row
rows/s against MLServer's, and serving with two workers against one. The model's own
``predict_proba`` rate in this process is the floor printed first.

Targets (issue 18): single-row p99 at concurrency 32 no worse than MLServer with adaptive
batching, single-row req/s at least 2x MLServer's, 64-row rows/s at least MLServer's with
adaptive batching.

``python -m bench.serving --explain`` prices feature contributions instead: in process, the
trainer's logistic-regression and random-forest pipelines (scaled numbers, a one-hot or
ordinal category) explain 1 and 64 rows, against their own ``predict_proba`` on the same
rows as the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import grpc
import httpx
import numpy as np
from sklearn.datasets import make_classification
from sklearn.ensemble import HistGradientBoostingClassifier

from bench import _mlserver
from bench.processes import cpu_seconds
from services.cli.stack import LocalStack
from services.cli.stack_state import StackPorts
from services.common.auth import Scope, bearer_metadata
from services.common.clients.registry import RegistryClient
from services.common.flavors.skops import SkopsFlavor
from services.common.localstack import start_process
from services.common.proto.inference import grpc_service_pb2 as oip
from services.common.proto.mlops.v1 import model_pb2, registry_pb2

MODEL = "bench-hgb"
N_FEATURES = 20
INFER = "/inference.GRPCInferenceService/ModelInfer"
SCENARIOS = [(1, 32), (64, 8)]
"""(rows per request, concurrent clients)."""
WORKERS = (1, 2)


@dataclass(frozen=True)
class Result:
    server: str
    rows: int
    concurrency: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    server_cpu_seconds: float
    handler_ms: tuple[float, float] | None = None
    """Serving only: p50 and p99 of the time inside its handler (its own histogram)."""

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


def request_bytes(X: np.ndarray, rows: int, model: str = MODEL, outputs: Sequence[str] = ()) -> list[bytes]:
    """Serialized requests (raw FP64 tensors, as tritonclient sends), cycling through the data."""
    requests = []
    for start in range(0, 64 * rows, rows):
        request = oip.ModelInferRequest(model_name=model)
        request.inputs.add(name="features", datatype="FP64", shape=[rows, X.shape[1]])
        for name in outputs:
            request.outputs.add(name=name)
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
    async with asyncio.timeout(120):
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                if (await ready(oip.ModelReadyRequest(name=model), metadata=metadata)).ready:
                    return
            await asyncio.sleep(0.1)


def process_family(pid: int) -> list[int]:
    """``pid`` and its descendants (a serving replica's worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    family, pending = [], [pid]
    while pending:
        current = pending.pop()
        family.append(current)
        pending += children.get(current, [])
    return family


async def load(
    server: str,
    address: str,
    token: str,
    X: np.ndarray,
    rows: int,
    concurrency: int,
    seconds: float,
    server_pids: list[int],
    outputs: Sequence[str] = (),
    model: str = MODEL,
) -> Result:
    """``concurrency`` clients sending back to back for ``seconds``, each on a connection of
    its own (as separate clients would be: a server's worker processes share connections,
    not requests); bytes in, bytes out, so the load generator spends its CPU on the wire
    rather than on protobuf."""
    metadata = bearer_metadata(token)
    # A local subchannel pool per channel: otherwise grpc shares one connection among
    # channels to the same address.
    channels = [
        grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(concurrency)
    ]
    try:
        # Every connection's worker, not just one, must serve the model.
        await asyncio.gather(*(wait_until_served(channel, metadata, model) for channel in channels))
        calls: list[grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = [
            channel.unary_unary(INFER) for channel in channels
        ]
        payloads = request_bytes(X, rows, model, outputs)
        latencies: list[float] = []
        errors = 0

        async def client(worker: int, deadline: float, record: bool) -> None:
            nonlocal errors
            infer = calls[worker]
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
        cpu_before = sum(cpu_seconds(pid) for pid in server_pids)
        started = time.perf_counter()
        await asyncio.gather(*(client(w, started + seconds, True) for w in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = sum(cpu_seconds(pid) for pid in server_pids) - cpu_before
    finally:
        for channel in channels:
            await channel.close()
    p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99]) if latencies else (float("nan"),) * 2
    return Result(server, rows, concurrency, len(latencies), errors, elapsed, float(p50), float(p99), cpu)


def handler_histogram(metrics_url: str) -> list[tuple[float, float]]:
    """Serving's own request histogram (the time inside its handler, from decoding the
    request to the answer) as (upper bound in seconds, cumulative count); one worker's."""
    text = httpx.get(metrics_url, timeout=10).text
    buckets = []
    for line in text.splitlines():
        if line.startswith("mlops_serving_request_seconds_bucket") and 'code="OK"' in line:
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(bound), float(line.rsplit(" ", 1)[1])))
    return sorted(buckets)


def handler_percentiles(
    before: list[tuple[float, float]], after: list[tuple[float, float]]
) -> tuple[float, float]:
    """p50 and p99 in ms (bucket upper bounds) of what the histogram counted in between."""
    counted = dict(before)
    buckets = [(bound, count - counted.get(bound, 0.0)) for bound, count in after]
    total = buckets[-1][1] if buckets else 0.0

    def percentile(q: float) -> float:
        return next((bound * 1000 for bound, count in buckets if count >= q * total), float("nan"))

    return percentile(0.5), percentile(0.99)


@contextlib.contextmanager
def platform(stack: LocalStack, workdir: Path, workers: int) -> Iterator[tuple[str, int, str]]:
    """Serving on the stack's registry with ``workers`` processes: its address, pid, metrics URL."""
    env = {
        **os.environ,
        **stack.env_for("serving"),
        "OMP_NUM_THREADS": "1",
        "MLOPS_LOG_LEVEL": "WARNING",
        "SERVING_WORKERS": str(workers),
    }
    process = start_process(
        "serving",
        [sys.executable, "-m", "services.serving"],
        env=env,
        log_path=workdir / f"serving-{workers}.log",
    )
    try:
        deadline = time.monotonic() + 120
        while not _ready(f"{stack.http_url('serving')}/health/ready"):
            if not process.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"serving did not become ready; see {workdir / f'serving-{workers}.log'}")
            time.sleep(0.2)
        yield stack.grpc_address("serving"), process.pid, f"{stack.http_url('serving')}/metrics"
    finally:
        process.stop()


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def run_server(
    name: str,
    address: str,
    pid: int,
    token: str,
    X: np.ndarray,
    seconds: float,
    metrics_url: str | None = None,
    outputs: Sequence[str] = (),
) -> list[Result]:
    results = []
    for rows, concurrency in SCENARIOS:
        before = handler_histogram(metrics_url) if metrics_url is not None else []
        result = asyncio.run(
            load(name, address, token, X, rows, concurrency, seconds, process_family(pid), outputs)
        )
        if metrics_url is not None:
            handler_ms = handler_percentiles(before, handler_histogram(metrics_url))
            result = dataclasses.replace(result, handler_ms=handler_ms)
        handler = (
            f"  in handler p50 {result.handler_ms[0]:.1f} p99 {result.handler_ms[1]:.1f} ms"
            if result.handler_ms
            else ""
        )
        print(
            f"  {name:<30} rows={rows:<3} c={concurrency:<3} {result.requests_per_s:7.0f} req/s "
            f"{result.rows_per_s:8.0f} rows/s  p50 {result.p50_ms:6.1f} ms  p99 {result.p99_ms:6.1f} ms  "
            f"CPU {result.server_cpu_us_per_request:5.0f} us/req  errors {result.errors}{handler}",
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


def median_of(results: list[Result], server: str, rows: int, attribute: str) -> float:
    values = [getattr(r, attribute) for r in results if r.server == server and r.rows == rows]
    return float(statistics.median(values)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of each scenario")
    parser.add_argument("--rounds", type=int, default=2, help="times every server takes its turn")
    parser.add_argument("--floor-seconds", type=float, default=3.0, help="duration of each in-process floor")
    parser.add_argument(
        "--explain", action="store_true", help="price feature contributions in process, and stop"
    )
    args = parser.parse_args(argv)
    print(f"load average before: {' '.join(f'{v:.1f}' for v in os.getloadavg())} ({os.cpu_count()} cores)")
    if args.explain:
        explanation_cost(args.floor_seconds)
        return 0
    # The load generator is the measuring instrument: its own full collections must not
    # show up in the latencies it measures (serving freezes its start-up objects too).
    gc.collect()
    gc.freeze()
    model, X = train()
    single_floor, batch_floor = in_process_floor(model, X, args.floor_seconds)
    print(
        f"in-process floor: {single_floor:.0f} single-row calls/s, {batch_floor:.0f} rows/s in 64-row calls"
    )
    if not _mlserver.available():
        print(f"MLServer is not installed in {_mlserver.VENV} (make mlserver-venv): comparing workers only")
    artifact = SkopsFlavor().save(model).data
    results: list[Result] = []
    names = [f"serving, {w} worker{'s' if w > 1 else ''}" for w in WORKERS]
    peers = ["MLServer, adaptive batching", "MLServer"] if _mlserver.available() else []
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        workdir = Path(tmp)
        with LocalStack(workdir / "stack", StackPorts.free(), services=["registry"]) as stack:
            asyncio.run(register(stack, artifact))
            token = stack.keys.mint("bench", Scope.PREDICT)
            turns: list[str] = [names[0], *peers[:1], names[1], *peers[1:]]
            for round_ in range(args.rounds):
                print(f"round {round_ + 1}", flush=True)
                for name in turns if round_ % 2 == 0 else reversed(turns):
                    if name in names:
                        workers = WORKERS[names.index(name)]
                        with platform(stack, workdir, workers) as (address, pid, metrics_url):
                            results += run_server(name, address, pid, token, X, args.seconds, metrics_url)
                    else:
                        mlserver_dir = workdir / f"mlserver-{round_}-{len(results)}"
                        batching = name == peers[0]
                        with _mlserver.mlserver(mlserver_dir, model, MODEL, batching=batching) as (
                            address,
                            process,
                        ):
                            results += run_server(
                                name, address, process.pid, token, X, args.seconds, outputs=_mlserver.OUTPUTS
                            )
    print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"\nmedians of {args.rounds} rounds:")
    for name in [*names, *peers]:
        print(
            f"  {name:<30} 1 row x 32: {median_of(results, name, 1, 'requests_per_s'):7.0f} req/s, "
            f"p99 {median_of(results, name, 1, 'p99_ms'):6.1f} ms;  64 rows x 8: "
            f"{median_of(results, name, 64, 'rows_per_s'):7.0f} rows/s, p99 {median_of(results, name, 64, 'p99_ms'):6.1f} ms"
        )
    ours = names[-1]
    scaling = median_of(results, names[1], 1, "requests_per_s") / median_of(
        results, names[0], 1, "requests_per_s"
    )
    scaling_64 = median_of(results, names[1], 64, "rows_per_s") / median_of(
        results, names[0], 64, "rows_per_s"
    )
    print(
        f"\nscaling from 1 to 2 workers: {scaling:.2f}x single-row req/s, {scaling_64:.2f}x 64-row rows/s "
        f"(on {os.cpu_count()} cores, the load generator included)"
    )
    errors = sum(r.errors for r in results)
    verdicts = [(f"failed requests: {errors}", errors == 0)]
    if peers:
        adaptive, plain = peers
        req_ratio = median_of(results, ours, 1, "requests_per_s") / median_of(
            results, plain, 1, "requests_per_s"
        )
        req_ratio_adaptive = median_of(results, ours, 1, "requests_per_s") / median_of(
            results, adaptive, 1, "requests_per_s"
        )
        p99_ratio = median_of(results, ours, 1, "p99_ms") / median_of(results, adaptive, 1, "p99_ms")
        rows_ratio = median_of(results, ours, 64, "rows_per_s") / median_of(
            results, adaptive, 64, "rows_per_s"
        )
        verdicts = [
            (
                f"single rows x 32, req/s: {req_ratio:.2f}x MLServer's, {req_ratio_adaptive:.2f}x with its adaptive batching",
                min(req_ratio, req_ratio_adaptive) >= 2,
            ),
            (f"single rows x 32, p99: {p99_ratio:.2f}x MLServer's with adaptive batching", p99_ratio <= 1),
            (f"64 rows x 8, rows/s: {rows_ratio:.2f}x MLServer's with adaptive batching", rows_ratio >= 1),
            *verdicts,
        ]
    print(f"targets ({ours} against MLServer 1.7.1, medians):")
    for text, met in verdicts:
        print(f"  [{'met' if met else 'MISSED'}] {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
