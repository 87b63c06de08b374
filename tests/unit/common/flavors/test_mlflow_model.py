"""MLflow directories read without MLflow: each saved flavor taken into the platform's, and
every directory that would need unpickling, reach outside itself, or name a flavor the
platform cannot run refused with the reason and what to export instead."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import onnx
import pytest
import skops.io
import yaml
from sklearn.linear_model import LogisticRegression

from services.common.errors import InvalidArgument
from services.common.flavors import flavor
from services.common.flavors.mlflow_model import read_mlflow_model
from services.common.flavors.skops import SkopsFlavor

MLFLOW = Path(__file__).resolve().parents[3] / "fixtures" / "mlflow"


def copy_of(name: str, into: Path) -> Path:
    target = into / name
    shutil.copytree(MLFLOW / name, target)
    return target


def edit_mlmodel(directory: Path, change: dict[str, object], flavor_name: str | None = None) -> None:
    path = directory / "MLmodel"
    document = yaml.safe_load(path.read_text())
    if flavor_name is None:
        document.update(change)
    else:
        document["flavors"][flavor_name].update(change)
    path.write_text(yaml.safe_dump(document))


def refusal(directory: Path) -> str:
    with pytest.raises(InvalidArgument) as refused:
        read_mlflow_model(directory)
    assert refused.value.field == "mlflow_dir"
    return " ".join(refused.value.message.split())


@pytest.mark.parametrize(
    ("directory", "platform_flavor"),
    [
        ("sklearn_skops", "skops"),
        ("xgboost", "xgboost"),
        ("lightgbm_booster", "lightgbm"),
        ("lightgbm_sklearn", "lightgbm"),
        ("onnx", "onnx"),
    ],
)
def test_each_saved_flavor_becomes_an_artifact_its_platform_flavor_verifies(
    directory: str, platform_flavor: str
) -> None:
    imported = read_mlflow_model(MLFLOW / directory)
    assert imported.artifact_format == platform_flavor
    flavor(platform_flavor).verify(imported.data)  # what the registry runs on the upload
    assert imported.tags["mlflow.flavor"] == directory.split("_")[0]


def test_onnx_weights_kept_beside_the_graph_are_inlined() -> None:
    on_disk = onnx.load(str(MLFLOW / "onnx" / "model.onnx"), load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in on_disk.graph.initializer)
    inlined = onnx.load_model_from_string(read_mlflow_model(MLFLOW / "onnx").data)
    assert all(t.data_location == onnx.TensorProto.DEFAULT for t in inlined.graph.initializer)


def test_what_the_mlmodel_file_declares_is_kept() -> None:
    imported = read_mlflow_model(MLFLOW / "sklearn_skops")
    assert list(imported.signature.feature_names) == ["f0", "f1", "f2", "f3"]
    assert imported.example is not None and imported.example.matrix.shape == (3, 4)
    assert imported.package_versions["scikit-learn"] and imported.package_versions["mlflow"] == "3.17.2"
    wrapped = read_mlflow_model(MLFLOW / "lightgbm_sklearn")
    assert list(wrapped.signature.classes) == ["0", "1"], "the wrapper's classes name the booster's positions"


def test_a_file_outside_the_directory_is_never_read(tmp_path: Path) -> None:
    directory = copy_of("xgboost", tmp_path)
    (tmp_path / "secret.ubj").write_bytes(b"not yours")
    edit_mlmodel(directory, {"data": "../secret.ubj"}, "xgboost")
    assert "points outside the model directory" in refusal(directory)

    graph = copy_of("onnx", tmp_path)
    model = onnx.load(str(graph / "model.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "/etc/passwd"
    onnx.save(model, str(graph / "model.onnx"))
    assert "external data of tensor 'coefficient' '/etc/passwd' points outside" in refusal(graph)


def test_flavors_the_platform_cannot_run_are_refused_naming_them(tmp_path: Path) -> None:
    directory = copy_of("onnx", tmp_path)
    edit_mlmodel(directory, {"flavors": {"pytorch": {"model_data": "data"}, "python_function": {}}})
    message = refusal(directory)
    assert "no platform flavor runs MLflow flavor(s) pytorch" in message and "export it to ONNX" in message


def test_xgboosts_legacy_binary_format_is_refused(tmp_path: Path) -> None:
    directory = copy_of("xgboost", tmp_path)
    edit_mlmodel(directory, {"model_format": "xgb"}, "xgboost")
    assert "model_format='ubj'" in refusal(directory)


def test_a_lightgbm_skops_file_holding_other_types_is_refused_unopened(tmp_path: Path) -> None:
    directory = copy_of("lightgbm_sklearn", tmp_path)
    (directory / "model.skops").write_bytes(skops.io.dumps({"model": functools.partial(print, "ran")}))
    message = refusal(directory)
    assert "holds types outside lightgbm's own: builtins.print, functools.partial" in message
    # A model skops trusts anyway (scikit-learn's) is still not a LightGBM model.
    (directory / "model.skops").write_bytes(
        SkopsFlavor().save(LogisticRegression().fit([[0.0], [1.0]], [0, 1])).data
    )
    assert "holds a LogisticRegression, not a LightGBM model" in refusal(directory)


def test_a_directory_that_is_not_an_mlflow_model_is_refused(tmp_path: Path) -> None:
    assert "has no MLmodel file" in refusal(tmp_path)
    (tmp_path / "MLmodel").write_text("- just\n- a list\n")
    assert "not a YAML mapping" in refusal(tmp_path)
