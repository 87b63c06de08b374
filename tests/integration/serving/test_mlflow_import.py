"""MLflow model directories saved by real MLflow (``tests/fixtures/make_mlflow_models.py``)
imported with ``mlops models import-mlflow``, promoted, and served: serving answers what
each library answered in process when MLflow saved the model; what would need unpickling
is refused before anything is registered."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from services.common.auth import Scope
from tests.helpers.cli import Cli
from tests.integration.serving.conftest import ROOT, Stack, features_request, output

MLFLOW = ROOT / "tests" / "fixtures" / "mlflow"
EXPECTED = json.loads((MLFLOW / "expected.json").read_text())
IMPORTED = {
    # directory: (flavor it becomes, what the CLI could not infer)
    "sklearn_skops": ("skops", []),
    "xgboost": ("xgboost", ["class names"]),
    "lightgbm_booster": ("lightgbm", ["class names"]),
    "lightgbm_sklearn": ("lightgbm", []),
    "onnx": ("onnx", ["feature names", "class names"]),
}


def cli_for(stack: Stack, workdir: Path) -> Cli:
    return Cli(f"127.0.0.1:{stack.registry.grpc_port}", stack.infra.token(Scope.ADMIN), workdir)


@pytest.mark.parametrize("directory", sorted(IMPORTED))
async def test_an_mlflow_model_imports_and_serves_its_librarys_answers(
    stack: Stack, tmp_path: Path, directory: str
) -> None:
    name = f"mlflow-{directory.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
    cli = cli_for(stack, tmp_path)
    imported = await cli.json("import-mlflow", str(MLFLOW / directory), name)
    artifact_format, not_inferred = IMPORTED[directory]
    assert imported["artifact"]["format"] == artifact_format
    assert imported["tags"]["source"] == "mlflow" and imported["tags"]["mlflow.mlflow_version"] == "3.17.2"
    assert imported["signature"]["feature_names"] == ["f0", "f1", "f2", "f3"]
    topics = [line.split(":")[0] for line in imported["signature_inference"]["not_inferred"]]
    assert topics == not_inferred
    assert imported["lineage"]["package_versions"]["mlflow"] == "3.17.2"
    await cli.json("set-alias", name, "production", "1")
    await stack.served(name, production=1)

    rows = np.array(EXPECTED["rows"])
    answer = await stack.infer(features_request(name, rows))
    np.testing.assert_allclose(output(answer, "probabilities"), np.array(EXPECTED[directory]), atol=1e-6)

    # A person reads the same report: what was inferred, and what was not.
    code, out, err = await cli("import-mlflow", str(MLFLOW / directory), name)
    assert code == 0 and f"{name} v2" in out, err
    assert "inferred: task: classification (from the artifact)" in out
    assert ("not inferred: class names" in out) == ("class names" in not_inferred)


@pytest.mark.parametrize(
    ("directory", "why"),
    [
        ("pyfunc_custom", "a python_function model with custom code: MLflow cloudpickled"),
        ("sklearn_cloudpickle", "saved with cloudpickle (model.pkl), which the platform never unpickles"),
    ],
)
async def test_what_would_need_unpickling_is_refused_and_nothing_is_registered(
    stack: Stack, tmp_path: Path, directory: str, why: str
) -> None:
    name = f"mlflow-refused-{uuid.uuid4().hex[:6]}"
    cli = cli_for(stack, tmp_path)
    code, _, wrapped = await cli("import-mlflow", str(MLFLOW / directory), name)
    err = " ".join(wrapped.split())  # the console wraps long lines
    assert code == 2 and why in err and "INVALID_ARGUMENT" in err, err
    assert "export it to ONNX" in err or "serialization_format='skops'" in err
    code, _, err = await cli("get", name, "--version", "1")
    assert code == 5, err
