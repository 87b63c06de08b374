"""MLflow model directories, read without MLflow: what ``mlops models import-mlflow`` (and
the SDK's ``import_mlflow``) register.

An MLflow model is a directory whose ``MLmodel`` file (YAML) lists the flavors it was saved
with and the files each one reads. The platform reads that file and those files, never
MLflow's code, and takes the model into the platform flavor that matches:

============================  ==========  ====================================================
MLflow flavor                 platform    what is read
============================  ==========  ====================================================
``onnx``                      ``onnx``    ``data`` (external weights inlined, from inside the
                                          directory only)
``xgboost``                   ``xgboost`` ``data`` in ``model_format`` ``ubj`` or ``json``
``lightgbm`` (a ``Booster``)  ``lightgbm`` ``data``: LightGBM's text format
``lightgbm`` (``LGBM*``)      ``lightgbm`` ``data``: a skops file of lightgbm's own classes, opened
                                          trusting those classes only; its booster is taken
``sklearn``                   ``skops``   ``pickled_model`` with ``serialization_format: skops``
                                          (MLflow 3's default)
============================  ==========  ====================================================

Everything that would need unpickling is refused, saying why and what to export instead: a
``python_function`` model with custom code (``python_model.pkl``, cloudpickled), scikit-learn
or LightGBM saved as pickle or cloudpickle, and flavors the platform has no runtime for
(``pytorch``, ``tensorflow``, ``transformers`` ...: export them to ONNX).

What the ``MLmodel`` file says is kept: its signature's column names (and text columns)
become the version's declared signature, its input example checks the model answers, and
its run id, model id and versions become tags and lineage.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from services.common.errors import InvalidArgument
from services.common.flavors.onnx import held_tensors
from services.common.flavors.signature import InputExample, SignatureReport, complete_signature
from services.common.proto.mlops.v1 import model_pb2, registry_pb2
from services.common.values import label_text

MLMODEL = "MLmodel"
MAX_MLMODEL_BYTES = 1024 * 1024
MAX_ONNX_BYTES = 2**31 - 1
"""A protobuf message cannot be larger: an ONNX model with more weights cannot be inlined."""
DIRECTORY_FIELD = "mlflow_dir"

LIGHTGBM_SKOPS_TYPES = frozenset(
    {
        "collections.OrderedDict",
        "lightgbm.basic.Booster",
        "lightgbm.sklearn.LGBMClassifier",
        "lightgbm.sklearn.LGBMRegressor",
    }
)
"""What a LightGBM scikit-learn model saved by MLflow with skops may hold (besides skops' own
safe defaults): lightgbm's classes, which rebuild a booster from its text model."""

_EXPORT_INSTEAD = (
    "export it to ONNX and log that (mlflow.onnx.log_model), or log it with its library's flavor: "
    "mlflow.sklearn (serialization_format='skops'), mlflow.xgboost, mlflow.lightgbm"
)
_VERSION_KEYS = {
    "sklearn_version": "scikit-learn",
    "xgb_version": "xgboost",
    "lgb_version": "lightgbm",
    "onnx_version": "onnx",
}


@dataclass(frozen=True)
class MlflowModel:
    """An MLflow model taken into a platform flavor: the artifact, and what MLmodel declared."""

    artifact_format: str
    data: bytes
    mlflow_flavor: str
    signature: model_pb2.Signature = field(default_factory=model_pb2.Signature)
    """What MLmodel's signature declares (feature names, text inputs), and classes a
    LightGBM wrapper stores; the rest is inferred from the artifact."""
    example: InputExample | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    package_versions: Mapping[str, str] = field(default_factory=dict)


def version_of(imported: MlflowModel, name: str) -> tuple[registry_pb2.VersionMetadata, SignatureReport]:
    """The version an import registers as model ``name``: the signature completed from what
    MLmodel declared, the artifact and the saved example, with MLflow's tags and versions."""
    report = complete_signature(
        imported.artifact_format, imported.data, declared=imported.signature, example=imported.example
    )
    described = registry_pb2.VersionMetadata(
        model_name=name,
        artifact=registry_pb2.Artifact(format=imported.artifact_format),
        signature=report.signature,
        tags=dict(imported.tags),
        lineage=model_pb2.Lineage(package_versions=imported.package_versions),
    )
    return described, report


def _refused(message: str) -> InvalidArgument:
    return InvalidArgument(f"{DIRECTORY_FIELD}: {message}", field=DIRECTORY_FIELD)


def read_mlflow_model(directory: Path) -> MlflowModel:
    """The MLflow model saved in ``directory``, taken into its platform flavor; refused with
    :class:`InvalidArgument` (field ``mlflow_dir``) saying why and what to export instead."""
    mlmodel = _mlmodel(directory)
    flavors = mlmodel.get("flavors")
    if not isinstance(flavors, dict) or not flavors:
        raise _refused(f"{MLMODEL} lists no flavors")
    for name, read in _READERS.items():
        config = flavors.get(name)
        if isinstance(config, dict):
            artifact_format, data, classes = read(directory, config)
            signature = _signature(mlmodel.get("signature"))
            signature.classes.extend(classes)
            return MlflowModel(
                artifact_format=artifact_format,
                data=data,
                mlflow_flavor=name,
                signature=signature,
                example=_example(directory, mlmodel.get("saved_input_example_info")),
                tags=_tags(mlmodel, name),
                package_versions=_versions(mlmodel, config),
            )
    raise _unsupported(flavors)


def _mlmodel(directory: Path) -> dict[str, Any]:
    path = directory / MLMODEL
    if not directory.is_dir():
        raise _refused(f"{directory} is not a directory")
    if not path.is_file():
        raise _refused(f"{directory} has no {MLMODEL} file: not an MLflow model directory")
    if path.stat().st_size > MAX_MLMODEL_BYTES:
        raise _refused(f"{MLMODEL} is over {MAX_MLMODEL_BYTES} bytes")
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise _refused(f"{MLMODEL} is not YAML: {exc}") from None
    if not isinstance(document, dict):
        raise _refused(f"{MLMODEL} is not a YAML mapping")
    return document


def _unsupported(flavors: Mapping[str, Any]) -> InvalidArgument:
    pyfunc = flavors.get("python_function")
    others = sorted(set(flavors) - {"python_function"})
    if (
        not others
        and isinstance(pyfunc, dict)
        and ("python_model" in pyfunc or "cloudpickle_version" in pyfunc)
    ):
        return _refused(
            "a python_function model with custom code: MLflow cloudpickled the Python object "
            f"({pyfunc.get('python_model', 'python_model.pkl')}), and the platform never unpickles what it "
            f"did not verify; {_EXPORT_INSTEAD}"
        )
    named = ", ".join(others) or "python_function only"
    return _refused(f"no platform flavor runs MLflow flavor(s) {named}; {_EXPORT_INSTEAD}")


def _file(directory: Path, relative: object, key: str) -> Path:
    """A file ``MLmodel`` names under ``key``: a path inside ``directory``, and a regular file."""
    if not isinstance(relative, str) or not relative:
        raise _refused(f"{MLMODEL} names no file under {key!r}")
    root = directory.resolve()
    path = (directory / relative).resolve()
    if not path.is_relative_to(root) or path == root:
        raise _refused(f"{key} {relative!r} points outside the model directory")
    if not path.is_file():
        raise _refused(f"{key} {relative!r} is not a file in the model directory")
    return path


def _serialization(config: Mapping[str, Any], flavor: str, file: Path, instead: str) -> None:
    how = str(config.get("serialization_format") or "")
    if how in ("pickle", "cloudpickle") or file.suffix == ".pkl":
        raise _refused(
            f"the {flavor} model is saved with {how or 'pickle'} ({file.name}), which the platform never "
            f"unpickles; {instead}"
        )


Read = tuple[str, bytes, tuple[str, ...]]


def _sklearn(directory: Path, config: Mapping[str, Any]) -> Read:
    file = _file(directory, config.get("pickled_model"), "pickled_model")
    _serialization(
        config, "sklearn", file, "log it again with serialization_format='skops' (MLflow 3's default)"
    )
    if config.get("serialization_format") != "skops":
        raise _refused(f"sklearn serialization_format {config.get('serialization_format')!r} is not skops")
    return "skops", file.read_bytes(), ()


def _xgboost(directory: Path, config: Mapping[str, Any]) -> Read:
    file = _file(directory, config.get("data"), "data")
    model_format = str(config.get("model_format") or file.suffix.lstrip("."))
    if model_format not in ("ubj", "json"):
        raise _refused(
            f"xgboost model_format {model_format!r}: the platform reads XGBoost's own ubj and json formats; "
            "log it again with mlflow.xgboost.log_model(..., model_format='ubj')"
        )
    return "xgboost", file.read_bytes(), ()


def _lightgbm(directory: Path, config: Mapping[str, Any]) -> Read:
    file = _file(directory, config.get("data"), "data")
    instead = "log the booster (mlflow.lightgbm.log_model(model.booster_)), which MLflow saves as text"
    _serialization(config, "lightgbm", file, instead)
    if file.suffix != ".skops":
        return "lightgbm", file.read_bytes(), ()
    import skops.io as sio  # imported on use, as the flavors do

    data = file.read_bytes()
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:
        raise _refused(f"{file.name} is not a skops file: {type(exc).__name__}: {exc}") from None
    outside = sorted(set(untrusted) - LIGHTGBM_SKOPS_TYPES)
    if outside:
        raise _refused(f"{file.name} holds types outside lightgbm's own: {', '.join(outside)}; {instead}")
    model = sio.loads(data, trusted=untrusted)
    if not type(model).__module__.startswith("lightgbm."):
        raise _refused(f"{file.name} holds a {type(model).__name__}, not a LightGBM model")
    booster = getattr(model, "booster_", None)
    if booster is None:
        raise _refused(f"{file.name} holds an unfitted {type(model).__name__}")
    fitted = getattr(model, "classes_", None)
    classes = (
        () if fitted is None else tuple(label_text(c.item() if hasattr(c, "item") else c) for c in fitted)
    )
    return "lightgbm", booster.model_to_string().encode(), classes


def _onnx(directory: Path, config: Mapping[str, Any]) -> Read:
    file = _file(directory, config.get("data"), "data")
    import onnx  # imported on use, as the flavors do
    from onnx.external_data_helper import (
        convert_model_from_external_data,
        load_external_data_for_model,
        uses_external_data,
    )

    try:
        model = onnx.load(str(file), load_external_data=False)
    except Exception as exc:
        raise _refused(f"{file.name} is not an ONNX model: {type(exc).__name__}: {exc}") from None
    external = [t for t in held_tensors(model) if uses_external_data(t)]
    for tensor in external:
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        _file(file.parent, location, f"external data of tensor {tensor.name!r}")
    if external:
        # The platform keeps an ONNX model as one self-contained file: inline the weights.
        load_external_data_for_model(model, str(file.parent))
        convert_model_from_external_data(model)
    if model.ByteSize() > MAX_ONNX_BYTES:
        raise _refused("the ONNX model is over 2 GB with its weights inlined, more than one file can hold")
    return "onnx", model.SerializeToString(), ()


_READERS = {"onnx": _onnx, "xgboost": _xgboost, "lightgbm": _lightgbm, "sklearn": _sklearn}
"""MLflow flavors the platform takes, in the order they are preferred when a model has several."""


def _signature(declared: object) -> model_pb2.Signature:
    """MLmodel's input schema as a declared signature: column names, and one tensor per
    column when some columns are text. A tensor-based schema names nothing."""
    signature = model_pb2.Signature()
    if not isinstance(declared, dict) or not isinstance(declared.get("inputs"), str):
        return signature
    try:
        columns = json.loads(declared["inputs"])
    except json.JSONDecodeError as exc:
        raise _refused(f"{MLMODEL} signature.inputs is not JSON: {exc}") from None
    if not isinstance(columns, list) or not all(isinstance(c, dict) and c.get("name") for c in columns):
        return signature
    names = [str(c["name"]) for c in columns]
    signature.feature_names.extend(names)
    if any(c.get("type") == "string" for c in columns):
        for column in columns:
            text = column.get("type") == "string"
            signature.inputs.add(name=str(column["name"]), datatype="BYTES" if text else "FP64", shape=[-1])
    return signature


def _example(directory: Path, info: object) -> InputExample | None:
    """MLflow's saved input example, when it is a data frame (``split`` orient) or an array."""
    if not isinstance(info, dict) or info.get("type") not in ("dataframe", "ndarray"):
        return None
    path = _file(directory, info.get("artifact_path"), "saved_input_example_info.artifact_path")
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _refused(f"{path.name} is not JSON: {exc}") from None
    if info["type"] == "dataframe" and isinstance(saved, dict) and {"columns", "data"} <= set(saved):
        names, rows = [str(c) for c in saved["columns"]], saved["data"]
    elif info["type"] == "ndarray" and isinstance(saved, dict) and isinstance(saved.get("inputs"), list):
        names, rows = [], saved["inputs"]
    else:
        return None
    text = {
        names[i]
        for i in range(len(names))
        if any(isinstance(row[i], str) for row in rows if len(row) == len(names))
    }
    cells = [[np.nan if v is None else v for v in row] for row in rows]
    try:
        matrix = np.array(cells, dtype=object if text else np.float64)
    except (TypeError, ValueError) as exc:
        raise _refused(f"{path.name} is not a table of rows: {exc}") from None
    if matrix.ndim != 2:
        return None
    return InputExample(matrix, tuple(names), frozenset(text))


def _tags(mlmodel: Mapping[str, Any], flavor: str) -> dict[str, str]:
    tags = {"source": "mlflow", "mlflow.flavor": flavor}
    for key in ("run_id", "model_uuid", "model_id", "mlflow_version", "utc_time_created"):
        value = mlmodel.get(key)
        if value:
            tags[f"mlflow.{key}"] = str(value)[:256]
    return tags


def _versions(mlmodel: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, str]:
    versions = {package: str(config[key]) for key, package in _VERSION_KEYS.items() if config.get(key)}
    if mlmodel.get("mlflow_version"):
        versions["mlflow"] = str(mlmodel["mlflow_version"])
    return versions
