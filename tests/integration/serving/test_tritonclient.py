"""NVIDIA's tritonclient, from its own virtual environment, against serving: every RPC.

The client pins protobuf < 7 and the platform uses 7, so it runs as a real client would:
another process, another environment (``make client-venv``), nothing of ours imported.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.serving.conftest import ROOT, Fitted, Stack, require_client

SCRIPT = ROOT / "tests" / "clients" / "triton_conformance.py"
HTTP_SCRIPT = ROOT / "tests" / "clients" / "triton_http.py"


def write_case(model_name: str, model_a: Fitted, tmp_path: Path) -> Path:
    """What the client scripts check the answers against."""
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
    return case


async def test_tritonclient_passes_every_rpc(
    stack: Stack, model_name: str, model_a: Fitted, tmp_path: Path
) -> None:
    require_client()
    await stack.register(model_name, model_a)
    await stack.served(model_name, production=1)
    returncode, results = await stack.run_client(SCRIPT, write_case(model_name, model_a, tmp_path))
    failed = [r for r in results if not r["ok"]]
    assert failed == [], failed
    assert returncode == 0
    assert len(results) == 19


async def test_tritonclients_http_client_works_with_its_binary_defaults(
    stack: Stack, model_name: str, model_a: Fitted, tmp_path: Path
) -> None:
    require_client()
    await stack.register(model_name, model_a)
    await stack.served(model_name, production=1)
    case = write_case(model_name, model_a, tmp_path)
    returncode, results = await stack.run_client(HTTP_SCRIPT, case, http=True)
    failed = [r for r in results if not r["ok"]]
    assert failed == [], failed
    assert returncode == 0
    assert [r["check"] for r in results] == [
        "http_ready",
        "http_binary_defaults",
        "http_json_both_ways",
        "http_mixed",
        "http_explained_in_binary",
        "http_refusal_names_the_input",
    ]
    assert results[1]["detail"] == ["probabilities", "label"]
