"""The synchronous client: the platform's gRPC clients, driven from a private event loop.

Notebooks already run an event loop in their main thread, so a synchronous client cannot
call ``asyncio.run`` there. :class:`Client` runs its own loop in a background thread, opens
the platform's async clients on it (registry, runs, serving), and waits for each call's
answer; the same code works in a notebook, a script or a test.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import numpy as np

from services.cli.stack_security import platform_tls
from services.cli.stack_state import running_stack
from services.common.artifacts import ArtifactError
from services.common.clients.inference import InferenceClient
from services.common.clients.registry import RegistryClient
from services.common.clients.runs import RunClient
from services.common.errors import InvalidArgument, Unauthenticated, Unavailable
from services.common.flavors import flavor_of
from services.common.flavors.mlflow_model import read_mlflow_model, version_of
from services.common.flavors.signature import InputExample, SignatureReport, complete_signature, task_named
from services.common.proto.mlops.v1 import model_pb2, registry_pb2, runs_pb2

T = TypeVar("T")

SUFFIX_FORMATS = {".onnx": "onnx", ".skops": "skops", ".ubj": "xgboost"}
"""Artifact files whose flavor their name says; any other file needs ``artifact_format``."""


@dataclass(frozen=True)
class Registered:
    """A version just registered, and where its signature came from."""

    version: registry_pb2.ModelVersion
    signature: SignatureReport

    @property
    def number(self) -> int:
        return self.version.version

    @property
    def not_inferred(self) -> tuple[str, ...]:
        """What neither the artifact nor the example said (and the default taken for it)."""
        return self.signature.not_inferred


class Client:
    """The platform from Python, synchronously (see the README for an example).

    Addresses and token: the arguments, else ``MLOPS_REGISTRY_ADDRESS``,
    ``MLOPS_SERVING_ADDRESS`` and ``MLOPS_TOKEN``, else the local stack ``mlops up`` runs
    (from ``MLOPS_STACK_DIR``, default ``.mlops``), else the default ports. TLS with
    ``MLOPS_TLS`` and ``MLOPS_TLS_CA_FILE``, or the local stack's CA when it runs with TLS.
    Calls raise the platform's errors (:mod:`services.common.errors`): ``NotFound``,
    ``InvalidArgument`` naming the field, ``PermissionDenied`` ...
    """

    def __init__(
        self,
        registry: str | None = None,
        serving: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
    ):
        stack = running_stack(Path(os.environ.get("MLOPS_STACK_DIR") or ".mlops"))
        registry = registry or os.environ.get("MLOPS_REGISTRY_ADDRESS")
        serving = serving or os.environ.get("MLOPS_SERVING_ADDRESS")
        explicit = token or os.environ.get("MLOPS_TOKEN") or ""
        if not explicit and stack is None:
            raise Unauthenticated(
                "no token: pass token=, set MLOPS_TOKEN, or start a local stack with `mlops up`"
            )
        # The local stack's admin token expires within the hour: ask the stack for one per
        # call (it mints a new one when the saved one is close to expiring).
        bearer: Callable[[], str] = (lambda: explicit) if explicit or stack is None else stack.admin_token
        ports = stack.ports if stack else None
        registry = registry or f"127.0.0.1:{ports.registry_grpc if ports else 50051}"
        serving = serving or f"127.0.0.1:{ports.serving_grpc if ports else 8001}"
        tls = platform_tls(stack.ca if stack else "")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mlops-sdk", daemon=True)
        self._thread.start()

        async def open_clients() -> tuple[RegistryClient, RunClient, InferenceClient]:
            # gRPC channels belong to the loop they are made on: make them on ours.
            return (
                RegistryClient(registry, bearer, timeout=timeout, tls=tls),
                RunClient(registry, bearer, timeout=timeout, tls=tls),
                InferenceClient(serving, bearer, timeout=timeout, tls=tls),
            )

        self._registry, self._runs, self._serving = self._call(open_clients())

    def _call(self, call: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(call, self._loop).result()

    def close(self) -> None:
        """Close the channels and stop the client's loop."""
        if not self._loop.is_running():
            return

        async def close_all() -> None:
            for client in (self._registry, self._runs, self._serving):
                await client.close()

        self._call(close_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------- registering

    def register(
        self,
        name: str,
        model: Any,
        *,
        artifact_format: str = "",
        input_example: Any = None,
        feature_names: Sequence[str] = (),
        task: str = "",
        classes: Sequence[str] = (),
        description: str = "",
        tags: Mapping[str, str] | None = None,
        team: str = "",
    ) -> Registered:
        """Register ``model`` as a new version of ``name`` (the model too, if it is new, in
        ``team``: by default the token's only team, else the default team).

        ``model`` is a fitted model object (a scikit-learn estimator, an XGBoost or LightGBM
        model, an ONNX ``ModelProto``: the flavor that saves it does) or the path of an
        artifact file (``.onnx``, ``.skops``, ``.ubj``, or any file with ``artifact_format``).
        The signature is completed from the artifact and ``input_example`` (a numpy matrix, a
        data frame whose columns name the features, or a ``.csv``/``.npy`` file), after what
        ``feature_names``, ``task`` and ``classes`` declare; the model must answer the example.
        """
        artifact_format, data = _artifact(model, artifact_format)
        declared = model_pb2.Signature(feature_names=list(feature_names), classes=list(classes))
        if task:
            declared.task = task_named(task)
        report = complete_signature(artifact_format, data, declared=declared, example=_example(input_example))
        described = registry_pb2.VersionMetadata(
            model_name=name,
            artifact=registry_pb2.Artifact(format=artifact_format),
            signature=report.signature,
            tags=dict(tags or {}),
        )
        return Registered(self._create(name, description, described, data, team), report)

    def import_mlflow(
        self,
        directory: str | Path,
        name: str,
        *,
        task: str = "",
        classes: Sequence[str] = (),
        team: str = "",
    ) -> Registered:
        """Register an MLflow model directory as a new version of ``name`` (as
        ``mlops models import-mlflow`` does: no MLflow code runs, pickles are refused)."""
        imported = read_mlflow_model(Path(directory))
        if task:
            imported.signature.task = task_named(task)
        if classes:
            del imported.signature.classes[:]
            imported.signature.classes.extend(classes)
        described, report = version_of(imported, name)
        return Registered(self._create(name, "Imported from MLflow.", described, imported.data, team), report)

    def _create(
        self, name: str, description: str, described: registry_pb2.VersionMetadata, data: bytes, team: str
    ) -> registry_pb2.ModelVersion:
        async def create() -> registry_pb2.ModelVersion:
            await self._registry.create_model(name, description, exist_ok=True, team=team)
            return await self._registry.create_version(described, data)

        return self._call(create())

    def set_alias(self, name: str, alias: str, version: int, *, reason: str = "") -> registry_pb2.Model:
        """Point ``alias`` (production, staging ...) at ``version``; the model after the move."""
        return self._call(self._registry.set_alias(name, alias, version, 0, reason))

    def wait_until_served(self, name: str, version: int = 0, *, timeout: float = 60.0) -> None:
        """Return once serving has ``version`` of ``name`` loaded (its default route when 0).

        Serving swaps a version in when it hears of the alias move, a moment after
        :meth:`set_alias` returns; :class:`Unavailable` if it has not after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while not self._call(self._serving.ready(name, str(version or ""))):
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"serving has not loaded {name!r} version {version or '(default)'} in {timeout:g}s"
                )
            time.sleep(0.2)

    # ---------------------------------------------------------------------- reading

    def version(self, name: str, version: int = 0, alias: str = "") -> registry_pb2.ModelVersion:
        """A version by number, or by alias (production when neither is given)."""
        return self._call(
            self._registry.get_version(name, version, alias or ("" if version else "production"))
        )

    def lineage(self, name: str, version: int = 0, alias: str = "") -> registry_pb2.LineageResponse:
        """What produced a version (production when neither is given) and what it produced."""
        return self._call(self._registry.lineage(name, version, alias or ("" if version else "production")))

    def runs(self, model: str = "", *, state: str = "", limit: int = 100) -> list[runs_pb2.Run]:
        """Training runs, newest first: of one model, in one state (running, registered,
        gates_failed, failed) when given."""
        wanted = (
            runs_pb2.RunState.Value(f"RUN_STATE_{state.upper()}") if state else runs_pb2.RUN_STATE_UNSPECIFIED
        )
        return self._call(self._runs.list_runs(model, state=wanted, limit=limit))

    def run(self, run_id: str) -> runs_pb2.Run:
        """One run, by the train request id that opened it (or one coalesced into it)."""
        return self._call(self._runs.get_run(run_id))

    # ------------------------------------------------------------------- predicting

    def predict(self, name: str, rows: Any, *, version: int = 0, alias: str = "") -> np.ndarray[Any, Any]:
        """Labels (classifiers) or values (regressors) for ``rows``, a ``[rows, features]``
        matrix of numbers in the signature's feature order, as serving answers them."""
        outputs = self._infer(name, rows, version, alias)
        return outputs["label"] if "label" in outputs else outputs["value"]

    def predict_proba(
        self, name: str, rows: Any, *, version: int = 0, alias: str = ""
    ) -> np.ndarray[Any, Any]:
        """Class probabilities for ``rows`` (``[rows, classes]``, in the signature's class order)."""
        outputs = self._infer(name, rows, version, alias)
        if "probabilities" not in outputs:
            raise InvalidArgument(f"model {name!r} gives no class probabilities", field="model_name")
        return outputs["probabilities"]

    def _infer(self, name: str, rows: Any, version: int, alias: str) -> dict[str, np.ndarray[Any, Any]]:
        matrix = np.asarray(rows.to_numpy() if hasattr(rows, "to_numpy") else rows, dtype=np.float64)
        if matrix.ndim == 1:
            matrix = matrix.reshape(1, -1)
        answer = self._call(self._serving.infer(name, matrix, version=str(version or ""), alias=alias))
        return answer.outputs


def _artifact(model: Any, artifact_format: str) -> tuple[str, bytes]:
    """``(format, bytes)`` of a model object (saved by its flavor) or an artifact file."""
    if isinstance(model, str | Path):
        path = Path(model)
        chosen = artifact_format or SUFFIX_FORMATS.get(path.suffix.lower(), "")
        if not chosen:
            raise InvalidArgument(
                f"artifact_format: {path.name} does not say its flavor; name it (skops, xgboost, lightgbm, onnx)",
                field="artifact_format",
            )
        return chosen, path.read_bytes()
    try:
        saving = flavor_of(model)
    except ArtifactError as exc:
        raise InvalidArgument(f"model: {exc}", field="model") from None
    return saving.name, saving.save(model).data


def _example(rows: Any) -> InputExample | None:
    if rows is None:
        return None
    if isinstance(rows, str | Path):
        path = Path(rows)
        return InputExample.parse(path.read_bytes(), path.name)
    return InputExample.of(rows)
