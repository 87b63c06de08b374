"""NVIDIA's tritonclient, from its own virtual environment, against serving: every RPC.

The client pins protobuf < 7 and the platform uses 7, so it runs as a real client would:
another process, another environment (``make client-venv``), nothing of ours imported.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from services.common.auth import Scope
from tests.integration.serving.conftest import Fitted, Stack

ROOT = Path(__file__).resolve().parents[3]
CLIENT_PYTHON = ROOT / ".venv-client" / "bin" / "python"
SCRIPT = ROOT / "tests" / "clients" / "triton_conformance.py"


async def test_tritonclient_passes_every_rpc(
    stack: Stack, model_name: str, model_a: Fitted, tmp_path: Path
) -> None:
    if not CLIENT_PYTHON.exists():
        missing = "no .venv-client: run `make client-venv` (make test does)"
        # In CI the environment is part of the build: its absence is a failure, not a skip.
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    await stack.register(model_name, model_a)
    await stack.served(model_name, production=1)
    rows = model_a.X[:5]
    case = tmp_path / "case.json"
    case.write_text(
        json.dumps(
            {
                "model": model_name,
                "version": "1",
                "feature_names": [f"f{i}" for i in range(rows.shape[1])],
                "rows": rows.tolist(),
                "probabilities": model_a.proba(rows).tolist(),
                "labels": model_a.estimator.predict(rows).tolist(),
                "log_odds": model_a.estimator.decision_function(rows).tolist(),
            }
        )
    )
    # The server runs in this event loop: wait for the client without blocking it.
    process = await asyncio.create_subprocess_exec(
        str(CLIENT_PYTHON),
        str(SCRIPT),
        "--url",
        f"127.0.0.1:{stack.serving.grpc_port}",
        "--token",
        stack.infra.token(Scope.PREDICT),
        "--case",
        str(case),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(120):
        stdout, stderr = await process.communicate()
    results = [json.loads(line) for line in stdout.decode().splitlines() if line.startswith("{")]
    failed = [r for r in results if not r["ok"]]
    sys.stderr.write(stderr.decode())
    assert failed == [], failed
    assert process.returncode == 0
    assert len(results) == 19
