"""Each flavor's serving rate against its own in-process predict, in the same run.

``python -m bench.flavors [--seconds 8] [--floor-seconds 3]``

One two-class model per flavor, fitted here on the same data (make_classification, 20
features, 20,000 rows, random_state 0): ``skops`` a HistGradientBoostingClassifier,
``onnx`` a random forest (100 trees, depth 8) exported with skl2onnx (which cannot export
histogram boosting from scikit-learn 1.9), ``xgboost`` an XGBClassifier and ``lightgbm`` an
LGBMClassifier (100 trees each), ``river-hmac`` a river logistic regression learned on
5,000 rows and signed with the stack's key. Each is saved by its
flavor and registered in a real registry; a real serving process (own process, prediction
logging on, ``OMP_NUM_THREADS=1``) serves them all.

The floor is each model's own predict in this process, loaded by its flavor as serving
loads it (``Runtime.predict_proba``: the library's call on the feature matrix): calls/s of
single rows, rows/s of 64-row calls, one call after another on one core. Serving is asked
over gRPC with raw FP64 ``features`` tensors, single rows at concurrency 32 (micro-batching
can merge them) and 64-row requests at concurrency 8. The ratios say what serving adds or
costs per flavor; they are measured, not targets.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from sklearn.datasets import make_classification
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

from bench.serving import Result, load, process_family, signature
from services.cli.stack import LocalStack
from services.cli.stack_state import StackPorts
from services.common.auth import Scope
from services.common.clients.registry import RegistryClient
from services.common.flavors import flavor, flavor_of
from services.common.flavors.base import SIGNATURE_HMAC_PARAM, Runtime, SavedArtifact, StoredArtifact
from services.common.proto.mlops.v1 import model_pb2, registry_pb2

SINGLE = (1, 32)
"""Rows per request and concurrency of the single-row scenario."""
BATCH = (64, 8)


@dataclass(frozen=True)
class Served:
    flavor: str
    model: str
    saved: SavedArtifact


def fitted(signing_key: bytes) -> tuple[np.ndarray, dict[str, Served]]:
    """One model per flavor on the same data, saved by its flavor."""
    import lightgbm
    import xgboost
    from river import compose, linear_model, preprocessing
    from skl2onnx import to_onnx

    X, y = make_classification(n_samples=20_000, n_features=20, random_state=0)
    forest = RandomForestClassifier(n_estimators=100, max_depth=8, random_state=0, n_jobs=1).fit(X, y)
    models: dict[str, object] = {
        "skops": HistGradientBoostingClassifier(random_state=0).fit(X, y),
        "onnx": to_onnx(forest, X[:1].astype(np.float32)),
        "xgboost": xgboost.XGBClassifier(n_estimators=100, max_depth=6, random_state=0).fit(X, y),
        "lightgbm": lightgbm.LGBMClassifier(n_estimators=100, verbose=-1, random_state=0).fit(X, y),
    }
    river = compose.Pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression())
    names = [f"f{i}" for i in range(X.shape[1])]
    for row, label in zip(X[:5000], y[:5000], strict=True):
        river.learn_one(dict(zip(names, row.tolist(), strict=True)), str(label))
    models["river-hmac"] = river
    served = {}
    for name, model in models.items():
        saving = flavor_of(model)
        assert saving.name == name, (saving.name, name)
        served[name] = Served(name, f"bench-{name}", saving.save(model, signing_key=signing_key))
    return X, served


def stored(served: Served) -> StoredArtifact:
    return StoredArtifact(
        served.saved.data,
        served.saved.sha256,
        signature(),
        {SIGNATURE_HMAC_PARAM: served.saved.signature_hmac} if served.saved.signature_hmac else {},
    )


def in_process(runtime: Runtime, X: np.ndarray, seconds: float) -> tuple[float, float]:
    """Single-row predict_proba calls/s and 64-row rows/s, one call after another."""

    def rate(rows: int, call: Callable[[np.ndarray], object]) -> float:
        calls = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            start = (calls * rows) % (len(X) - rows)
            call(X[start : start + rows])
            calls += 1
        return calls * rows / (time.perf_counter() - started)

    rate(1, runtime.predict_proba)  # warm
    return rate(1, runtime.predict_proba), rate(64, runtime.predict_proba)


async def register(stack: LocalStack, served: dict[str, Served]) -> None:
    async with RegistryClient(stack.grpc_address("registry"), lambda: stack.admin_token) as registry:
        for entry in served.values():
            await registry.create_model(entry.model, exist_ok=True)
            described = registry_pb2.VersionMetadata(
                model_name=entry.model,
                artifact=registry_pb2.Artifact(format=entry.flavor),
                signature=signature(),
                gates=[model_pb2.GateResult(name="bench", passed=True)],
                gates_passed=True,
                signature_hmac=entry.saved.signature_hmac,
            )
            if entry.saved.signature_hmac:
                described.params[SIGNATURE_HMAC_PARAM] = entry.saved.signature_hmac
            await registry.create_version(described, entry.saved.data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured load per serving scenario")
    parser.add_argument("--floor-seconds", type=float, default=3.0, help="each in-process measurement")
    args = parser.parse_args(argv)
    print(f"load average before: {' '.join(f'{v:.1f}' for v in os.getloadavg())} ({os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory(prefix="bench-flavors-") as tmp:
        env = {"OMP_NUM_THREADS": "1", "MLOPS_LOG_LEVEL": "WARNING"}
        stack = LocalStack(Path(tmp), StackPorts.free(), services=["registry", "serving"], env=env)
        key = stack.artifact_signing_key.encode()
        X, served = fitted(key)
        floors = {}
        for name, entry in served.items():  # before the stack starts: nothing else runs
            runtime = flavor(name).load(stored(entry), signing_key=key)
            floors[name] = in_process(runtime, X, args.floor_seconds)
        with stack:
            asyncio.run(register(stack, served))
            token = stack.keys.mint("bench", Scope.PREDICT)
            address = stack.grpc_address("serving")
            pid = stack.processes["serving"].pid
            results: dict[str, tuple[Result, Result]] = {}
            for name, entry in served.items():
                results[name] = tuple(  # type: ignore[assignment]
                    asyncio.run(
                        load(
                            name,
                            address,
                            token,
                            X,
                            rows,
                            concurrency,
                            args.seconds,
                            process_family(pid),
                            model=entry.model,
                        )
                    )
                    for rows, concurrency in (SINGLE, BATCH)
                )
    print(
        f"\n{'flavor':<11} {'in process':>26} {'serving over gRPC':>36} {'serving / in process':>26}\n"
        f"{'':<11} {'1 row calls/s':>13} {'64 rows/s':>12} {'1 row req/s c32':>17} {'64 rows/s c8':>13} "
        f"{'p99 1 row':>9}  {'1 row':>8} {'64 rows':>8}"
    )
    errors = 0
    for name, (single, batch) in results.items():
        single_floor, batch_floor = floors[name]
        errors += single.errors + batch.errors
        print(
            f"{name:<11} {single_floor:13.0f} {batch_floor:12.0f} {single.requests_per_s:17.0f} "
            f"{batch.rows_per_s:13.0f} {single.p99_ms:7.1f}ms  {single.requests_per_s / single_floor:7.2f}x "
            f"{batch.rows_per_s / batch_floor:7.2f}x"
        )
    print(f"failed requests: {errors}")
    print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
