"""The flavor interface: everything the platform does with one kind of model artifact.

A :class:`Flavor` is one artifact format. Its name is the format string a version stores
(``metadata.artifact.format``), and it knows how to

- **save** a model object to bytes (:meth:`Flavor.save`);
- **verify** bytes without running anything in them (:meth:`Flavor.verify`): what the
  registry runs on every upload before a version is stored;
- **load** verified bytes into a :class:`Runtime` (:meth:`Flavor.load`), after the SHA-256
  digest check, never unpickling anything it did not verify first;
- **infer a signature** from the bytes alone (:meth:`Flavor.infer_signature`): what the
  artifact says of its features, classes, task and tensors, and what it cannot say.

A :class:`Runtime` answers for feature matrices, the platform's convention: one row per
example, columns in the signature's ``feature_names`` order, numbers as float64 (and text
for categories, where the flavor takes text). Its surface is scikit-learn's
(``predict``, ``predict_proba``, ``classes_``, ``n_features_in_``), so whatever scores a
scikit-learn estimator (the trainer's gates) scores any runtime unchanged, and it gives
an :class:`~services.common.flavors.explain.Explainer` where the flavor can attribute a
row's answer to its features exactly.

This is MLServer's ``MLModel`` and KServe's ``Model`` cut to what the platform needs:
tensors, batching and transports stay in serving; the flavor owns bytes and models.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np

from services.common.artifacts import ArtifactError, sha256_hex, verify_digest
from services.common.flavors.explain import Explainer, Unexplainable
from services.common.proto.mlops.v1 import model_pb2, registry_pb2

Matrix = np.ndarray[Any, Any]
T = TypeVar("T")

SIGNATURE_HMAC_PARAM = "artifact.signature_hmac"
"""The version parameter holding a signed artifact's HMAC: the registry checks the HMAC on
upload but does not return ``metadata.signature_hmac``, and whoever loads the artifact
must check it again."""

_PICKLE_PROTOCOLS = range(2, 6)


def looks_like_pickle(data: bytes) -> bool:
    """Whether ``data`` starts as a Python pickle of protocol 2 or later does (``\\x80`` and
    the protocol number): what a model saved with ``pickle``/``joblib`` looks like.

    >>> import pickle
    >>> looks_like_pickle(pickle.dumps({"a": 1})), looks_like_pickle(b"tree\\nversion=v4")
    (True, False)
    """
    return len(data) > 2 and data[0] == 0x80 and data[1] in _PICKLE_PROTOCOLS


@dataclass(frozen=True)
class SavedArtifact:
    """What :meth:`Flavor.save` makes: the bytes and, for signed flavors, their HMAC."""

    data: bytes
    signature_hmac: str = ""

    @property
    def sha256(self) -> str:
        return sha256_hex(self.data)


@dataclass(frozen=True)
class StoredArtifact:
    """An artifact's bytes with what the registry stores beside them: the digest that
    addresses them, the version's signature and its parameters."""

    data: bytes
    sha256: str
    signature: model_pb2.Signature = field(default_factory=model_pb2.Signature)
    params: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, version: registry_pb2.ModelVersion, data: bytes) -> StoredArtifact:
        """A downloaded version's artifact."""
        return cls(data, version.artifact.sha256, version.signature, dict(version.params))

    @classmethod
    def unsigned(cls, data: bytes, signature: model_pb2.Signature | None = None) -> StoredArtifact:
        """Bytes held in hand (a test, a benchmark, a notebook): addressed by their own digest."""
        return cls(data, sha256_hex(data), signature or model_pb2.Signature())

    @property
    def signature_hmac(self) -> str:
        return self.params.get(SIGNATURE_HMAC_PARAM, "")


@dataclass(frozen=True)
class InferredSignature:
    """What an artifact says about itself. Empty fields are unknown; ``unknown`` says, in
    words, what could not be inferred and why, so a caller can ask for it instead."""

    task: model_pb2.Task.ValueType = model_pb2.TASK_UNSPECIFIED
    n_features: int | None = None
    feature_names: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    inputs: tuple[model_pb2.TensorSpec, ...] = ()
    """The model's own input tensors, when it has named ones (ONNX graphs)."""
    outputs: tuple[model_pb2.TensorSpec, ...] = ()
    unknown: tuple[str, ...] = ()

    def to_proto(self) -> model_pb2.Signature:
        """The platform signature for what is known: one ``features`` FP64 ``[-1, n]``
        input, and the outputs serving gives for the task."""
        signature = model_pb2.Signature(
            feature_names=self.feature_names, classes=self.classes, task=self.task
        )
        width = self.n_features or len(self.feature_names)
        if width:
            signature.inputs.add(name="features", datatype="FP64", shape=[-1, width])
        if self.task == model_pb2.TASK_REGRESSION:
            signature.outputs.add(name="value", datatype="FP64", shape=[-1])
        elif self.task == model_pb2.TASK_CLASSIFICATION:
            if self.classes:
                signature.outputs.add(name="probabilities", datatype="FP64", shape=[-1, len(self.classes)])
            signature.outputs.add(name="label", datatype="BYTES", shape=[-1])
        return signature


def described(runtime: Runtime, feature_names: Sequence[str], model: str) -> InferredSignature:
    """What ``runtime`` says of itself, as an inferred signature; ``model`` names it in the notes."""
    unknown = [] if feature_names else [f"feature names: {model} was fitted on an unnamed matrix"]
    classes = () if runtime.classes_ is None else tuple(str(c) for c in runtime.classes_)
    if classes and runtime.positional_classes:
        unknown.append(f"class names: {model} knows {len(classes)} classes by position only")
    return InferredSignature(
        task=runtime.task,
        n_features=runtime.n_features_in_,
        feature_names=tuple(feature_names),
        classes=classes,
        unknown=tuple(unknown),
    )


class Runtime(ABC):
    """A loaded model answering for feature matrices (see the module docstring).

    Attributes use scikit-learn's names where scikit-learn has one. Subclasses set them
    in their constructor.
    """

    flavor: str
    """The flavor that loaded it."""
    family: str
    """What the model is (a pipeline's final estimator class, ``Booster(binary:logistic)`` ...),
    for messages and logs."""
    task: model_pb2.Task.ValueType = model_pb2.TASK_UNSPECIFIED
    """What the artifact says the model does; unspecified when it cannot tell."""
    n_features_in_: int | None = None
    """The width of the matrices it takes, when the artifact says."""
    classes_: Matrix | None = None
    """A classifier's classes as canonical label text, in the order of the probability
    columns; None when the artifact does not say how many."""
    positional_classes: bool = False
    """True when the artifact knows only how many classes there are (``"0"``, ``"1"`` ... are
    positions), so a signature may name them; False when it stores the labels themselves."""
    accepts_text: bool = False
    """Whether matrices may carry category text (object dtype), or numbers only."""

    @property
    def has_proba(self) -> bool:
        """Whether :meth:`predict_proba` gives class probabilities."""
        return False

    @abstractmethod
    def predict(self, matrix: Matrix) -> Matrix:
        """Labels (classifiers) or values (regressors), one per row."""

    def predict_proba(self, matrix: Matrix) -> Matrix:
        """``[rows, classes]`` probabilities, columns in ``classes_`` order."""
        raise NotImplementedError(f"{self.family} gives no class probabilities")

    def explainer(self) -> Explainer:
        """Per-row feature contributions, or :class:`Unexplainable` saying why not.

        Cheap: structural checks only; anything costly is built on the first explanation.
        """
        raise Unexplainable(f"{self.flavor} models have no exact per-row attribution here")


class Flavor(ABC):
    """One artifact format and what the platform does with it (see the module docstring).

    Subclasses set :attr:`modules` (or override :meth:`handles`) and implement :meth:`save`,
    :meth:`check`, :meth:`open` and :meth:`describe`; the public :meth:`verify`, :meth:`load` and :meth:`infer_signature`
    wrap them so that the digest is always checked first and whatever a library raises on
    bad bytes comes out as :class:`ArtifactError` naming the flavor.
    """

    name: ClassVar[str]
    """The artifact format string versions store (``skops``, ``xgboost`` ...)."""
    platform: ClassVar[str]
    """What runs the model, as the Open Inference Protocol's ``ModelMetadata.platform`` says."""
    packages: ClassVar[tuple[str, ...]]
    """The PyPI packages whose versions decide what the model computes (lineage records them)."""
    signed: ClassVar[bool] = False
    """Whether artifacts need the platform's HMAC: formats that could run code when loaded."""
    saved_as: ClassVar[str]
    """What the bytes are, and how to make them, for error messages."""

    modules: ClassVar[tuple[str, ...]] = ()
    """Module prefixes of the model objects :meth:`save` takes (``("xgboost.",)``)."""

    def handles(self, model: object) -> bool:
        """Whether :meth:`save` takes ``model`` (checked without importing the flavor's library)."""
        return bool(self.modules) and type(model).__module__.startswith(self.modules)

    @abstractmethod
    def save(self, model: Any, *, signing_key: bytes | None = None) -> SavedArtifact:
        """``model`` as this flavor's bytes (signed when :attr:`signed`)."""

    @abstractmethod
    def check(self, data: bytes, *, signature_hmac: str, signing_key: bytes | None) -> None:
        """Raise if ``data`` is not a loadable artifact of this flavor; run nothing in it."""

    @abstractmethod
    def open(self, artifact: StoredArtifact, *, signing_key: bytes | None) -> Runtime:
        """The runtime of digest-checked bytes; verifies what :meth:`check` does before it
        builds anything."""

    @abstractmethod
    def describe(self, data: bytes) -> InferredSignature:
        """What the bytes say of their signature, checking them as :meth:`check` does on the way
        (signed flavors infer nothing: they would have to unpickle)."""

    def verify(self, data: bytes, *, signature_hmac: str = "", signing_key: bytes | None = None) -> None:
        """Raise :class:`ArtifactError` naming the problem unless ``data`` is a loadable
        artifact of this flavor. Nothing in the bytes is run."""
        self._guarded(lambda: self.check(data, signature_hmac=signature_hmac, signing_key=signing_key), data)

    def load(self, artifact: StoredArtifact, *, signing_key: bytes | None = None) -> Runtime:
        """The artifact's runtime, after its digest and the flavor's checks; else :class:`ArtifactError`."""
        verify_digest(artifact.data, artifact.sha256)
        return self._guarded(lambda: self.open(artifact, signing_key=signing_key), artifact.data)

    def infer_signature(self, data: bytes) -> InferredSignature:
        """What ``data`` says of its signature; refused as by :meth:`verify` when it is not
        a loadable artifact of this flavor."""
        return self._guarded(lambda: self.describe(data), data)

    def _guarded(self, call: Callable[[], T], data: bytes) -> T:
        if not self.signed and looks_like_pickle(data):
            raise ArtifactError(
                f"{self.name} artifact refused: the bytes are a Python pickle, which the platform never "
                f"loads; save it as {self.saved_as}"
            )
        try:
            return call()
        except ArtifactError:
            raise
        except Exception as exc:  # libraries raise anything on bad bytes: say which flavor refused
            detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            raise ArtifactError(
                f"not a loadable {self.name} artifact, which is {self.saved_as}: {type(exc).__name__}"
                + (f": {detail}" if detail else "")
            ) from None
