"""MLServer, the peer ``bench.serving`` measures serving against in the same run.

It runs from its own environment, ``.venv-mlserver`` (``make mlserver-venv``, pinned in
``bench/mlserver-requirements.lock``), as someone running MLServer would: its pins
(FastAPI, uvloop) are not the platform's. The model is the bench's own estimator, saved
with joblib for MLServer's scikit-learn runtime; MLServer's defaults otherwise (one
inference worker process beside the server's), with or without its adaptive batching.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib  # type: ignore[import-untyped]

from services.common.localstack import ManagedProcess, free_port, port_open, start_process

VENV = Path(__file__).resolve().parent.parent / ".venv-mlserver"
OUTPUTS = ("predict_proba",)
"""What the bench asks MLServer for: the probabilities, one model call per batch (serving
returns probabilities and labels from one call)."""
MAX_BATCH_SIZE = 32
"""Adaptive batching: requests per batch at most (the bench's highest concurrency)."""
MAX_BATCH_TIME = 0.002
"""Adaptive batching: seconds a batch waits to fill, serving's default batching wait."""


def available() -> bool:
    return (VENV / "bin" / "mlserver").exists()


@contextlib.contextmanager
def mlserver(workdir: Path, model: Any, name: str, *, batching: bool) -> Iterator[tuple[str, ManagedProcess]]:
    """MLServer serving ``model`` as ``name`` over gRPC; yields its address and process."""
    model_dir = workdir / name
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, model_dir / "model.joblib")
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    settings = {"grpc_port": grpc_port, "http_port": http_port, "metrics_port": metrics_port}
    (workdir / "settings.json").write_text(json.dumps(settings))
    model_settings: dict[str, Any] = {
        "name": name,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"},
    }
    if batching:
        model_settings |= {"max_batch_size": MAX_BATCH_SIZE, "max_batch_time": MAX_BATCH_TIME}
    (model_dir / "model-settings.json").write_text(json.dumps(model_settings))
    env = {
        **os.environ,
        "PATH": f"{VENV / 'bin'}:{os.environ.get('PATH', '')}",
        "OMP_NUM_THREADS": "1",
    }
    process = start_process(
        "mlserver",
        [str(VENV / "bin" / "mlserver"), "start", str(workdir)],
        env=env,
        log_path=workdir / "mlserver.log",
    )
    try:
        deadline = time.monotonic() + 120
        while not port_open(grpc_port):
            if not process.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"MLServer did not start; see {workdir / 'mlserver.log'}")
            time.sleep(0.2)
        yield f"127.0.0.1:{grpc_port}", process
    finally:
        process.stop()
